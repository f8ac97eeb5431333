//! Erasure in the streams: every event of an erased prospect that holds
//! personal data (`messages::streams::PERSONAL_KINDS`), and every such dead
//! letter, is purged, so that a handler replaying the stream (a new one, a
//! reindex, a dead-letter replay) sees the erasure and never the data.
//!
//! Every event has a subject of its prospect's own
//! (`events.prospect.<id>.<kind>`, see `messages::streams`), so a purge with
//! that subject as filter touches nobody else. The erasure event itself (and
//! a confirmation: neither holds personal data) stays: it is what replaying
//! handlers must see. So do the dead letters of erasures, until they are
//! replayed and applied.

use async_nats::jetstream::{self, stream};
use messages::streams::{PERSONAL_KINDS, event_subject};
use messages::{Event, ProspectDeleted};
use uuid::Uuid;

use crate::settings::StreamSettings;
use crate::stream::dlq_stream_name;

/// Purges one prospect's personal data from the event and dead-letter
/// streams.
#[derive(Clone)]
pub struct StreamEraser {
    js: jetstream::Context,
    events: String,
    dead_letters: String,
}

impl StreamEraser {
    /// An eraser for the streams `events` describes.
    pub fn new(client: async_nats::Client, events: &StreamSettings) -> Self {
        Self { js: jetstream::new(client), events: events.name.clone(), dead_letters: dlq_stream_name(events) }
    }

    /// Purges the events and dead letters of `prospect_id` that hold personal
    /// data. Returns how many messages went. Purging again finds nothing
    /// more: safe to repeat after a redelivery.
    pub async fn erase(&self, prospect_id: Uuid) -> anyhow::Result<u64> {
        use anyhow::Context as _;
        let events = self.js.get_stream_no_info(&self.events).await?;
        let letters = self.js.get_stream_no_info(&self.dead_letters).await?;
        let mut purged = 0;
        for kind in PERSONAL_KINDS {
            let history = events.purge().filter(event_subject(prospect_id, kind)).await;
            purged += history.with_context(|| format!("purging the {kind} events of {prospect_id}"))?.purged;
            let dead = letters.purge().filter(format!("dlq.prospect.*.{prospect_id}.{kind}")).await;
            purged += dead.with_context(|| format!("purging the {kind} dead letters of {prospect_id}"))?.purged;
        }
        Ok(purged)
    }
}

impl StreamEraser {
    /// Purges `prospect_id`'s e-mail change requests stored before stream
    /// sequence `before` (replaced by a newer request, applied, or expired),
    /// and every dead letter of such a request: each holds an address typed
    /// by someone who had not proven it. Returns how many messages went.
    pub async fn purge_change_requests(&self, prospect_id: Uuid, before: u64) -> anyhow::Result<u64> {
        use anyhow::Context as _;
        let kind = messages::ProspectEmailChangeRequested::KIND;
        let events = self.js.get_stream_no_info(&self.events).await?;
        let letters = self.js.get_stream_no_info(&self.dead_letters).await?;
        let history = events.purge().filter(event_subject(prospect_id, kind)).sequence(before).await;
        let mut purged =
            history.with_context(|| format!("purging the e-mail change requests of {prospect_id}"))?.purged;
        let dead = letters.purge().filter(format!("dlq.prospect.*.{prospect_id}.{kind}")).await;
        purged += dead.with_context(|| format!("purging the change requests' dead letters of {prospect_id}"))?.purged;
        Ok(purged)
    }
}

/// Whether `prospect_id` was erased: the event stream holds its erasure.
/// Uses direct gets of the first and the last message on
/// `events.prospect.<id>.deleted`, which a handler's NATS user may do for
/// those subjects only. A message there counts only when it is that
/// prospect's erasure (its `ce-type` and payload say so): whoever may
/// publish on an erasure's subject could otherwise make anyone look erased.
pub async fn is_erased(js: &jetstream::Context, events: &str, prospect_id: Uuid) -> anyhow::Result<bool> {
    let stream = js.get_stream_no_info(events).await?;
    let subject = event_subject(prospect_id, ProspectDeleted::KIND);
    let last = match stream.direct_get_last_for_subject(subject.as_str()).await {
        Ok(message) => message,
        Err(error) if error.kind() == stream::DirectGetErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    if is_erasure_of(&last, prospect_id) {
        return Ok(true);
    }
    // A genuine erasure comes first; whatever came after it changes nothing.
    let first = stream.direct_get_first_for_subject(subject).await?;
    Ok(is_erasure_of(&first, prospect_id))
}

/// Whether a stored message is `prospect_id`'s erasure.
fn is_erasure_of(message: &jetstream::message::StreamMessage, prospect_id: Uuid) -> bool {
    use messages::EventSet as _;
    let ce_type = message.headers.get(messages::cloudevents::TYPE).map(|v| v.as_str()).unwrap_or_default();
    ProspectDeleted::decode(ce_type, &message.payload).is_ok_and(|erasure| erasure.prospect_id == prospect_id)
}
