//! What the mailer remembers, in NATS key-value buckets of its own:
//!
//! - `MAILER_SENT`: one key per mail sent (`<event id>.<slot>`), so a
//!   redelivered or replayed event sends nothing twice; per address and
//!   kind of mail (`waiting.<HMAC>`), the newest one waiting for its
//!   per-address budget; the budgets of mails to unconfirmed addresses
//!   (`budget.total`, `budget.domain.<HMAC>`, see [`crate::budget`]) and the
//!   turn of each mail they hold back (`scheduled.<event id>.<slot>`).
//!   Kept as long as a link in such a mail could still be used (`[links]
//!   confirm_within_secs`) plus a day; the mailer never sends a mail for an
//!   event older than that.
//! - `MAILER_RATE`: per address and budget, when it was last mailed, for the
//!   per-address limits. Keys are HMACs of the address (and the budget), not
//!   the address, and entries live only as long as the window.
//! - `MAILER_SUPPRESSED` (`messages::streams::SUPPRESSED_BUCKET`): the
//!   addresses whose owners said "it wasn't me", as HMACs
//!   (`links::Links::suppression_key`), each kept `mailer.suppress_days`.
//!   signup-web writes them; the mailer only reads them, and sends nothing
//!   about a sign-up to such an address.
//!
//! Every bucket has a size limit (`mailer.bucket_max_mb`), so that
//! JetStream reserves their room and no bucket can take what the event
//! stream may grow to. A deployment creates them once with an operator's
//! rights (`mailer buckets`, beside `signup streams`): the mailer's own NATS
//! user may read and write their keys only, never reconfigure a bucket (a
//! source added to it would copy data where erasure cannot reach). With
//! `nats.stream.manage` on (development) the mailer creates them itself.

use std::time::Duration;

use anyhow::Context as _;
use bus::async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use links::Links;
use tokio::sync::OnceCell;

/// Bucket of the mails sent, by event id and slot.
pub const SENT_BUCKET: &str = messages::streams::SENT_BUCKET;
/// Bucket of the per-address send times.
pub const RATE_BUCKET: &str = "MAILER_RATE";
/// Bucket of the suppressed addresses (written by signup-web).
pub const SUPPRESSED_BUCKET: &str = messages::streams::SUPPRESSED_BUCKET;

/// Whose action a mail answers, which decides the budget it is counted in:
/// so that nobody who merely knows an address can use up the mails its owner
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Anyone could have caused it: a sign-up, a lost-link request, an
    /// address typed into a change (`mailer.per_address_limit`).
    Anyone,
    /// Its owner caused it on the manage page, with a link mailed to the
    /// address: the notice of an address change, a new link that ends the
    /// old ones (`mailer.per_address_owner_limit`).
    Owner,
}

/// How the buckets are made: their shape, and whether the mailer makes them.
#[derive(Debug, Clone)]
pub struct Buckets {
    /// Copies on a cluster (the event stream's replicas).
    pub replicas: usize,
    /// How long a sent record is kept.
    pub keep_sent: Duration,
    /// The per-address window.
    pub window: Duration,
    /// How long a suppression lasts (`mailer.suppress_days`).
    pub keep_suppressed: Duration,
    /// Each bucket's size limit, in bytes.
    pub max_bytes: i64,
    /// Create (or update) the buckets when opening them; otherwise they
    /// must exist (`mailer buckets`).
    pub manage: bool,
}

impl Buckets {
    fn config(&self, name: &str, max_age: Duration) -> kv::Config {
        kv::Config {
            bucket: name.to_owned(),
            description: "the mailer's memory".to_owned(),
            history: 1,
            max_age,
            max_bytes: self.max_bytes,
            num_replicas: self.replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Each bucket, with how long it keeps an entry.
    fn all(&self) -> [(&'static str, Duration); 3] {
        [(SENT_BUCKET, self.keep_sent), (RATE_BUCKET, self.window), (SUPPRESSED_BUCKET, self.keep_suppressed)]
    }

    /// Creates the buckets, or updates them to these settings: a set-up
    /// step, for a NATS user that may manage streams.
    pub async fn ensure(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        for (name, max_age) in self.all() {
            let create = || js.create_or_update_key_value(self.config(name, max_age));
            bus::stream::patiently(name, create)
                .await
                .with_context(|| format!("creating or updating the key-value bucket {name}"))?;
        }
        Ok(())
    }
}

/// A held-back mail's turn in the budget of mails to unconfirmed addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// When it may go (unix milliseconds).
    pub at: i64,
    /// Its domain's turn only: the total is taken when it comes (so a
    /// flooded domain uses up nobody else's share).
    pub of_domain: bool,
}

/// The buckets, opened on first use.
pub struct Records {
    js: jetstream::Context,
    buckets: Buckets,
    links: Links,
    sent: OnceCell<kv::Store>,
    rate: OnceCell<kv::Store>,
    suppressed: OnceCell<kv::Store>,
}

impl Records {
    /// Records on `js` with these buckets; the secret of `links` keys the
    /// digests that stand for addresses.
    pub fn new(js: jetstream::Context, buckets: Buckets, links: Links) -> Self {
        let cells = (OnceCell::new(), OnceCell::new(), OnceCell::new());
        Self { js, buckets, links, sent: cells.0, rate: cells.1, suppressed: cells.2 }
    }

    /// Whether the owner of `address` said "it wasn't me" (and the
    /// suppression has not ended): then nothing about a sign-up goes to it.
    pub async fn suppressed(&self, address: &str) -> anyhow::Result<bool> {
        let bucket = self.bucket(&self.suppressed, SUPPRESSED_BUCKET, self.buckets.keep_suppressed).await?;
        let entry = bucket.entry(self.links.suppression_key(address)).await.context("reading the suppression list")?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    async fn bucket<'a>(
        &self,
        cell: &'a OnceCell<kv::Store>,
        name: &str,
        max_age: Duration,
    ) -> anyhow::Result<&'a kv::Store> {
        cell.get_or_try_init(|| async {
            if self.buckets.manage {
                self.js
                    .create_or_update_key_value(self.buckets.config(name, max_age))
                    .await
                    .map_err(anyhow::Error::from)
            } else {
                self.js.get_key_value(name).await.map_err(anyhow::Error::from)
            }
            .with_context(|| format!("opening the key-value bucket {name} (a deployment creates it: mailer buckets)"))
        })
        .await
    }

    /// Whether the mail `key` was sent (or deliberately skipped) already.
    pub async fn done(&self, key: &str) -> anyhow::Result<bool> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        Ok(sent.get(key).await.context("reading a sent record")?.is_some())
    }

    /// Records that the mail `key` is done: `outcome` says how.
    pub async fn record(&self, key: &str, outcome: &str) -> anyhow::Result<()> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        sent.put(key, outcome.to_owned().into()).await.context("writing a sent record")?;
        Ok(())
    }

    /// Takes one of `limit` mails that `address` may get per window from
    /// `budget`, at `now`: `None` when taken, or how long until one is free
    /// again. Safe with several instances: the entry is replaced only if
    /// nobody changed it meanwhile.
    pub async fn take(
        &self,
        address: &str,
        budget: Budget,
        limit: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Duration>> {
        let rate = self.bucket(&self.rate, RATE_BUCKET, self.buckets.window).await?;
        let key = self.rate_key(address, budget);
        let window = i64::try_from(self.buckets.window.as_millis()).unwrap_or(i64::MAX);
        let window_start = now.timestamp_millis() - window;
        // Most addresses have had no mail this window: their entry is made
        // at once, without reading first (a write fails when the entry
        // exists, and then it is read).
        if limit > 0 && rate.create(&key, serde_json::to_vec(&[now.timestamp_millis()])?.into()).await.is_ok() {
            return Ok(None);
        }
        for _ in 0..10 {
            let entry = rate.entry(&key).await.context("reading the address's sends")?;
            let entry = entry.filter(|e| e.operation == kv::Operation::Put);
            let mut times: Vec<i64> =
                entry.as_ref().and_then(|e| serde_json::from_slice::<Vec<i64>>(&e.value).ok()).unwrap_or_default();
            times.retain(|t| *t > window_start);
            if times.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                // Free again once the oldest send leaves the window.
                let oldest = times.iter().min().copied().unwrap_or(now.timestamp_millis());
                let wait = (oldest + window - now.timestamp_millis()).max(0);
                return Ok(Some(Duration::from_millis(u64::try_from(wait).unwrap_or_default())));
            }
            times.push(now.timestamp_millis());
            let value = serde_json::to_vec(&times)?.into();
            let written = match &entry {
                Some(entry) => rate.update(&key, value, entry.revision).await.map(drop).map_err(|e| e.to_string()),
                None => rate.create(&key, value).await.map(drop).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok(None),
                // Another instance wrote first: read again.
                Err(error) => tracing::debug!(%error, "the address's sends changed meanwhile; reading again"),
            }
        }
        anyhow::bail!("the address's sends kept changing; giving up for now")
    }

    /// Whether a newer mail of `kind` to `address` waits for its budget than
    /// the one of stream position `sequence`: then this one need not go (the
    /// person gets the newer one, as good to act on).
    pub async fn replaced(&self, address: &str, kind: &str, sequence: u64) -> anyhow::Result<bool> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        let entry = sent.entry(self.waiting_key(address, kind)).await.context("reading the waiting mail")?;
        Ok(waiting_sequence(entry.as_ref()).is_some_and(|newest| newest > sequence))
    }

    /// Notes that the mail of `kind` to `address` at stream position
    /// `sequence` waits for its budget, unless a newer one does already: so
    /// that one mail per address and kind waits at most, however many a
    /// flood sends.
    pub async fn wait_here(&self, address: &str, kind: &str, sequence: u64) -> anyhow::Result<()> {
        // Kept as long as the sent records, whatever the window: a waiting
        // mail may come back after its window's entries are gone.
        let rate = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        let key = self.waiting_key(address, kind);
        for _ in 0..10 {
            let entry = rate.entry(&key).await.context("reading the waiting mail")?;
            if waiting_sequence(entry.as_ref()).is_some_and(|newest| newest >= sequence) {
                return Ok(());
            }
            let value = sequence.to_string().into();
            let written = match entry.filter(|e| e.operation == kv::Operation::Put) {
                Some(entry) => rate.update(&key, value, entry.revision).await.map(drop).map_err(|e| e.to_string()),
                None => rate.create(&key, value).await.map(drop).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(error) => tracing::debug!(%error, "the waiting mail changed meanwhile; reading again"),
            }
        }
        anyhow::bail!("the waiting mail kept changing; giving up for now")
    }

    /// Reserves the next slot of the budget `budget` (a name, its key
    /// among the sent records), of `limit` mails per `window`, for a mail
    /// at `now` (unix milliseconds): returns when the mail may go, `now` or
    /// later. A generic cell rate: the entry holds the time by which every
    /// slot reserved so far is used, and each mail moves it one slot
    /// (`window / limit`) on; up to `limit` mails go at once when the
    /// budget is idle, then one per slot, in the order they came. Kept as
    /// long as the sent records (a backlog never outlives the links it
    /// mails), and safe with several instances (compare-and-set).
    pub async fn reserve(&self, budget: &str, limit: u32, window: Duration, now: i64) -> anyhow::Result<i64> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let slot = (window / i64::from(limit.max(1))).max(1);
        for _ in 0..20 {
            let entry = sent.entry(budget).await.context("reading a budget")?;
            let entry = entry.filter(|e| e.operation == kv::Operation::Put);
            let used_until = entry
                .as_ref()
                .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok())
                .unwrap_or(now)
                .max(now);
            let value = (used_until + slot).to_string().into();
            let written = match &entry {
                Some(entry) => sent.update(budget, value, entry.revision).await.map(drop).map_err(|e| e.to_string()),
                None => sent.create(budget, value).await.map(drop).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok((used_until + slot - window).max(now)),
                Err(error) => tracing::debug!(%error, "a budget changed meanwhile; reading again"),
            }
        }
        anyhow::bail!("a budget kept changing; giving up for now")
    }

    /// The key of the budget of mails to unconfirmed addresses at `domain`
    /// (a digest: a domain of one's own names a person).
    pub fn domain_budget(&self, domain: &str) -> String {
        format!("budget.domain.{}", self.links.address_digest("budget-domain", domain))
    }

    /// The turn of the mail `key`, held back by the budget, if it was held
    /// back.
    pub async fn scheduled(&self, key: &str) -> anyhow::Result<Option<Turn>> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        let entry = sent.entry(format!("scheduled.{key}")).await.context("reading a mail's turn")?;
        let entry = entry.filter(|e| e.operation == kv::Operation::Put);
        let Some(value) = entry.as_ref().and_then(|e| std::str::from_utf8(&e.value).ok()) else { return Ok(None) };
        let (at, of_domain) = match value.strip_suffix(".domain") {
            Some(at) => (at, true),
            None => (value, false),
        };
        Ok(at.parse().ok().map(|at| Turn { at, of_domain }))
    }

    /// Notes the mail `key`'s turn, which it keeps however often it comes
    /// back.
    pub async fn schedule(&self, key: &str, turn: Turn) -> anyhow::Result<()> {
        let sent = self.bucket(&self.sent, SENT_BUCKET, self.buckets.keep_sent).await?;
        let value = if turn.of_domain { format!("{}.domain", turn.at) } else { turn.at.to_string() };
        sent.put(format!("scheduled.{key}"), value.into()).await.context("writing a mail's turn")?;
        Ok(())
    }

    fn waiting_key(&self, address: &str, kind: &str) -> String {
        format!("waiting.{}", self.links.address_digest(&format!("waiting-{kind}"), address))
    }

    /// The bucket key of an address's budget: an HMAC, so the bucket holds
    /// no addresses.
    fn rate_key(&self, address: &str, budget: Budget) -> String {
        let use_ = match budget {
            Budget::Anyone => "rate-limit",
            Budget::Owner => "owner-rate-limit",
        };
        self.links.address_digest(use_, address)
    }
}

/// The stream position a waiting-mail entry holds.
fn waiting_sequence(entry: Option<&kv::Entry>) -> Option<u64> {
    let entry = entry.filter(|e| e.operation == kv::Operation::Put)?;
    std::str::from_utf8(&entry.value).ok()?.parse().ok()
}
