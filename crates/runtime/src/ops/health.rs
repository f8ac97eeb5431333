//! `GET /healthz` (alive) and `GET /readyz` (NATS and every part up).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use async_nats::Client;

use bus::connection::is_connected;
use bus::ready::ReadyFlag;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// What `/readyz` checks: the NATS connection and any named [`ReadyFlag`]s.
#[derive(Debug, Clone)]
pub struct Readiness {
    nats: Client,
    parts: BTreeMap<&'static str, ReadyFlag>,
}

impl Readiness {
    /// Readiness that needs NATS connected.
    pub fn new(nats: Client) -> Self {
        Self { nats, parts: BTreeMap::new() }
    }

    /// Adds a part that must be up too, and returns its flag (down until set).
    pub fn part(&mut self, name: &'static str) -> ReadyFlag {
        self.parts.entry(name).or_default().clone()
    }

    /// The parts that are not ready, `nats` included; empty when ready.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let nats = (!is_connected(&self.nats)).then_some("nats");
        nats.into_iter().chain(self.parts.iter().filter(|(_, flag)| !flag.is_set()).map(|(name, _)| *name)).collect()
    }
}

/// `GET /readyz` for an app that holds a [`Readiness`] as app data: 200 when
/// ready, else 503 naming what is missing.
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let waiting = readiness.waiting_for();
    if waiting.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "not ready", "waiting_for": waiting }))
    }
}
