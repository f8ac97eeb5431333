//! The `analytics-indexer` handler: applies a batch of events to the index
//! and commits it before the runner acks the batch.

use std::collections::HashMap;
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError};
use messages::{ProspectDetails, ProspectEvent};
use tantivy::{DateTime, IndexWriter, TantivyDocument, Term};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::index::{DELETED, DocState, KEY_SEPARATOR, LIVE, ProspectIndex};

/// Indexes prospect events; one per index (it owns the only writer).
#[derive(Clone)]
pub struct IndexHandler {
    index: Arc<ProspectIndex>,
    writer: Arc<Mutex<IndexWriter>>,
}

impl IndexHandler {
    /// A handler writing to `index` with `heap_bytes` of indexing memory.
    pub fn new(index: Arc<ProspectIndex>, heap_bytes: usize) -> anyhow::Result<Self> {
        let writer = index.writer(heap_bytes)?;
        Ok(Self { index, writer: Arc::new(Mutex::new(writer)) })
    }
}

impl Handler for IndexHandler {
    type Event = ProspectEvent;

    #[tracing::instrument(name = "index_batch", skip_all, fields(size = batch.len()))]
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let mut writer = self.writer.lock().await;
        // Indexing and committing are blocking file work.
        tokio::task::block_in_place(|| {
            let result = apply(&self.index, &mut writer, batch);
            if result.is_err() {
                // Nothing of a failed batch may ride along with the next commit.
                if let Err(error) = writer.rollback() {
                    tracing::error!(%error, "could not roll back the index writer");
                }
            }
            result
        })
        .map_err(|e| HandlerError::Transient(e.context("indexing the batch")))
    }
}

/// What the batch knows so far about prospects and e-mail addresses.
struct Known {
    by_id: HashMap<Uuid, DocState>,
    by_email: HashMap<String, Uuid>,
}

impl Known {
    fn load(index: &ProspectIndex, batch: &[Delivery<ProspectEvent>]) -> anyhow::Result<Self> {
        let ids = batch.iter().map(|d| d.event.prospect_id());
        let by_id: HashMap<Uuid, DocState> = index.states_by_id(ids)?.into_iter().map(|s| (s.id, s)).collect();
        let emails: Vec<String> = batch
            .iter()
            .filter_map(|d| match &d.event {
                ProspectEvent::SignedUp(e) => Some(e.details.email.to_lowercase()),
                ProspectEvent::Updated(e) => Some(e.details.email.to_lowercase()),
                ProspectEvent::Deleted(_) => None,
            })
            .collect();
        let mut known = Self { by_id, by_email: HashMap::new() };
        for state in index.states_by_email(emails.iter().map(String::as_str))? {
            known.remember(state);
        }
        let live: Vec<DocState> = known.by_id.values().filter(|s| s.live).cloned().collect();
        for state in live {
            known.remember(state);
        }
        Ok(known)
    }

    fn remember(&mut self, state: DocState) {
        if let Some(old) = self.by_id.get(&state.id).and_then(|s| s.email_key.clone())
            && self.by_email.get(&old) == Some(&state.id)
        {
            self.by_email.remove(&old);
        }
        if let Some(key) = &state.email_key {
            self.by_email.insert(key.clone(), state.id);
        }
        self.by_id.insert(state.id, state);
    }
}

/// Applies the batch in stream order, then commits with the batch's last
/// sequence as payload and makes the result visible to queries.
fn apply(index: &ProspectIndex, writer: &mut IndexWriter, batch: &[Delivery<ProspectEvent>]) -> anyhow::Result<()> {
    let mut known = Known::load(index, batch)?;
    for delivery in batch {
        let seq = delivery.meta.stream_sequence;
        let outcome = match &delivery.event {
            ProspectEvent::SignedUp(event) => {
                let at = to_tantivy(event.signed_up_at);
                let key = event.details.email.to_lowercase();
                let owner = known.by_email.get(&key).and_then(|id| known.by_id.get(id)).cloned();
                match (known.by_id.get(&event.prospect_id), owner) {
                    (Some(_), _) => "ignored: prospect already known",
                    (None, Some(owner)) if owner.seq >= seq => "ignored: the e-mail's prospect has a later event",
                    // One prospect per e-mail, as save-prospect keeps them.
                    (None, Some(owner)) => {
                        write_live(writer, index, &mut known, owner.id, &event.details, owner.signed_up_at, seq)?;
                        "merged into the prospect with the same e-mail"
                    }
                    (None, None) => {
                        write_live(writer, index, &mut known, event.prospect_id, &event.details, at, seq)?;
                        "added"
                    }
                }
            }
            ProspectEvent::Updated(event) => {
                let key = event.details.email.to_lowercase();
                let taken = known.by_email.get(&key).is_some_and(|owner| *owner != event.prospect_id);
                match known.by_id.get(&event.prospect_id).cloned() {
                    Some(state) if !state.live => "ignored: prospect deleted",
                    Some(state) if state.seq >= seq => "ignored: a later event was applied",
                    _ if taken => "ignored: e-mail belongs to another prospect",
                    Some(state) => {
                        write_live(writer, index, &mut known, state.id, &event.details, state.signed_up_at, seq)?;
                        "replaced"
                    }
                    None => {
                        let at = to_tantivy(event.updated_at);
                        write_live(writer, index, &mut known, event.prospect_id, &event.details, at, seq)?;
                        "added from an update"
                    }
                }
            }
            ProspectEvent::Deleted(event) => match known.by_id.get(&event.prospect_id).cloned() {
                Some(state) if !state.live => "ignored: already deleted",
                state => {
                    let at = state.map_or_else(|| to_tantivy(event.deleted_at), |s| s.signed_up_at);
                    write_tombstone(writer, index, &mut known, event.prospect_id, at, seq)?;
                    "removed"
                }
            },
        };
        tracing::debug!(event_id = %delivery.meta.event_id, prospect_id = %delivery.event.prospect_id(),
            stream_sequence = seq, outcome, "event indexed");
    }
    if let Some(last) = batch.last() {
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&last.meta.stream_sequence.to_string());
        commit.commit()?;
        index.reader().reload()?;
    }
    Ok(())
}

fn to_tantivy(at: chrono::DateTime<chrono::Utc>) -> DateTime {
    DateTime::from_timestamp_micros(at.timestamp_micros())
}

fn replace(writer: &IndexWriter, index: &ProspectIndex, id: Uuid, doc: TantivyDocument) -> anyhow::Result<()> {
    // A delete only affects documents added before it: delete, then add.
    writer.delete_term(Term::from_field_text(index.fields().id, &id.to_string()));
    writer.add_document(doc)?;
    Ok(())
}

/// The fields every document has: id, state, sequence, sign-up time.
fn document(index: &ProspectIndex, id: Uuid, state: &str, seq: u64, signed_up_at: DateTime) -> TantivyDocument {
    let f = index.fields();
    let mut doc = TantivyDocument::new();
    doc.add_text(f.id, id.to_string());
    doc.add_text(f.state, state);
    doc.add_u64(f.seq, seq);
    doc.add_date(f.signed_up_at, signed_up_at);
    doc
}

fn write_live(
    writer: &IndexWriter,
    index: &ProspectIndex,
    known: &mut Known,
    id: Uuid,
    details: &ProspectDetails,
    signed_up_at: DateTime,
    seq: u64,
) -> anyhow::Result<()> {
    let f = index.fields();
    let mut doc = document(index, id, LIVE, seq, signed_up_at);
    doc.add_text(f.full_name, format!("{} {}", details.first_name, details.last_name));
    doc.add_text(f.first_name, &details.first_name);
    doc.add_text(f.last_name, &details.last_name);
    doc.add_text(f.email, &details.email);
    doc.add_text(f.email_key, details.email.to_lowercase());
    if let Some(company) = &details.company_name {
        doc.add_text(f.company, company);
    }
    doc.add_text(f.country_code, &details.country.code);
    doc.add_text(f.country_name, &details.country.name);
    doc.add_text(f.country_key, format!("{}{KEY_SEPARATOR}{}", details.country.code, details.country.name));
    doc.add_text(f.role_code, &details.role.code);
    doc.add_text(f.role_name, &details.role.name);
    doc.add_text(f.role_key, format!("{}{KEY_SEPARATOR}{}", details.role.code, details.role.name));
    replace(writer, index, id, doc)?;
    known.remember(DocState { id, live: true, seq, signed_up_at, email_key: Some(details.email.to_lowercase()) });
    Ok(())
}

fn write_tombstone(
    writer: &IndexWriter,
    index: &ProspectIndex,
    known: &mut Known,
    id: Uuid,
    signed_up_at: DateTime,
    seq: u64,
) -> anyhow::Result<()> {
    replace(writer, index, id, document(index, id, DELETED, seq, signed_up_at))?;
    known.remember(DocState { id, live: false, seq, signed_up_at, email_key: None });
    Ok(())
}
