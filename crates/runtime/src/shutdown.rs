//! The shutdown signal: SIGTERM or Ctrl-C cancels a token that servers and
//! consumers watch.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or Ctrl-C.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: finishing work in hand");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs `work` to its end, but once `shutdown` fires gives it at most
/// `bound` more; returns `None` when it had to be abandoned. Abandoning is
/// safe for a consumer: whatever it had not acked is redelivered, and a batch
/// is applied in one transaction or not at all.
pub async fn bounded<T>(
    work: impl std::future::Future<Output = T>,
    shutdown: &CancellationToken,
    bound: std::time::Duration,
) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => return Some(done),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(bound, work).await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::warn!(?bound, "work in hand did not finish in time; leaving it for redelivery");
            None
        }
    }
}
