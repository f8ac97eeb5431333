//! Where is a sign-up? The delivery ledger of one prospect: for each of its
//! events (sign-up, confirmations, updates, erasure) each handler's state,
//! read from what NATS already knows. Handlers write nothing extra.
//!
//! - The prospect's events are the event stream's messages on its own
//!   subjects (`events.prospect.<id>.*`), a replayed dead letter being a
//!   later copy of the same event (same `ce-id`, `x-replay-of-seq`).
//! - The handlers are the stream's durable consumers; a handler takes an
//!   event when its filter matches the event's subject.
//! - A handler's state for an event comes from its consumer: at or below
//!   the ack floor it is **applied** (at or before the floor last moved); up
//!   to the last delivered position it is **in flight** (delivered, not yet
//!   acked); past it, **pending**, with where the consumer is and how many
//!   events wait for it. A letter of that handler for that event in the
//!   dead-letter stream makes it **dead-lettered**, with the reason and the
//!   letter's number for `signup dlq replay`. An event older than a consumer
//!   that started at new events is **not delivered** to it.
//!
//! What the ledger cannot know: whether an event above the ack floor was
//! acked out of order, nor each in-flight event's own delivery count (the
//! server keeps those to itself); it reports the consumer's count of
//! redelivered messages instead.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, consumer, stream::Stream};
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use messages::{cloudevents as ce, dlq};
use serde::Serialize;
use uuid::Uuid;

use crate::settings::StreamSettings;
use crate::stream::dlq_stream_name;

/// The ledger of one prospect.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// The prospect.
    pub prospect_id: Uuid,
    /// Its events in stream order (erased personal events are gone).
    pub events: Vec<EventEntry>,
}

/// One event and where it stands with each handler.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEntry {
    /// Its first position in the event stream.
    pub stream_sequence: u64,
    /// Later copies of it (dead letters replayed), by position.
    pub replays: Vec<u64>,
    /// `ce-id`.
    pub event_id: String,
    /// `ce-type`.
    pub event_type: String,
    /// The last token of its subject (`signedup`, `confirmed`, …).
    pub kind: String,
    /// When it was stored.
    pub time: DateTime<Utc>,
    /// Each handler that takes it, by name.
    pub handlers: Vec<HandlerEntry>,
}

/// One handler's state for one event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerEntry {
    /// The handler (its durable consumer's name).
    pub handler: String,
    /// Where the event stands with it.
    #[serde(flatten)]
    pub state: State,
}

/// Where an event stands with a handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum State {
    /// Applied and acked, at or before `by` (when the consumer's ack floor
    /// last moved).
    #[serde(rename_all = "camelCase")]
    Applied {
        /// The latest it can have been applied.
        by: Option<DateTime<Utc>>,
    },
    /// Not yet delivered.
    #[serde(rename_all = "camelCase")]
    Pending {
        /// The last stream position delivered to the handler.
        handler_at: u64,
        /// How many events wait for the handler in all.
        waiting: u64,
    },
    /// Delivered, not yet acked.
    #[serde(rename_all = "camelCase")]
    InFlight {
        /// Messages of this handler acked by none yet.
        unacked: u64,
        /// Messages of this handler delivered more than once now.
        redelivered: u64,
    },
    /// Given up on, kept in the dead-letter stream.
    #[serde(rename_all = "camelCase")]
    DeadLettered {
        /// Why.
        reason: String,
        /// The letter's number (`signup dlq show/replay <letter>`).
        letter: u64,
        /// How many times it had been delivered.
        deliveries: u64,
    },
    /// Stored before the handler's consumer started (at new events).
    NotDelivered,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Applied { by: Some(by) } => write!(f, "applied        by {}", by.format("%Y-%m-%d %H:%M:%S%.3fZ")),
            Self::Applied { by: None } => write!(f, "applied"),
            Self::Pending { handler_at, waiting } => {
                write!(f, "pending        the handler is at #{handler_at}, {waiting} events wait for it")
            }
            Self::InFlight { unacked, redelivered } => write!(
                f,
                "in flight      delivered, not yet acked ({unacked} unacked, {redelivered} redelivered at this handler)"
            ),
            Self::DeadLettered { reason, letter, deliveries } => {
                write!(f, "dead-lettered  letter {letter} after {deliveries} deliveries: {reason}")
            }
            Self::NotDelivered => write!(f, "not delivered  stored before the handler started"),
        }
    }
}

impl Ledger {
    /// Reads the ledger of `prospect_id` from the event stream `events`, its
    /// consumers and its dead-letter stream.
    pub async fn read(js: &jetstream::Context, events: &StreamSettings, prospect_id: Uuid) -> anyhow::Result<Self> {
        let stream = js.get_stream(&events.name).await?;
        let copies = messages_on(&stream, &format!("events.prospect.{prospect_id}.*")).await?;
        let consumers: Vec<consumer::Info> = stream.consumers().try_collect().await?;
        let letters = match js.get_stream(dlq_stream_name(events)).await {
            Ok(dlq_stream) => messages_on(&dlq_stream, &format!("dlq.prospect.*.{prospect_id}.*")).await?,
            Err(_) => Vec::new(),
        };
        Ok(Self { prospect_id, events: entries(&copies, &consumers, &letters) })
    }

    /// The ledger as text, one block per event, one line per handler.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("prospect {}: {} events\n", self.prospect_id, self.events.len());
        for event in &self.events {
            let replays = match event.replays.as_slice() {
                [] => String::new(),
                copies => {
                    format!(" (replayed as #{})", copies.iter().map(u64::to_string).collect::<Vec<_>>().join(", #"))
                }
            };
            let _ = writeln!(
                out,
                "\n#{} {} {} ce-id {}{replays}",
                event.stream_sequence,
                event.time.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                event.event_type,
                event.event_id
            );
            for handler in &event.handlers {
                let _ = writeln!(out, "  {:<22} {}", handler.handler, handler.state);
            }
        }
        out
    }
}

/// A message of a stream, as the ledger needs it.
struct Stored {
    sequence: u64,
    subject: String,
    time: DateTime<Utc>,
    headers: async_nats::HeaderMap,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// Every message of `stream` on `filter`, in order.
async fn messages_on(stream: &Stream, filter: &str) -> anyhow::Result<Vec<Stored>> {
    use jetstream::stream::RawMessageErrorKind;
    let mut found = Vec::new();
    let mut next = 1;
    loop {
        let message = match stream.raw_message_builder().sequence(next).next_by_subject(filter.to_owned()).send().await
        {
            Ok(message) => message,
            Err(error) if matches!(error.kind(), RawMessageErrorKind::NoMessageFound) => break,
            Err(error) => return Err(error.into()),
        };
        next = message.sequence + 1;
        found.push(Stored {
            sequence: message.sequence,
            subject: message.subject.to_string(),
            time: DateTime::from_timestamp_nanos(
                i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default(),
            ),
            headers: message.headers,
        });
    }
    Ok(found)
}

/// The ledger's entries from the prospect's stored events, the stream's
/// consumers and the prospect's dead letters.
fn entries(copies: &[Stored], consumers: &[consumer::Info], letters: &[Stored]) -> Vec<EventEntry> {
    // Events by their first position; replays are later copies.
    let mut events: BTreeMap<u64, (&Stored, Vec<u64>)> = BTreeMap::new();
    let mut first_of: BTreeMap<&str, u64> = BTreeMap::new();
    for copy in copies {
        let id = copy.header(ce::ID).unwrap_or_default();
        let original = copy
            .header(dlq::REPLAY_OF_SEQ)
            .and_then(|s| s.parse().ok())
            .or_else(|| first_of.get(id).copied())
            .filter(|first| events.contains_key(first));
        match original {
            Some(first) => {
                if let Some((_, replays)) = events.get_mut(&first) {
                    replays.push(copy.sequence);
                }
            }
            None => {
                first_of.insert(id, copy.sequence);
                events.insert(copy.sequence, (copy, Vec::new()));
            }
        }
    }
    let mut consumers: Vec<&consumer::Info> = consumers.iter().collect();
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    events
        .into_iter()
        .map(|(first, (stored, replays))| {
            let latest = replays.last().copied().unwrap_or(first);
            let handlers = consumers
                .iter()
                .filter(|info| takes(info, &stored.subject))
                .map(|info| HandlerEntry {
                    handler: info.name.clone(),
                    state: state(info, first, latest, stored.time, letters),
                })
                .collect();
            EventEntry {
                stream_sequence: first,
                replays,
                event_id: stored.header(ce::ID).unwrap_or_default().to_owned(),
                event_type: stored.header(ce::TYPE).unwrap_or_default().to_owned(),
                kind: stored.subject.rsplit('.').next().unwrap_or_default().to_owned(),
                time: stored.time,
                handlers,
            }
        })
        .collect()
}

/// A time as the server gives it (async-nats's), in UTC.
fn utc(time: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(time.unix_timestamp_nanos()).unwrap_or_default())
}

/// Whether the consumer's filter takes `subject`.
fn takes(info: &consumer::Info, subject: &str) -> bool {
    let config = &info.config;
    let filters: Vec<&str> = if !config.filter_subjects.is_empty() {
        config.filter_subjects.iter().map(String::as_str).collect()
    } else if !config.filter_subject.is_empty() {
        vec![config.filter_subject.as_str()]
    } else {
        return true;
    };
    filters.into_iter().any(|filter| subject_matches(filter, subject))
}

/// NATS subject matching: `*` is one token, `>` the rest.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for pattern in filter.split('.') {
        match (pattern, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (pattern, Some(token)) if pattern == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// One handler's state for the event first stored at `first` and last
/// copied (replayed) at `latest`.
fn state(info: &consumer::Info, first: u64, latest: u64, stored: DateTime<Utc>, letters: &[Stored]) -> State {
    // The handler a letter is of is the one its subject names: only that
    // handler's NATS user may publish there. Its headers are whatever the
    // publisher wrote.
    let letter = letters.iter().rev().find(|letter| {
        dlq::consumer_of(&letter.subject) == Some(info.name.as_str())
            && letter.header(dlq::STREAM_SEQ).and_then(|s| s.parse::<u64>().ok()) == Some(first)
    });
    if let Some(letter) = letter {
        return State::DeadLettered {
            reason: letter.header(dlq::REASON).unwrap_or_default().to_owned(),
            letter: letter.sequence,
            deliveries: letter.header(dlq::DELIVERIES).and_then(|s| s.parse().ok()).unwrap_or_default(),
        };
    }
    let started_new = !matches!(info.config.deliver_policy, consumer::DeliverPolicy::All);
    let created =
        DateTime::from_timestamp_nanos(i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or_default());
    if started_new && stored < created && latest == first {
        return State::NotDelivered;
    }
    if latest <= info.ack_floor.stream_sequence {
        State::Applied { by: info.ack_floor.last_active.map(utc) }
    } else if latest <= info.delivered.stream_sequence {
        State::InFlight { unacked: info.num_ack_pending as u64, redelivered: info.num_redelivered as u64 }
    } else {
        State::Pending { handler_at: info.delivered.stream_sequence, waiting: info.num_pending }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_as_nats_matches_them() {
        let subject = "events.prospect.0190.signedup";
        for filter in ["events.prospect.>", "events.>", "events.prospect.*.signedup", "events.*.*.*", subject] {
            assert!(subject_matches(filter, subject), "{filter}");
        }
        for filter in ["events.prospect.*.deleted", "events.prospect.*", "events.prospect.0190.signedup.x", "dlq.>"] {
            assert!(!subject_matches(filter, subject), "{filter}");
        }
    }
}
