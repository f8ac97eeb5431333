//! The embedded Tantivy index: one document per prospect.
//!
//! A live prospect's document holds its details and whether the owner of its
//! address confirmed it (`confirmed`: [`YES`] or [`NO`]) and whether its
//! consent was recorded (`consent`); an erased prospect's
//! document is a tombstone (id, sequence, `state = deleted`) with no personal
//! data, so that an older event redelivered later cannot bring it back. Every
//! document remembers the stream sequence of the last event applied to it.
//! The stream sequence of the last applied batch is stored as the commit
//! payload: an index without one is new and must be filled by a replay.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use messages::{Country, ProspectDetails, Role};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::LogMergePolicy;
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{
    DateTime, DocAddress, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};
use uuid::Uuid;

/// `state` of a live prospect's document.
pub const LIVE: &str = "live";
/// `state` of an erased prospect's tombstone (also of a sign-up merged into
/// the prospect that held its address).
pub const DELETED: &str = "deleted";
/// `confirmed` of a confirmed prospect.
pub const YES: &str = "yes";
/// `confirmed` of a sign-up waiting for confirmation.
pub const NO: &str = "no";
/// `consent` of a prospect whose sign-up recorded what was agreed to.
pub const RECORDED: &str = "recorded";
/// `consent` of a prospect that signed up before consent was recorded.
pub const NOT_RECORDED: &str = "not-recorded";
/// Separates code and name in the `*_key` fields that aggregations group by.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The index's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// Prospect id (exact).
    pub id: Field,
    /// [`LIVE`] or [`DELETED`].
    pub state: Field,
    /// Stream sequence of the last event applied.
    pub seq: Field,
    /// "First Last", full-text.
    pub full_name: Field,
    /// Given name (stored).
    pub first_name: Field,
    /// Family name (stored).
    pub last_name: Field,
    /// E-mail as typed (stored).
    pub email: Field,
    /// Lower-cased e-mail (exact): one prospect per address.
    pub email_key: Field,
    /// Company, full-text.
    pub company: Field,
    /// Country code (exact, for filters).
    pub country_code: Field,
    /// Country name (stored).
    pub country_name: Field,
    /// "code␟name", a fast field to group by.
    pub country_key: Field,
    /// Role code (exact, for filters).
    pub role_code: Field,
    /// Role name (stored).
    pub role_name: Field,
    /// "code␟name", a fast field to group by.
    pub role_key: Field,
    /// Sign-up time: range filters, per-day histogram, sorting.
    pub signed_up_at: Field,
    /// [`YES`] once the owner of the address confirmed it, else [`NO`].
    pub confirmed: Field,
    /// [`RECORDED`] when its sign-up recorded its consent, else
    /// [`NOT_RECORDED`] (signed up before consent was recorded). Whether,
    /// not what: the record itself is save-prospect's.
    pub consent: Field,
    /// The `ce-id`s of the events applied to it (stored, several): an event
    /// is applied once, whatever sequence it arrives with. Every event that
    /// writes is recorded on its own prospect's document, so reading that
    /// document tells whether an event was applied; no term index needed.
    pub event_ids: Field,
}

/// The schema and its fields.
pub fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let group_key = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default().set_tokenizer("raw").set_index_option(IndexRecordOption::Basic),
        )
        .set_fast("raw");
    let time = DateOptions::from(INDEXED).set_stored().set_fast().set_precision(DateTimePrecision::Seconds);
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        state: builder.add_text_field("state", STRING | STORED),
        seq: builder.add_u64_field("seq", STORED),
        full_name: builder.add_text_field("full_name", TEXT),
        first_name: builder.add_text_field("first_name", STORED),
        last_name: builder.add_text_field("last_name", STORED),
        email: builder.add_text_field("email", STORED),
        email_key: builder.add_text_field("email_key", STRING),
        company: builder.add_text_field("company", TEXT | STORED),
        country_code: builder.add_text_field("country_code", STRING | STORED),
        country_name: builder.add_text_field("country_name", STORED),
        country_key: builder.add_text_field("country_key", group_key.clone()),
        role_code: builder.add_text_field("role_code", STRING | STORED),
        role_name: builder.add_text_field("role_name", STORED),
        role_key: builder.add_text_field("role_key", group_key),
        signed_up_at: builder.add_date_field("signed_up_at", time),
        confirmed: builder.add_text_field("confirmed", STRING | STORED),
        consent: builder.add_text_field("consent", STRING | STORED),
        event_ids: builder.add_text_field("event_ids", STORED),
    };
    (builder.build(), fields)
}

/// The index on disk and a reader that sees its last commit.
pub struct ProspectIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    dir: std::path::PathBuf,
}

/// How many segments of a size are merged into one.
const MERGE_AT: usize = 12;
/// Segments smaller than this are all of the smallest size.
const MERGE_LAYER_DOCS: u32 = 20_000;

/// Sets the indexer's merge policy on `writer` (a rollback gives the writer
/// Tantivy's default one back, so the handler sets it again then).
pub fn set_merge_policy(writer: &IndexWriter) {
    let mut policy = LogMergePolicy::default();
    policy.set_min_num_segments(MERGE_AT);
    policy.set_min_layer_size(MERGE_LAYER_DOCS);
    writer.set_merge_policy(Box::new(policy));
}

/// The file beside the index that names the stream it was built from.
const ORIGIN_FILE: &str = "stream-origin";

impl ProspectIndex {
    /// Opens the index in `dir`, creating the folder and the index if needed.
    /// An index written with another schema (an older version of this
    /// service) is deleted and made anew: being new, it is then rebuilt from
    /// the stream.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the index folder {}", dir.display()))?;
        let (schema, fields) = schema();
        let open = || MmapDirectory::open(dir).with_context(|| format!("opening {}", dir.display()));
        if Index::exists(&open()?)? && Index::open(open()?)?.schema() != schema {
            tracing::warn!(dir = %dir.display(), "the index has an older schema: deleting it to rebuild it from the stream");
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            std::fs::create_dir_all(dir)?;
        }
        let index =
            Index::open_or_create(open()?, schema).context("opening the index (delete the folder to rebuild it)")?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, fields, dir: dir.to_owned() })
    }

    /// A writer with `heap_bytes` of indexing memory. Only one may exist.
    ///
    /// One indexing thread: each commit then makes one segment, not one per
    /// thread, and the handler's batches are what bounds the work anyway.
    /// Segments are merged only once `MERGE_AT` of a size have gathered,
    /// so a steady stream of commits is merged a few times, not at every turn.
    pub fn writer(&self, heap_bytes: usize) -> anyhow::Result<IndexWriter> {
        let writer = self.index.writer_with_num_threads(1, heap_bytes.max(15_000_000))?;
        set_merge_policy(&writer);
        Ok(writer)
    }

    /// The fields.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The reader, for queries.
    pub fn reader(&self) -> &IndexReader {
        &self.reader
    }

    /// The Tantivy index, for its tokenizers.
    pub fn tantivy(&self) -> &Index {
        &self.index
    }

    /// The stream (`bus::stream::identity`) the index was built from, as
    /// recorded beside it; `None` when nothing is recorded.
    pub fn stream_origin(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(ORIGIN_FILE)).ok().map(|s| s.trim().to_owned())
    }

    /// Records the stream the index is built from.
    pub fn record_stream_origin(&self, identity: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.join(ORIGIN_FILE), format!("{identity}\n")).context("recording the stream's identity")
    }

    /// The stream sequence of the last committed batch; `None` for an index
    /// that never committed one (new, or wiped).
    pub fn last_sequence(&self) -> anyhow::Result<Option<u64>> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.as_deref().and_then(|p| p.parse().ok()))
    }

    /// What the index holds about these prospects (live or tombstone).
    pub fn states_by_id(&self, ids: impl IntoIterator<Item = Uuid>) -> anyhow::Result<Vec<DocState>> {
        let terms: Vec<Term> =
            ids.into_iter().map(|id| Term::from_field_text(self.fields.id, &id.to_string())).collect();
        self.states(self.fields.id, &terms)
    }

    /// The confirmed, live prospects holding these (lower-cased) e-mail
    /// addresses.
    pub fn holders_of<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Vec<DocState>> {
        let terms: Vec<Term> = keys.into_iter().map(|key| Term::from_field_text(self.fields.email_key, key)).collect();
        Ok(self.states(self.fields.email_key, &terms)?.into_iter().filter(|s| s.live && s.confirmed).collect())
    }

    /// The live documents with any of `terms` (all of `field`), each once.
    /// Each term is looked up in each segment's term dictionary: a batch's
    /// few hundred exact keys cost that many look-ups, without building a
    /// query automaton for them.
    fn states(&self, field: Field, terms: &[Term]) -> anyhow::Result<Vec<DocState>> {
        let searcher = self.reader.searcher();
        let mut addresses = BTreeSet::new();
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let inverted = segment.inverted_index(field)?;
            let segment_ord = u32::try_from(ordinal)?;
            for term in terms {
                let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? else { continue };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if !segment.is_deleted(doc) {
                        addresses.insert(DocAddress::new(segment_ord, doc));
                    }
                    doc = postings.advance();
                }
            }
        }
        let mut states = Vec::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            states.push(DocState::read(&doc, &self.fields)?);
        }
        Ok(states)
    }
}

/// The parts of a document the indexer decides by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocState {
    /// The prospect.
    pub id: Uuid,
    /// Live (not erased).
    pub live: bool,
    /// Stream sequence of the last event applied.
    pub seq: u64,
    /// Sign-up time.
    pub signed_up_at: DateTime,
    /// Lower-cased e-mail of a live prospect.
    pub email_key: Option<String>,
    /// Confirmed by the owner of the address.
    pub confirmed: bool,
    /// Its sign-up recorded its consent.
    pub consent_recorded: bool,
    /// A live prospect's details.
    pub details: Option<ProspectDetails>,
    /// The events applied to it.
    pub event_ids: Vec<Uuid>,
}

impl DocState {
    fn read(doc: &TantivyDocument, fields: &Fields) -> anyhow::Result<Self> {
        let text = |field| doc.get_first(field).and_then(|v| v.as_str()).map(str::to_owned);
        let id = text(fields.id).context("document without id")?.parse()?;
        let live = text(fields.state).as_deref() == Some(LIVE);
        let details = live.then(|| ProspectDetails {
            first_name: text(fields.first_name).unwrap_or_default(),
            last_name: text(fields.last_name).unwrap_or_default(),
            email: text(fields.email).unwrap_or_default().into(),
            company_name: text(fields.company),
            country: Country {
                code: text(fields.country_code).unwrap_or_default(),
                name: text(fields.country_name).unwrap_or_default(),
            },
            role: Role {
                code: text(fields.role_code).unwrap_or_default(),
                name: text(fields.role_name).unwrap_or_default(),
            },
        });
        Ok(Self {
            id,
            live,
            seq: doc.get_first(fields.seq).and_then(|v| v.as_u64()).unwrap_or_default(),
            signed_up_at: doc
                .get_first(fields.signed_up_at)
                .and_then(|v| v.as_datetime())
                .unwrap_or(DateTime::from_timestamp_secs(0)),
            email_key: text(fields.email).filter(|_| live).map(|e| messages::EmailAddress::new(e).key().to_owned()),
            confirmed: text(fields.confirmed).as_deref() == Some(YES),
            consent_recorded: text(fields.consent).as_deref() == Some(RECORDED),
            details,
            event_ids: doc
                .get_all(fields.event_ids)
                .filter_map(|v| v.as_str())
                .filter_map(|id| id.parse().ok())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_of_an_older_schema_is_made_anew_so_that_it_is_rebuilt() {
        let dir = tempfile::tempdir().expect("dir");
        let mut older = Schema::builder();
        let id = older.add_text_field("id", STRING | STORED);
        let old = Index::create_in_dir(dir.path(), older.build()).expect("old index");
        let mut writer: IndexWriter = old.writer(15_000_000).expect("writer");
        writer.add_document(tantivy::doc!(id => "x")).expect("add");
        let mut commit = writer.prepare_commit().expect("prepare");
        commit.set_payload("42");
        commit.commit().expect("commit");
        drop((writer, old));

        let index = ProspectIndex::open(dir.path()).expect("opened");
        assert_eq!(index.tantivy().schema(), schema().0, "the current schema");
        assert_eq!(index.last_sequence().expect("metas"), None, "new, so it replays the stream");
        let mut writer = index.writer(15_000_000).expect("writer");
        let mut commit = writer.prepare_commit().expect("prepare");
        commit.set_payload("7");
        commit.commit().expect("commit");
        drop((writer, index));
        let again = ProspectIndex::open(dir.path()).expect("opened again");
        assert_eq!(again.last_sequence().expect("metas"), Some(7), "an index of the current schema is kept");
    }
}
