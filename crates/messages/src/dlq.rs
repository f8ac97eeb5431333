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
