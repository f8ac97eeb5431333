//! Dead-letter tooling: list, show, replay and purge the letters in the
//! dead-letter stream (what `signup dlq` runs).
//!
//! A letter is only a pointer: any handler may write letters under its own
//! name, so replay trusts none of what a letter says. It replays a letter
//! only when the letter's subject names the handler its `x-dlq-consumer`
//! header names, its `x-dlq-subject` is an event subject of the stream, and
//! the stream still holds, at the letter's `x-dlq-stream-seq`, that very
//! event (same subject, same `ce-id`). It then republishes the event as the
//! stream holds it — its payload and headers, not the letter's — with the
//! same `ce-id` (handlers recognise what they already applied) and
//! `x-replay-of-seq` (it takes effect where it first stood in the stream's
//! order). A refused letter is reported and kept.
//!
//! The replay's `Nats-Msg-Id` is `replay:<dlq stream>:<letter sequence>`,
//! unique per letter: replaying one letter twice within the duplicate window
//! stores it once, while a letter made when the replayed event failed again
//! is a new letter and is stored again. A letter is removed only after its
//! event was stored (or recognised as stored by that same letter's replay).
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
    /// The letter's own subject, `dlq.prospect.<consumer>.…`.
    pub subject: String,
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
            subject: message.subject.to_string(),
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

    /// Republishes the event a letter points at and, unless `dry_run`,
    /// removes the letter once the event stream stored it. Refuses (and keeps)
    /// a letter that does not point at an event the stream holds (see the
    /// module docs).
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
        let (stream_sequence, original) = self
            .original(&letter)
            .await
            .map_err(|reason| anyhow::anyhow!("dead letter {sequence} refused, kept: {reason}"))?;
        let mut headers = HeaderMap::new();
        for (name, values) in original.headers.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("x-dlq-") || name == ce::NATS_MSG_ID || name == dlq::REPLAY_OF_SEQ {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        headers.insert(dlq::REPLAY_OF_SEQ, stream_sequence.to_string().as_str());
        headers.insert(ce::NATS_MSG_ID, format!("replay:{}:{sequence}", self.name).as_str());
        let subject = original.subject.to_string();
        if dry_run {
            return Ok(Replayed { sequence, subject, new_stream_sequence: None });
        }
        let publish = PublishMessage::build().headers(headers).payload(original.payload.clone());
        let ack = self.js.send_publish(subject.clone(), publish).await?.await?;
        // Stored now, or (a duplicate of this very letter's id) by an earlier
        // replay of it: either way the event is in the stream.
        self.delete(sequence).await?;
        Ok(Replayed { sequence, subject, new_stream_sequence: (!ack.duplicate).then_some(ack.sequence) })
    }

    /// The event a letter points at, as the event stream holds it, with its
    /// sequence; or why the letter cannot be trusted.
    async fn original(&self, letter: &DeadLetter) -> Result<(u64, jetstream::message::StreamMessage), String> {
        let consumer = dlq::consumer_of(&letter.subject);
        if consumer != Some(letter.consumer.as_str()) || letter.consumer.is_empty() {
            return Err(format!(
                "its {} header ({:?}) is not the handler of its subject {}",
                dlq::CONSUMER,
                letter.consumer,
                letter.subject
            ));
        }
        let kind = letter.original_subject.rsplit('.').next().unwrap_or_default();
        if messages::streams::prospect_of(&letter.original_subject).is_none()
            || !messages::streams::KINDS.contains(&kind)
        {
            return Err(format!("{:?} is not an event subject of the stream", letter.original_subject));
        }
        if letter.event_id.parse::<uuid::Uuid>().is_err() {
            return Err(format!("its {} header ({:?}) names no event", ce::ID, letter.event_id));
        }
        let stream_sequence: u64 = letter
            .stream_sequence
            .parse()
            .map_err(|_| format!("its {} header ({:?}) is not a sequence", dlq::STREAM_SEQ, letter.stream_sequence))?;
        let events =
            self.js.get_stream(&self.events).await.map_err(|e| format!("cannot read the event stream: {e}"))?;
        let original = events.get_raw_message(stream_sequence).await.map_err(|_| {
            format!("the event stream no longer holds sequence {stream_sequence} (expired, purged or never there)")
        })?;
        let original_id = original.headers.get(ce::ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
        if original.subject.as_str() != letter.original_subject || original_id != letter.event_id {
            return Err(format!(
                "the event stream holds another event at sequence {stream_sequence} ({} {original_id})",
                original.subject
            ));
        }
        Ok((stream_sequence, original))
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
