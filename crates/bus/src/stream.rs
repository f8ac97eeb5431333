//! Making sure the event stream exists with the configured settings.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::backoff::Backoff;
use crate::settings::StreamSettings;

/// The JetStream stream configuration that [`StreamSettings`] describe:
/// file storage (unless `memory`), limits retention so history stays
/// available for replay, a de-duplication window for `Nats-Msg-Id`, and a
/// size limit past which new messages are refused (`DiscardPolicy::New`:
/// never silently dropping old ones). Direct gets are allowed, so that a
/// handler may ask whether a prospect was erased (its permissions name only
/// those subjects).
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects.clone()],
        retention: stream::RetentionPolicy::Limits,
        storage: if settings.memory { stream::StorageType::Memory } else { stream::StorageType::File },
        num_replicas: settings.replicas,
        max_age: Duration::from_secs(settings.max_age_days * 24 * 3600),
        max_bytes: megabytes(settings.max_bytes_mb),
        max_messages: -1,
        max_messages_per_subject: -1,
        discard: stream::DiscardPolicy::New,
        allow_direct: true,
        duplicate_window: Duration::from_secs(settings.duplicate_window_secs.max(1)),
        description: Some(format!("Signup: {}", settings.subjects)),
        // What the stream holds, for operators' tools (NATS 2.10 metadata).
        metadata: [
            ("signup.subjects".to_owned(), settings.subjects.clone()),
            (
                "signup.contract".to_owned(),
                "CloudEvents 1.0 in NATS headers, JSON payloads (crate messages)".to_owned(),
            ),
        ]
        .into(),
        ..Default::default()
    }
}

/// How long a set-up step ([`patiently`]) waits for JetStream to answer.
pub const SET_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a set-up step (making a stream or a key-value bucket, which the
/// deployment's set-up jobs do once) again while JetStream does not answer
/// in time — a server still starting, or slow under load — for up to
/// [`SET_UP_PATIENCE`]. Any other error ends it at once. The steps are
/// "create or update", so running one again is safe.
pub async fn patiently<T, E, F, Fut>(what: &str, mut step: F) -> Result<T, E>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + SET_UP_PATIENCE;
    let mut pause = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match step().await {
            Err(error) if timed_out(&error) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    %error,
                    what,
                    "JetStream did not answer in time (a server under load or starting, or a NATS user \
                     without the right to ask, whose request gets no answer); trying again"
                );
                tokio::time::sleep(pause.next_delay()).await;
            }
            outcome => return outcome,
        }
    }
}

/// Whether JetStream left a request unanswered: an error whose chain ends in
/// async-nats' "timed out" (which wraps it in a kind of its own per call: a
/// bucket's creation reports a stream lookup's timeout as a JetStream error).
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| error.to_string().ends_with("timed out"))
}

/// Creates the stream, or updates it to the configured settings when it
/// exists; only looks it up when `settings.manage` is off. Refuses a NATS
/// server older than [`crate::connection::MIN_SERVER_VERSION`]. Safe to call
/// from several services starting at once: creating a
/// stream that another service has just created with the same settings
/// succeeds, and a lost race is retried once as an update. A server that
/// leaves the request unanswered is waited for ([`patiently`]), once.
pub async fn ensure_stream(js: &jetstream::Context, settings: &StreamSettings) -> anyhow::Result<stream::Stream> {
    use anyhow::Context as _;

    let config = stream_config(settings);
    let found = js.get_stream(&config.name).await;
    if crate::connection::is_connected(&js.client()) {
        crate::connection::require_supported_server(&js.client())?;
    }
    if !settings.manage {
        return found.with_context(|| format!("looking up stream {} (not managed here)", config.name));
    }
    let create = || js.create_or_update_stream(config.clone());
    match patiently(&config.name, create).await {
        Ok(_) => {}
        // Unanswered for the whole patience already: no second wait.
        Err(error) if timed_out(&error) => {
            return Err(error).with_context(|| format!("creating or updating stream {}", config.name));
        }
        Err(first) => {
            tracing::debug!(error = %first, stream = %config.name, "stream create raced; retrying as update");
            patiently(&config.name, create)
                .await
                .with_context(|| format!("creating or updating stream {}", config.name))?;
        }
    }
    js.get_stream(&config.name).await.with_context(|| format!("looking up stream {}", config.name))
}

/// Creates or updates the dead-letter stream (`PROSPECTS_DLQ`, `dlq.prospect.>`):
/// file storage, limits retention, the same replicas as the event stream,
/// kept `dead_letter_max_age_days` (30) and at most
/// `dead_letter_max_bytes_mb` (512 MiB).
pub async fn ensure_dlq_stream(js: &jetstream::Context, events: &StreamSettings) -> anyhow::Result<stream::Stream> {
    ensure_stream(js, &dlq_settings(events)).await
}

/// The dead-letter stream's settings: those of the event stream, with the
/// dead letters' own age and size limits.
pub fn dlq_settings(events: &StreamSettings) -> StreamSettings {
    StreamSettings {
        name: dlq_stream_name(events),
        subjects: messages::streams::DLQ_SUBJECTS.to_owned(),
        max_age_days: events.dead_letter_max_age_days,
        max_bytes_mb: events.dead_letter_max_bytes_mb,
        ..events.clone()
    }
}

fn megabytes(mb: i64) -> i64 {
    if mb < 0 { -1 } else { mb.saturating_mul(1024 * 1024) }
}

/// What tells one stream from another of the same name: a stream that is
/// recreated, restored elsewhere or served by another server numbers its
/// events from 1 again, so state built from one (positions, "the last event
/// applied") means nothing against the other. Its name and creation time.
pub fn identity(info: &stream::Info) -> String {
    format!("{} created {}", info.config.name, info.created)
}

/// The event stream, once it exists: created or updated when `settings.manage`
/// is on, else looked up; retried with a growing pause until NATS has it.
/// `None` once `shutdown` is cancelled first.
pub async fn wait_for_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<stream::Stream> {
    let mut pause = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match ensure_stream(js, settings).await {
            Ok(stream) => return Some(stream),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), stream = %settings.name, "the stream is not there yet; retrying")
            }
        }
        if !pause.wait(shutdown).await {
            return None;
        }
    }
}

/// Reports the fill of the streams as gauges, every `every` until
/// `shutdown`: `signup_stream_bytes{stream}`, `signup_stream_messages{stream}`
/// and `signup_stream_max_bytes{stream}` (-1 without a limit). A full event
/// stream refuses sign-ups, so this is what an alert watches.
pub async fn report_usage(
    js: jetstream::Context,
    streams: Vec<String>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        for name in &streams {
            match js.get_stream(name).await {
                Ok(mut stream) => match stream.info().await {
                    Ok(info) => {
                        let stream = name.clone();
                        metrics::gauge!("signup_stream_bytes", "stream" => stream.clone()).set(info.state.bytes as f64);
                        metrics::gauge!("signup_stream_messages", "stream" => stream.clone())
                            .set(info.state.messages as f64);
                        metrics::gauge!("signup_stream_max_bytes", "stream" => stream)
                            .set(info.config.max_bytes as f64);
                    }
                    Err(error) => tracing::debug!(%error, stream = %name, "cannot read the stream's usage"),
                },
                Err(error) => tracing::debug!(%error, stream = %name, "cannot read the stream's usage"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The dead-letter stream's name for an event stream (`PROSPECTS_DLQ`).
pub fn dlq_stream_name(events: &StreamSettings) -> String {
    format!("{}_DLQ", events.name)
}
