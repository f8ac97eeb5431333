//! Dead-letter tooling: list, show, replay and purge the letters in the
//! dead-letter stream (what `signup dlq` runs).
//!
//! Replaying republishes a letter to its original subject with its original
//! headers — the same `ce-id`, so handlers recognise what they already
//! applied — plus `x-replay-of-seq`, so it takes effect where it first stood
//! in the stream's order. Its `Nats-Msg-Id` is `replay:<dlq stream>:<letter
//! sequence>`: replaying the same letter twice within the duplicate window
//! stores it once.
//!
//! Erasure wins over dead letters: a letter that holds personal data of a
//! prospect erased since is shown without its payload and is never replayed
//! (replaying removes it instead). Erasure itself purges such letters; this
//! covers one made in the moment between.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream::Stream};
use bytes::Bytes;
use messages::{cloudevents as ce, dlq};

use crate::settings::StreamSettings;
use crate::stream::dlq_stream_name;

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream (what the commands take).
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: String,
    /// The handler that gave up on it.
    pub consumer: String,
    /// Why.
    pub reason: String,
    /// How many times it had been delivered.
    pub deliveries: String,
    /// Its sequence in the event stream.
    pub stream_sequence: String,
    /// The subject it was published on.
    pub original_subject: String,
    /// `ce-id`, if it had one.
    pub event_id: String,
    /// `ce-type`, if it had one.
    pub event_type: String,
    /// The original headers, with the dead-letter ones.
    pub headers: HeaderMap,
    /// The original payload (empty when withheld).
    pub payload: Bytes,
    /// The payload is withheld: it holds personal data of a prospect that
    /// has been erased.
    pub withheld: bool,
}

impl DeadLetter {
    fn from_stream(message: jetstream::message::StreamMessage) -> Self {
        let get = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        Self {
            sequence: message.sequence,
            time: message.time.to_string(),
            consumer: get(dlq::CONSUMER),
            reason: get(dlq::REASON),
            deliveries: get(dlq::DELIVERIES),
            stream_sequence: get(dlq::STREAM_SEQ),
            original_subject: get(dlq::SUBJECT),
            event_id: get(ce::ID),
            event_type: get(ce::TYPE),
            headers: message.headers,
            payload: message.payload,
            withheld: false,
        }
    }
}

/// What a replay did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The letter's sequence.
    pub sequence: u64,
    /// Where it went.
    pub subject: String,
    /// Its sequence in the event stream, `None` in a dry run or when the
    /// server recognised a repeated replay.
    pub new_stream_sequence: Option<u64>,
}

/// The dead-letter stream of an event stream.
pub struct DeadLetters {
    js: jetstream::Context,
    name: String,
    events: String,
}

impl DeadLetters {
    /// The dead letters of the event stream described by `events`.
    pub fn new(client: async_nats::Client, events: &StreamSettings) -> Self {
        Self { js: jetstream::new(client), name: dlq_stream_name(events), events: events.name.clone() }
    }

    async fn stream(&self) -> anyhow::Result<Option<Stream>> {
        use jetstream::context::GetStreamErrorKind;
        match self.js.get_stream(&self.name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(error)
                if matches!(error.kind(), GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Up to `limit` letters, oldest first.
    pub async fn list(&self, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let Some(mut stream) = self.stream().await? else { return Ok(Vec::new()) };
        let (count, first, last) = {
            let state = &stream.info().await?.state;
            (state.messages, state.first_sequence, state.last_sequence)
        };
        let mut letters = Vec::new();
        if count == 0 {
            return Ok(letters);
        }
        for sequence in first..=last {
            if letters.len() >= limit {
                break;
            }
            // Purged letters leave gaps.
            if let Ok(message) = stream.get_raw_message(sequence).await {
                letters.push(DeadLetter::from_stream(message));
            }
        }
        Ok(letters)
    }

    /// The sequences of every letter.
    pub async fn all_sequences(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.list(usize::MAX).await?.into_iter().map(|l| l.sequence).collect())
    }

    /// One letter; its payload withheld when its prospect has been erased.
    pub async fn get(&self, sequence: u64) -> anyhow::Result<DeadLetter> {
        let stream = self.stream().await?.ok_or_else(|| anyhow::anyhow!("there are no dead letters"))?;
        let message =
            stream.get_raw_message(sequence).await.map_err(|e| anyhow::anyhow!("no dead letter {sequence}: {e}"))?;
        let mut letter = DeadLetter::from_stream(message);
        let subject = letter.original_subject.as_str();
        if let Some(prospect) = messages::streams::prospect_of(subject)
            && messages::streams::carries_personal_data(subject)
            && crate::erasure::is_erased(&self.js, &self.events, prospect).await?
        {
            letter.payload = Bytes::new();
            letter.withheld = true;
        }
        Ok(letter)
    }

    /// Republishes a letter to its original subject and, unless `dry_run`,
    /// removes it from the dead-letter stream once the event stream stored it.
    pub async fn replay(&self, sequence: u64, dry_run: bool) -> anyhow::Result<Replayed> {
        let letter = self.get(sequence).await?;
        if letter.withheld {
            if !dry_run {
                self.delete(sequence).await?;
            }
            anyhow::bail!(
                "dead letter {sequence} belongs to an erased prospect: not replayed{}",
                if dry_run { "" } else { ", removed" }
            );
        }
        anyhow::ensure!(!letter.original_subject.is_empty(), "dead letter {sequence} does not say where it came from");
        let mut headers = HeaderMap::new();
        for (name, values) in letter.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("x-dlq-") || name == ce::NATS_MSG_ID {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        if !letter.stream_sequence.is_empty() {
            headers.insert(dlq::REPLAY_OF_SEQ, letter.stream_sequence.as_str());
        }
        let dedupe = if letter.event_id.is_empty() {
            format!("replay:dlq:{sequence}")
        } else {
            format!("replay:{}", letter.event_id)
        };
        headers.insert(ce::NATS_MSG_ID, dedupe.as_str());
        if dry_run {
            return Ok(Replayed { sequence, subject: letter.original_subject, new_stream_sequence: None });
        }
        let publish = PublishMessage::build().headers(headers).payload(letter.payload.clone());
        let ack = self.js.send_publish(letter.original_subject.clone(), publish).await?.await?;
        self.delete(sequence).await?;
        Ok(Replayed {
            sequence,
            subject: letter.original_subject,
            new_stream_sequence: (!ack.duplicate).then_some(ack.sequence),
        })
    }

    /// Removes a letter, unless `dry_run`; returns whether it existed.
    pub async fn purge(&self, sequence: u64, dry_run: bool) -> anyhow::Result<bool> {
        let exists = self.get(sequence).await.is_ok();
        if exists && !dry_run {
            self.delete(sequence).await?;
        }
        Ok(exists)
    }

    async fn delete(&self, sequence: u64) -> anyhow::Result<()> {
        let stream = self.stream().await?.ok_or_else(|| anyhow::anyhow!("there are no dead letters"))?;
        stream.delete_message(sequence).await.map_err(|e| anyhow::anyhow!("removing dead letter {sequence}: {e}"))?;
        Ok(())
    }
}
