//! The `analytics-indexer` handler: applies a batch of events to the index
//! and commits it before the runner acks the batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bus::{Delivery, Handler, HandlerError};
use messages::{Consent, ProspectDeleted, ProspectDetails, ProspectEvent, ProspectSignedUp, ProspectUpdated};
use tantivy::{DateTime, IndexWriter, TantivyDocument, Term};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::index::{DELETED, DocState, KEY_SEPARATOR, LIVE, NO, NOT_RECORDED, ProspectIndex, RECORDED, YES};

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

    /// Empties the index (a commit without documents and without a last
    /// sequence), for a rebuild from the stream.
    pub async fn empty(&self) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().await;
        tokio::task::block_in_place(|| {
            writer.delete_all_documents()?;
            let mut commit = writer.prepare_commit()?;
            commit.set_payload("");
            commit.commit()?;
            writer.garbage_collect_files().wait()?;
            self.index.reader().reload()?;
            anyhow::Ok(())
        })
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
                match writer.rollback() {
                    Ok(_) => crate::index::set_merge_policy(&writer),
                    Err(error) => tracing::error!(%error, "could not roll back the index writer"),
                }
            }
            result
        })
        .map_err(|e| HandlerError::Transient(e.context("indexing the batch")))
    }
}

/// What the batch knows so far about prospects, and which confirmed
/// prospect holds each address.
struct Known {
    by_id: HashMap<Uuid, DocState>,
    holders: HashMap<String, Uuid>,
    /// Events applied before, or earlier in this batch.
    applied: HashSet<Uuid>,
    /// The event being applied: the documents it writes record it.
    event: Option<Uuid>,
}

impl Known {
    fn load(index: &ProspectIndex, batch: &[Delivery<ProspectEvent>]) -> anyhow::Result<Self> {
        let ids = batch.iter().map(|d| d.event.prospect_id());
        let by_id: HashMap<Uuid, DocState> = index.states_by_id(ids)?.into_iter().map(|s| (s.id, s)).collect();
        let mut emails: Vec<String> =
            batch.iter().filter_map(|d| d.event.details()).map(|d| d.email.key().to_owned()).collect();
        emails.extend(by_id.values().filter_map(|s| s.email_key.clone()));
        // Every event that wrote is recorded on its own prospect's document.
        let applied = by_id.values().flat_map(|s| &s.event_ids).copied().collect();
        let mut known = Self { by_id, holders: HashMap::new(), applied, event: None };
        for state in index.holders_of(emails.iter().map(String::as_str))? {
            known.remember(state);
        }
        let holding: Vec<DocState> = known.by_id.values().filter(|s| s.live && s.confirmed).cloned().collect();
        for state in holding {
            known.remember(state);
        }
        Ok(known)
    }

    fn remember(&mut self, state: DocState) {
        if let Some(old) = self.by_id.get(&state.id).and_then(|s| s.email_key.clone())
            && self.holders.get(&old) == Some(&state.id)
        {
            self.holders.remove(&old);
        }
        if let Some(key) = state.email_key.as_ref().filter(|_| state.live && state.confirmed) {
            self.holders.insert(key.clone(), state.id);
        }
        self.by_id.insert(state.id, state);
    }

    /// Whether `event` is new (and from now on, applied).
    fn first_time(&mut self, event: Uuid) -> bool {
        self.event = Some(event);
        self.applied.insert(event)
    }

    /// The event ids a new version of document `id` records: its earlier
    /// ones and the event being applied.
    fn event_ids(&self, id: Uuid) -> Vec<Uuid> {
        let mut ids = self.by_id.get(&id).map(|s| s.event_ids.clone()).unwrap_or_default();
        ids.extend(self.event);
        ids
    }

    /// The confirmed prospect other than `id` holding `key`.
    fn holder_other_than(&self, id: Uuid, key: Option<&String>) -> Option<DocState> {
        let holder = self.holders.get(key?).filter(|h| **h != id)?;
        self.by_id.get(holder).cloned()
    }
}

/// Applies the batch in stream order, then commits with the batch's last
/// sequence as payload and makes the result visible to queries. The rules
/// are save-prospect's: a sign-up is its own, unconfirmed prospect even when
/// another holds its address; its confirmation either confirms it or, when a
/// confirmed prospect holds the address, moves its details there (the
/// sign-up's document becomes a tombstone).
fn apply(index: &ProspectIndex, writer: &mut IndexWriter, batch: &[Delivery<ProspectEvent>]) -> anyhow::Result<()> {
    // The reader must see every commit before deciding: a reload that failed
    // after the last commit would hide its documents, and a sign-up's
    // document would then be added again beside the one committed.
    index.reader().reload()?;
    let mut applying = Batch { index, writer, known: Known::load(index, batch)? };
    for delivery in batch {
        let seq = delivery.meta.stream_sequence;
        let id = delivery.event.prospect_id();
        // By event id, not by sequence: a stream restored or recreated
        // numbers its events anew.
        if !applying.known.first_time(delivery.meta.event_id) {
            tracing::debug!(event_id = %delivery.meta.event_id, "event already indexed; skipping it");
            continue;
        }
        let outcome = match &delivery.event {
            ProspectEvent::SignedUp(event) => applying.signed_up(id, seq, event)?,
            ProspectEvent::Updated(event) => applying.updated(id, seq, event)?,
            ProspectEvent::Deleted(event) => applying.deleted(id, seq, event)?,
            ProspectEvent::Confirmed(_) => applying.confirmed(id, seq)?,
            ProspectEvent::EmailChangeRequested(_) | ProspectEvent::ManageLinkRequested(_) => "nothing to index",
        };
        tracing::debug!(event_id = %delivery.meta.event_id, prospect_id = %id, stream_sequence = seq, outcome, "event indexed");
    }
    if let Some(last) = batch.last() {
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&last.meta.stream_sequence.to_string());
        commit.commit()?;
        index.reader().reload()?;
    }
    if batch.iter().any(|d| matches!(d.event, ProspectEvent::Deleted(_))) {
        purge_deleted_documents(index, writer)?;
    }
    Ok(())
}

/// One batch being applied: the index, its writer, and what the batch knows.
/// Each event kind is one method; each returns what it did.
struct Batch<'a> {
    index: &'a ProspectIndex,
    writer: &'a IndexWriter,
    known: Known,
}

/// A live document to write.
struct Live<'d> {
    id: Uuid,
    details: &'d ProspectDetails,
    signed_up_at: DateTime,
    seq: u64,
    /// Confirmed by the owner of the address.
    confirmed: bool,
    /// Its sign-up recorded its consent.
    consent_recorded: bool,
}

impl Batch<'_> {
    fn signed_up(&mut self, id: Uuid, seq: u64, event: &ProspectSignedUp) -> anyhow::Result<&'static str> {
        let recorded = matches!(event.consent, Consent::Recorded(_));
        Ok(match self.known.by_id.get(&id).cloned() {
            // An update overtook the sign-up: the document takes the
            // sign-up's consent, nothing else.
            Some(state) if state.live && recorded && !state.consent_recorded => {
                let details = live_details(&state);
                let signed_up_at = state.signed_up_at;
                let (seq, confirmed) = (state.seq, state.confirmed);
                self.write_live(Live { id, details: &details, signed_up_at, seq, confirmed, consent_recorded: true })?;
                "consent recorded on the prospect an update added"
            }
            Some(_) => "ignored: prospect already known",
            None => {
                let signed_up_at = to_tantivy(event.signed_up_at);
                let details = &event.details;
                self.write_live(Live { id, details, signed_up_at, seq, confirmed: false, consent_recorded: recorded })?;
                "added, unconfirmed"
            }
        })
    }

    fn updated(&mut self, id: Uuid, seq: u64, event: &ProspectUpdated) -> anyhow::Result<&'static str> {
        let key = event.details.email.key().to_owned();
        let details = &event.details;
        Ok(match self.known.by_id.get(&id).cloned() {
            Some(state) if !state.live => "ignored: prospect deleted",
            Some(state) if state.seq >= seq => "ignored: a later event was applied",
            Some(state) if state.confirmed && self.known.holder_other_than(id, Some(&key)).is_some() => {
                "ignored: e-mail belongs to another prospect"
            }
            Some(state) => {
                let (signed_up_at, confirmed, consent_recorded) =
                    (state.signed_up_at, state.confirmed, state.consent_recorded);
                self.write_live(Live { id, details, signed_up_at, seq, confirmed, consent_recorded })?;
                "replaced"
            }
            None => {
                let signed_up_at = to_tantivy(event.updated_at);
                self.write_live(Live { id, details, signed_up_at, seq, confirmed: false, consent_recorded: false })?;
                "added from an update"
            }
        })
    }

    fn deleted(&mut self, id: Uuid, seq: u64, event: &ProspectDeleted) -> anyhow::Result<&'static str> {
        Ok(match self.known.by_id.get(&id).cloned() {
            Some(state) if !state.live => "ignored: already deleted",
            state => {
                let at = state.map_or_else(|| to_tantivy(event.deleted_at), |s| s.signed_up_at);
                self.write_tombstone(id, at, seq)?;
                "removed"
            }
        })
    }

    fn confirmed(&mut self, id: Uuid, seq: u64) -> anyhow::Result<&'static str> {
        let state = match self.known.by_id.get(&id).cloned() {
            None => anyhow::bail!("the confirmation of {id} waits for its sign-up to be indexed"),
            Some(state) if !state.live => return Ok("ignored: prospect deleted"),
            Some(state) if state.confirmed => return Ok("ignored: already confirmed"),
            Some(state) => state,
        };
        let details = live_details(&state);
        Ok(match self.known.holder_other_than(id, state.email_key.as_ref()) {
            Some(holder) => {
                self.write_live(Live {
                    id: holder.id,
                    details: &details,
                    signed_up_at: holder.signed_up_at,
                    seq: holder.seq.max(seq),
                    confirmed: true,
                    consent_recorded: state.consent_recorded || holder.consent_recorded,
                })?;
                self.write_tombstone(id, state.signed_up_at, seq)?;
                "merged into the prospect holding its address"
            }
            None => {
                let (signed_up_at, seq, consent_recorded) = (state.signed_up_at, state.seq, state.consent_recorded);
                self.write_live(Live { id, details: &details, signed_up_at, seq, confirmed: true, consent_recorded })?;
                "confirmed"
            }
        })
    }

    fn write_live(&mut self, live: Live<'_>) -> anyhow::Result<()> {
        write_live(self.writer, self.index, &mut self.known, live)
    }

    fn write_tombstone(&mut self, id: Uuid, signed_up_at: DateTime, seq: u64) -> anyhow::Result<()> {
        write_tombstone(self.writer, self.index, &mut self.known, id, signed_up_at, seq)
    }
}

/// A live document's details.
fn live_details(state: &DocState) -> ProspectDetails {
    state.details.clone().unwrap_or_else(|| unreachable!("live documents have details"))
}

/// A replaced or erased document is only marked deleted: its stored fields
/// stay in its segment's files until the segment is merged. After an erasure
/// the segments with deleted documents are merged now, and the files they
/// leave are removed, so the erased details are gone from the disk as well.
fn purge_deleted_documents(index: &ProspectIndex, writer: &mut IndexWriter) -> anyhow::Result<()> {
    let segments: Vec<tantivy::index::SegmentId> = index
        .reader()
        .searcher()
        .segment_readers()
        .iter()
        .filter(|segment| segment.has_deletes())
        .map(|segment| segment.segment_id())
        .collect();
    if segments.is_empty() {
        return Ok(());
    }
    writer.merge(&segments).wait()?;
    writer.garbage_collect_files().wait()?;
    index.reader().reload()?;
    Ok(())
}

fn to_tantivy(at: chrono::DateTime<chrono::Utc>) -> DateTime {
    DateTime::from_timestamp_micros(at.timestamp_micros())
}

/// Writes `doc` as the document of `id`, replacing the one `known` has.
/// A document the index has never had (a new sign-up, most of them) is just
/// added: a delete would cost a look-up in every segment at the commit.
fn replace(
    writer: &IndexWriter,
    index: &ProspectIndex,
    known: &Known,
    id: Uuid,
    doc: TantivyDocument,
) -> anyhow::Result<()> {
    if known.by_id.contains_key(&id) {
        // A delete only affects documents added before it: delete, then add.
        writer.delete_term(Term::from_field_text(index.fields().id, &id.to_string()));
    }
    writer.add_document(doc)?;
    Ok(())
}

/// The fields every document has: id, state, sequence, sign-up time, and
/// the events applied to it.
fn document(
    index: &ProspectIndex,
    event_ids: &[Uuid],
    id: Uuid,
    state: &str,
    seq: u64,
    signed_up_at: DateTime,
) -> TantivyDocument {
    let f = index.fields();
    let mut doc = TantivyDocument::new();
    doc.add_text(f.id, id.to_string());
    doc.add_text(f.state, state);
    doc.add_u64(f.seq, seq);
    doc.add_date(f.signed_up_at, signed_up_at);
    for event in event_ids {
        doc.add_text(f.event_ids, event.to_string());
    }
    doc
}

fn write_live(writer: &IndexWriter, index: &ProspectIndex, known: &mut Known, live: Live<'_>) -> anyhow::Result<()> {
    let Live { id, details, signed_up_at, seq, confirmed, consent_recorded } = live;
    let f = index.fields();
    let event_ids = known.event_ids(id);
    let mut doc = document(index, &event_ids, id, LIVE, seq, signed_up_at);
    doc.add_text(f.confirmed, if confirmed { YES } else { NO });
    doc.add_text(f.consent, if consent_recorded { RECORDED } else { NOT_RECORDED });
    doc.add_text(f.full_name, format!("{} {}", details.first_name, details.last_name));
    doc.add_text(f.first_name, &details.first_name);
    doc.add_text(f.last_name, &details.last_name);
    doc.add_text(f.email, &details.email);
    doc.add_text(f.email_key, details.email.key());
    if let Some(company) = &details.company_name {
        doc.add_text(f.company, company);
    }
    doc.add_text(f.country_code, &details.country.code);
    doc.add_text(f.country_name, &details.country.name);
    doc.add_text(f.country_key, format!("{}{KEY_SEPARATOR}{}", details.country.code, details.country.name));
    doc.add_text(f.role_code, &details.role.code);
    doc.add_text(f.role_name, &details.role.name);
    doc.add_text(f.role_key, format!("{}{KEY_SEPARATOR}{}", details.role.code, details.role.name));
    replace(writer, index, known, id, doc)?;
    known.remember(DocState {
        id,
        live: true,
        seq,
        signed_up_at,
        email_key: Some(details.email.key().to_owned()),
        confirmed,
        consent_recorded,
        details: Some(details.clone()),
        event_ids,
    });
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
    let event_ids = known.event_ids(id);
    replace(writer, index, known, id, document(index, &event_ids, id, DELETED, seq, signed_up_at))?;
    known.remember(DocState {
        id,
        live: false,
        seq,
        signed_up_at,
        email_key: None,
        confirmed: false,
        consent_recorded: false,
        details: None,
        event_ids,
    });
    Ok(())
}
