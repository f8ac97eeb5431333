//! Reference data (countries and roles) from the `prospects` service, kept in
//! a cache that a background task refreshes.
//!
//! Requests never wait for the service: they read the current lists. Those
//! are the built-in lists at a cold start, the service's lists once it
//! answered, and the last known lists when it later stops answering.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bus::async_nats::Client;
use bus::request::{RequestError, ask};
use messages::service::{ReferenceCountries, ReferenceRoles};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;

/// The current reference lists, shared by all workers.
pub struct ReferenceData {
    current: RwLock<Arc<Catalog>>,
}

impl ReferenceData {
    /// Starts with the built-in lists.
    pub fn builtin() -> Self {
        Self { current: RwLock::new(Arc::new(Catalog::builtin())) }
    }

    /// The lists to use now.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().map(|c| Arc::clone(&c)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    fn replace(&self, catalog: Catalog) {
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(catalog),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(catalog),
        }
    }

    /// Refreshes from the service every `ttl` (retrying sooner after a
    /// failure), each request bounded by `timeout`, until `shutdown`.
    pub async fn keep_fresh(
        self: Arc<Self>,
        client: Client,
        ttl: Duration,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let mut loaded = false;
        let mut warned = false;
        loop {
            let wait = match fetch(&client, timeout).await {
                Ok(catalog) => {
                    if !loaded {
                        tracing::info!(
                            countries = catalog.countries().len(),
                            roles = catalog.roles().len(),
                            "reference data loaded from the prospects service"
                        );
                    }
                    self.replace(catalog);
                    loaded = true;
                    warned = false;
                    ttl
                }
                Err(error) => {
                    if !warned {
                        if loaded {
                            tracing::warn!(%error, "cannot refresh reference data; serving the last known lists");
                        } else {
                            tracing::warn!(%error, "no answer from the prospects service; using the built-in reference lists");
                        }
                        warned = true;
                    }
                    ttl.min(Duration::from_secs(2))
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

async fn fetch(client: &Client, timeout: Duration) -> Result<Catalog, RequestError> {
    let (countries, roles) = tokio::try_join!(
        ask::<ReferenceCountries>(client, &(), timeout),
        ask::<ReferenceRoles>(client, &(), timeout),
    )?;
    if countries.is_empty() || roles.is_empty() {
        return Err(RequestError::Other("the service sent empty reference lists".into()));
    }
    Ok(Catalog::new(countries, roles))
}
