//! Readiness (liveness is `runtime::ops::healthz`).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// `GET /readyz`: NATS is connected and the event stream exists, so a
/// sign-up would be accepted now. A missing stream is (re)created here, so
/// the service heals by itself after NATS loses its store.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let connected = bus::is_connected(state.publisher.client());
    let stream = connected && stream_present(&state).await;
    let body = json!({
        "status": if stream { "ready" } else { "not ready" },
        "nats": if connected { "connected" } else { "disconnected" },
        "stream": if stream { "present" } else if connected { "missing" } else { "unknown" },
    });
    if stream { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

async fn stream_present(state: &AppState) -> bool {
    let check = async {
        if state.jetstream.get_stream(&state.stream.name).await.is_ok() {
            return true;
        }
        bus::ensure_stream(&state.jetstream, &state.stream).await.is_ok()
    };
    tokio::time::timeout(Duration::from_secs(2), check).await.unwrap_or(false)
}
