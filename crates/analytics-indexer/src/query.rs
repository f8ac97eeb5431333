//! Questions the dashboard and the API ask the index: the summary (counts by
//! country, role and day) and the paged search.

use std::ops::Bound;

use chrono::{NaiveDate, TimeZone, Utc};
use serde::Serialize;
use tantivy::aggregation::agg_result::{AggregationResult, AggregationResults, BucketResult};
use tantivy::aggregation::{AggregationCollector, Key};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DateTime, Order, TantivyDocument, Term};
use uuid::Uuid;

use crate::index::{KEY_SEPARATOR, LIVE, NOT_RECORDED, ProspectIndex, YES};

/// Sign-up dates to count, both ends included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DateRange {
    /// First day included.
    pub from: Option<NaiveDate>,
    /// Last day included.
    pub to: Option<NaiveDate>,
}

/// `GET /api/analytics/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Live prospects in the range, confirmed or not.
    pub total: u64,
    /// Of those, confirmed by the owner of their address.
    pub confirmed: u64,
    /// Of those, still waiting for confirmation.
    pub unconfirmed: u64,
    /// Of those, signed up before consent was recorded (their sign-ups are
    /// version 1 events, upcast): counted apart, since nothing shows what
    /// they agreed to.
    pub before_consent_records: u64,
    /// Per country, most first.
    pub by_country: Vec<Group>,
    /// Per role, most first.
    pub by_role: Vec<Group>,
    /// Per day, oldest first (days without sign-ups inside the span included).
    pub by_day: Vec<Day>,
}

/// One country or role and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Group {
    /// Code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Prospects.
    pub count: u64,
}

/// One day and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Sign-ups that day.
    pub count: u64,
}

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Words matched (as prefixes) against names and company.
    pub text: String,
    /// Country code.
    pub country: Option<String>,
    /// Role code.
    pub role: Option<String>,
    /// Sign-up dates.
    pub range: DateRange,
    /// 1-based page.
    pub page: usize,
}

/// Results per page.
pub const PAGE_SIZE: usize = 20;

/// One page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    /// Matches in all pages.
    pub total: usize,
    /// This page (1-based).
    pub page: usize,
    /// Results per page.
    pub page_size: usize,
    /// The prospects on this page: newest first without words, best match first with.
    pub items: Vec<Hit>,
}

/// One prospect found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// Id.
    pub prospect_id: Uuid,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail.
    pub email: String,
    /// Company, if given.
    pub company_name: Option<String>,
    /// Country.
    #[schema(value_type = crate::schema::Reference)]
    pub country: messages::Country,
    /// Role.
    #[schema(value_type = crate::schema::Reference)]
    pub role: messages::Role,
    /// Sign-up time, RFC 3339.
    pub signed_up_at: String,
    /// Confirmed by the owner of the address.
    pub confirmed: bool,
}

impl ProspectIndex {
    fn live_in(&self, range: DateRange) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Must,
            Box::new(TermQuery::new(Term::from_field_text(f.state, LIVE), IndexRecordOption::Basic)),
        )];
        if range.from.is_some() || range.to.is_some() {
            // The index keeps nanoseconds in an i64 (years 1677 to 2262): a
            // day outside them bounds nothing, so it is taken as the nearest
            // representable instant (multiplying would overflow).
            let day = |d: NaiveDate| {
                let start = Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
                let nanos = start.timestamp().saturating_mul(1_000_000_000);
                Term::from_field_date(f.signed_up_at, DateTime::from_timestamp_nanos(nanos))
            };
            let lower = range.from.map_or(Bound::Unbounded, |d| Bound::Included(day(d)));
            let upper = range.to.and_then(|d| d.succ_opt()).map_or(Bound::Unbounded, |d| Bound::Excluded(day(d)));
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lower, upper))));
        }
        clauses
    }

    /// Counts live prospects in the range: in total, confirmed and not, and
    /// by country, role and day.
    pub fn summary(&self, range: DateRange) -> anyhow::Result<Summary> {
        let query = BooleanQuery::new(self.live_in(range));
        let aggregations = serde_json::from_value(serde_json::json!({
            "byCountry": { "terms": { "field": "country_key", "size": 1000 } },
            "byRole": { "terms": { "field": "role_key", "size": 1000 } },
            "byDay": { "date_histogram": { "field": "signed_up_at", "fixed_interval": "1d" } },
        }))?;
        let collector = AggregationCollector::from_aggs(aggregations, Default::default());
        let searcher = self.reader().searcher();
        let (total, results) = searcher.search(&query, &(Count, collector))?;
        let mut confirmed = self.live_in(range);
        confirmed.push((
            Occur::Must,
            Box::new(TermQuery::new(Term::from_field_text(self.fields().confirmed, YES), IndexRecordOption::Basic)),
        ));
        let confirmed = searcher.search(&BooleanQuery::new(confirmed), &Count)? as u64;
        let mut unrecorded = self.live_in(range);
        unrecorded.push((
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(self.fields().consent, NOT_RECORDED),
                IndexRecordOption::Basic,
            )),
        ));
        let before_consent_records = searcher.search(&BooleanQuery::new(unrecorded), &Count)? as u64;
        Ok(Summary {
            total: total as u64,
            confirmed,
            unconfirmed: (total as u64).saturating_sub(confirmed),
            before_consent_records,
            by_country: groups(&results, "byCountry"),
            by_role: groups(&results, "byRole"),
            by_day: days(&results),
        })
    }

    /// One page of live prospects matching `search`.
    pub fn search(&self, search: &Search) -> anyhow::Result<SearchPage> {
        let f = self.fields();
        let mut clauses = self.live_in(search.range);
        let words = self.words(&search.text)?;
        for word in &words {
            let either: Vec<(Occur, Box<dyn Query>)> = [f.full_name, f.company]
                .into_iter()
                .map(|field| {
                    let prefix = FuzzyTermQuery::new_prefix(Term::from_field_text(field, word), 0, true);
                    (Occur::Should, Box::new(prefix) as Box<dyn Query>)
                })
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        for (field, code) in [(f.country_code, &search.country), (f.role_code, &search.role)] {
            if let Some(code) = code {
                clauses.push((
                    Occur::Must,
                    Box::new(TermQuery::new(Term::from_field_text(field, code), IndexRecordOption::Basic)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let page = search.page.max(1);
        let top = TopDocs::with_limit(PAGE_SIZE).and_offset((page - 1) * PAGE_SIZE);
        let searcher = self.reader().searcher();
        let (total, addresses) = if words.is_empty() {
            let newest_first = top.order_by_fast_field::<DateTime>("signed_up_at", Order::Desc);
            let (total, hits) = searcher.search(&query, &(Count, newest_first))?;
            (total, hits.into_iter().map(|(_, address)| address).collect::<Vec<_>>())
        } else {
            let (total, hits) = searcher.search(&query, &(Count, top.order_by_score()))?;
            (total, hits.into_iter().map(|(_, address)| address).collect())
        };
        let mut items = Vec::with_capacity(addresses.len());
        for address in addresses {
            items.push(self.hit(&searcher.doc(address)?)?);
        }
        Ok(SearchPage { total, page, page_size: PAGE_SIZE, items })
    }

    /// The words of `text` as the index tokenises names and companies.
    fn words(&self, text: &str) -> anyhow::Result<Vec<String>> {
        let mut analyzer = self.tantivy().tokenizer_for_field(self.fields().full_name)?;
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        stream.process(&mut |token| words.push(token.text.clone()));
        Ok(words)
    }

    fn hit(&self, doc: &TantivyDocument) -> anyhow::Result<Hit> {
        let f = self.fields();
        let text = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let signed_up_at = doc
            .get_first(f.signed_up_at)
            .and_then(|v| v.as_datetime())
            .and_then(|t| chrono::DateTime::<Utc>::from_timestamp_micros(t.into_timestamp_micros()))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let company = text(f.company);
        Ok(Hit {
            prospect_id: text(f.id).parse()?,
            first_name: text(f.first_name),
            last_name: text(f.last_name),
            email: text(f.email),
            company_name: (!company.is_empty()).then_some(company),
            country: messages::Country { code: text(f.country_code), name: text(f.country_name) },
            role: messages::Role { code: text(f.role_code), name: text(f.role_name) },
            signed_up_at,
            confirmed: text(f.confirmed) == YES,
        })
    }
}

fn buckets<'a>(results: &'a AggregationResults, name: &str) -> Option<&'a BucketResult> {
    match results.0.get(name)? {
        AggregationResult::BucketResult(bucket) => Some(bucket),
        AggregationResult::MetricResult(_) => None,
    }
}

fn groups(results: &AggregationResults, name: &str) -> Vec<Group> {
    let mut out: Vec<Group> = match buckets(results, name) {
        Some(BucketResult::Terms { buckets, .. }) => buckets
            .iter()
            .filter_map(|b| match &b.key {
                Key::Str(key) => {
                    let (code, name) = key.split_once(KEY_SEPARATOR).unwrap_or((key.as_str(), key.as_str()));
                    Some(Group { code: code.to_owned(), name: name.to_owned(), count: b.doc_count })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out
}

fn days(results: &AggregationResults) -> Vec<Day> {
    match buckets(results, "byDay") {
        Some(BucketResult::Histogram { buckets }) => {
            let entries: Vec<_> = match buckets {
                tantivy::aggregation::agg_result::BucketEntries::Vec(v) => v.iter().collect(),
                tantivy::aggregation::agg_result::BucketEntries::HashMap(m) => m.values().collect(),
            };
            let mut days: Vec<Day> = entries
                .into_iter()
                .filter_map(|b| {
                    let millis = match b.key {
                        Key::F64(ms) => ms as i64,
                        Key::I64(ms) => ms,
                        Key::U64(ms) => i64::try_from(ms).ok()?,
                        _ => return None,
                    };
                    let date = chrono::DateTime::<Utc>::from_timestamp_millis(millis)?.date_naive();
                    Some(Day { date: date.to_string(), count: b.doc_count })
                })
                .collect();
            days.sort_by(|a, b| a.date.cmp(&b.date));
            days
        }
        _ => Vec::new(),
    }
}
