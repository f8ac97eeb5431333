//! The bucket that spends each proof once (`WEB_CHALLENGES`), shared by
//! every replica.

use anyhow::Context as _;
use bus::async_nats::jetstream::{self, kv};
use chrono::Utc;
use tokio::sync::OnceCell;

use super::{BotCheckSettings, Refused, Ticket, USED_BUCKET, count};

/// Why a proof could not be spent.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// Used already (by this replica or another).
    #[error("the proof was used already")]
    Replayed,
    /// The bucket does not answer now: try again later (503).
    #[error("the bucket of used proofs is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
}

/// The bucket of used proofs (`WEB_CHALLENGES`), opened on first use.
pub struct UsedProofs {
    settings: BotCheckSettings,
    js: jetstream::Context,
    /// Create the bucket when opening it (`nats.stream.manage`).
    manage: bool,
    replicas: usize,
    used: OnceCell<kv::Store>,
}

impl UsedProofs {
    /// The bucket for `settings`, over `js`, shaped like the event stream
    /// (`stream`: its replicas, and whether services make what they use).
    pub fn new(settings: &BotCheckSettings, js: jetstream::Context, stream: &bus::StreamSettings) -> Self {
        Self { settings: settings.clone(), js, manage: stream.manage, replicas: stream.replicas, used: OnceCell::new() }
    }

    /// Spends `ticket`: recorded as used, so it counts once, whichever
    /// replica sees it again.
    pub async fn spend(&self, ticket: &Ticket) -> Result<(), SpendError> {
        let used = self.bucket().await.map_err(SpendError::Unavailable)?;
        match used.create(&ticket.key, Utc::now().timestamp_millis().to_string().into()).await {
            Ok(_) => {
                count(ticket.way, "passed");
                Ok(())
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                count(ticket.way, Refused::Replayed.name());
                Err(SpendError::Replayed)
            }
            Err(error) => Err(SpendError::Unavailable(anyhow::Error::new(error).context("recording a used proof"))),
        }
    }

    /// Creates the bucket of used proofs, or updates it to these settings: a
    /// deployment's set-up step (`signup-web buckets`), for a NATS user that
    /// may manage streams.
    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let create = || self.js.create_or_update_key_value(self.settings.bucket(self.replicas));
        bus::stream::patiently(USED_BUCKET, create)
            .await
            .with_context(|| format!("creating or updating the key-value bucket {USED_BUCKET}"))?;
        Ok(())
    }

    /// The bucket of used proofs, opened on first use. One that keeps its
    /// records for less than a proof lives would let a proof count twice:
    /// it is refused (run `signup-web buckets` again after raising the
    /// lifetime).
    async fn bucket(&self) -> anyhow::Result<&kv::Store> {
        self.used
            .get_or_try_init(|| async {
                let store = if self.manage {
                    self.js.create_or_update_key_value(self.settings.bucket(self.replicas)).await?
                } else {
                    self.js.get_key_value(USED_BUCKET).await?
                };
                let mut info = self.js.get_stream(format!("KV_{USED_BUCKET}")).await?;
                let kept = info.info().await?.config.max_age;
                anyhow::ensure!(
                    kept.is_zero() || kept >= self.settings.lifetime(),
                    "{USED_BUCKET} keeps used proofs for {kept:?}, less than web.bot_check.lifetime_secs: \
                     run `signup-web buckets`"
                );
                Ok(store)
            })
            .await
            .with_context(|| {
                format!("opening the key-value bucket {USED_BUCKET} (a deployment makes it: signup-web buckets)")
            })
    }
}
