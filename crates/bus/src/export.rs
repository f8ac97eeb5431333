//! What NATS holds about one person, for the export (`prospects.export`,
//! GDPR art. 15 and 20): the kinds and times of their events in the event
//! stream, and the mails the mailer recorded as sent for those events.
//!
//! Read, never written: the events by subject (`events.prospect.<id>.*`,
//! `STREAM.MSG.GET`; only their headers and stored time are kept), at most
//! a given number of them; the mailer's records by key (`<event id>.<slot>`
//! in `MAILER_SENT`, `messages::streams::SENT_SLOTS`).
//! A replayed dead letter is a later copy of an event (same `ce-id`) and is
//! listed once.

use std::collections::HashSet;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use messages::service::{HeldEvent, SentMail};
use messages::{ProspectEvent, cloudevents as ce, streams};
use uuid::Uuid;

use crate::settings::StreamSettings;

/// An event of the person's, with the id its mails are recorded under.
#[derive(Debug, Clone)]
pub struct Held {
    /// What the export shows.
    pub event: HeldEvent,
    /// Its `ce-id`.
    pub event_id: String,
}

/// The events the stream `events` holds about each of `prospects`, oldest
/// first, at most `max` of them (and whether there were more).
pub async fn events_of(
    js: &jetstream::Context,
    events: &StreamSettings,
    prospects: &[Uuid],
    max: usize,
) -> anyhow::Result<(Vec<Held>, bool)> {
    use jetstream::stream::RawMessageErrorKind;
    let stream = js.get_stream(&events.name).await?;
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for prospect_id in prospects {
        let filter = streams::event_subject(*prospect_id, "*");
        let (mut next, mut read) = (1, 0);
        // Up to `max` of each prospect's, so that the oldest of all are
        // among them when the merged sign-ups' are sorted in.
        while read <= max {
            let message = match stream.raw_message_builder().sequence(next).next_by_subject(filter.clone()).send().await
            {
                Ok(message) => message,
                Err(error) if matches!(error.kind(), RawMessageErrorKind::NoMessageFound) => break,
                Err(error) => return Err(error.into()),
            };
            next = message.sequence + 1;
            read += 1;
            let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            let event_id = header(ce::ID);
            // A replayed dead letter is a later copy of the same event.
            if !event_id.is_empty() && !seen.insert(event_id.clone()) {
                continue;
            }
            let stored_at =
                DateTime::from_timestamp_nanos(i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or_default());
            let kind = message.subject.rsplit('.').next().filter(|kind| streams::KINDS.contains(kind));
            let kind = kind.unwrap_or("unknown").to_owned();
            // The type as the contract names it; whatever else a publisher
            // wrote there is not passed on.
            let claimed = header(ce::TYPE);
            let known = ProspectEvent::TYPES.iter().chain(ProspectEvent::OLDER_TYPES.iter()).any(|t| *t == claimed);
            let event_type = if known { claimed } else { "unknown".to_owned() };
            let event = HeldEvent { kind, event_type, stored_at, prospect_id: *prospect_id };
            found.push((message.sequence, Held { event, event_id }));
        }
    }
    found.sort_by_key(|(sequence, _)| *sequence);
    let truncated = found.len() > max;
    found.truncate(max);
    Ok((found.into_iter().map(|(_, held)| held).collect(), truncated))
}

/// The mails recorded as sent for `events`, in their order, but for the
/// mail to the new address of `unproven` (the address change still waiting
/// for its new address: whether that mail went says whether its owner
/// suppressed it, which is theirs to know). No bucket (no mailer has run)
/// reads as no mail.
pub async fn mails_for(
    js: &jetstream::Context,
    events: &[Held],
    unproven: Option<Uuid>,
) -> anyhow::Result<Vec<SentMail>> {
    let sent = match js.get_key_value(streams::SENT_BUCKET).await {
        Ok(bucket) => bucket,
        Err(error) if matches!(error.kind(), jetstream::context::KeyValueErrorKind::GetBucket) => {
            return Ok(Vec::new());
        }
        Err(error) => return Err(error.into()),
    };
    let mut mails = Vec::new();
    let unproven = unproven.map(|id| id.to_string());
    for held in events.iter().filter(|held| !held.event_id.is_empty()) {
        for slot in streams::sent_slots(&held.event.kind) {
            if *slot == streams::NEW_ADDRESS_SLOT && unproven.as_ref() == Some(&held.event_id) {
                continue;
            }
            let entry = sent.entry(format!("{}.{slot}", held.event_id)).await?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put && &e.value[..] == b"sent") else {
                continue;
            };
            let sent_at = DateTime::<Utc>::from_timestamp_nanos(
                i64::try_from(entry.created.unix_timestamp_nanos()).unwrap_or_default(),
            );
            mails.push(SentMail { about: held.event.kind.clone(), recipient: (*slot).to_owned(), sent_at });
        }
    }
    Ok(mails)
}
