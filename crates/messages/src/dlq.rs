//! Dead letters: events a handler could not apply, kept in the
//! [`DLQ_STREAM`](crate::streams::DLQ_STREAM) with the original payload and
//! headers plus the headers below.

/// Why the event was dead-lettered (the handler's last error, or why it
/// could not be decoded).
pub const REASON: &str = "x-dlq-reason";
/// The durable consumer (handler) that gave up on it.
pub const CONSUMER: &str = "x-dlq-consumer";
/// How many times it had been delivered.
pub const DELIVERIES: &str = "x-dlq-deliveries";
/// Its sequence in the event stream.
pub const STREAM_SEQ: &str = "x-dlq-stream-seq";
/// The subject it was published on, to replay it there.
pub const SUBJECT: &str = "x-dlq-subject";
/// Set when a letter keeps no payload, saying why: the event was forged
/// (whatever its sender put there is not kept), or its handler has as many
/// letters as it may keep in full. Replay needs no payload: it republishes
/// the stream's own copy.
pub const PAYLOAD_WITHHELD: &str = "x-dlq-payload-withheld";
/// On a replayed event: the stream sequence of the original, so handlers
/// order it where it first stood rather than at the end of the stream.
pub const REPLAY_OF_SEQ: &str = "x-replay-of-seq";

/// The dead-letter subject for an event of `subject` given up by `consumer`:
/// `dlq.prospect.<consumer>.<prospect id>.<kind>` for an event subject of
/// the contract, so that an erasure can purge a prospect's letters;
/// `dlq.prospect.<consumer>.<last token>` for anything else.
pub fn subject(consumer: &str, subject: &str) -> String {
    if let Some(id) = crate::streams::prospect_of(subject) {
        let kind = subject.rsplit('.').next().unwrap_or("unknown");
        return format!("dlq.prospect.{consumer}.{id}.{kind}");
    }
    let kind = subject.rsplit('.').next().filter(|k| !k.is_empty()).unwrap_or("unknown");
    format!("dlq.prospect.{consumer}.{kind}")
}

/// The handler a dead letter's subject names (`dlq.prospect.<consumer>.…`):
/// the only one whose NATS user may publish there, so the one to believe,
/// whatever the letter's headers say.
pub fn consumer_of(letter_subject: &str) -> Option<&str> {
    letter_subject.strip_prefix("dlq.prospect.")?.split('.').next().filter(|c| !c.is_empty())
}

/// A dead letter as a handler of the dead-letter stream receives it (the
/// dead-letter notifier): what the headers above say, and the original
/// event's type, id and payload. Its `Debug` leaves the payload out: it may
/// hold personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The handler that gave up on the event ([`CONSUMER`]).
    pub consumer: String,
    /// Why ([`REASON`]).
    pub reason: String,
    /// Deliveries before it gave up ([`DELIVERIES`]), as written.
    pub deliveries: String,
    /// The event's sequence in the event stream ([`STREAM_SEQ`]), as written.
    pub stream_sequence: String,
    /// The event's own subject ([`SUBJECT`]).
    pub subject: String,
    /// The event's `ce-id`.
    pub event_id: String,
    /// The event's `ce-type`.
    pub ce_type: String,
    /// The event's payload, as it was.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("consumer", &self.consumer)
            .field("reason", &self.reason)
            .field("event_id", &self.event_id)
            .field("ce_type", &self.ce_type)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl crate::EventSet for DeadLetter {
    const FILTER_SUBJECT: &'static str = crate::streams::DLQ_SUBJECTS;
    const DEAD_LETTERS: bool = true;

    /// A letter's subject is its handler's own (`dlq.prospect.<handler>.…`),
    /// not the event's: nothing to compare here.
    fn subject(&self) -> Option<String> {
        None
    }

    /// Never fails: a letter is worth reporting whatever it holds.
    fn decode(ce_type: &str, data: &[u8]) -> Result<Self, crate::DecodeError> {
        Ok(Self {
            consumer: "-".to_owned(),
            reason: "-".to_owned(),
            deliveries: "-".to_owned(),
            stream_sequence: "-".to_owned(),
            subject: "-".to_owned(),
            event_id: "-".to_owned(),
            ce_type: ce_type.to_owned(),
            payload: data.to_vec(),
        })
    }

    fn decode_message(
        ce_type: &str,
        data: &[u8],
        headers: &dyn crate::decode::Headers,
    ) -> Result<Self, crate::DecodeError> {
        let header = |name: &str| headers.get(name).unwrap_or("-").to_owned();
        Ok(Self {
            consumer: header(CONSUMER),
            reason: header(REASON),
            deliveries: header(DELIVERIES),
            stream_sequence: header(STREAM_SEQ),
            subject: header(SUBJECT),
            event_id: header(crate::cloudevents::ID),
            ..Self::decode(ce_type, data)?
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dead_letter_subjects_name_the_consumer_the_prospect_and_the_kind() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            super::subject("save-prospect", &format!("events.prospect.{id}.signedup")),
            format!("dlq.prospect.save-prospect.{id}.signedup")
        );
        assert_eq!(super::subject("save-prospect", "events.prospect.signedup"), "dlq.prospect.save-prospect.signedup");
        assert_eq!(super::subject("x", ""), "dlq.prospect.x.unknown");
    }
}
