//! Making sure the event stream exists with the configured settings.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::settings::StreamSettings;

/// The JetStream stream configuration that [`StreamSettings`] describe:
/// file storage (unless `memory`), limits retention so history stays
/// available for replay, and a de-duplication window for `Nats-Msg-Id`.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects.clone()],
        retention: stream::RetentionPolicy::Limits,
        storage: if settings.memory { stream::StorageType::Memory } else { stream::StorageType::File },
        num_replicas: settings.replicas,
        max_age: Duration::from_secs(settings.max_age_days * 24 * 3600),
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: Duration::from_secs(settings.duplicate_window_secs.max(1)),
        description: Some(format!("Signup: {}", settings.subjects)),
        ..Default::default()
    }
}

/// Creates the stream, or updates it to the configured settings when it
/// exists; only looks it up when `settings.manage` is off. Safe to call from several services starting at once: creating a
/// stream that another service has just created with the same settings
/// succeeds, and a lost race is retried once as an update.
pub async fn ensure_stream(js: &jetstream::Context, settings: &StreamSettings) -> anyhow::Result<stream::Stream> {
    use anyhow::Context as _;

    let config = stream_config(settings);
    if !settings.manage {
        return js
            .get_stream(&config.name)
            .await
            .with_context(|| format!("looking up stream {} (not managed here)", config.name));
    }
    if let Err(first) = js.create_or_update_stream(config.clone()).await {
        tracing::debug!(error = %first, stream = %config.name, "stream create raced; retrying as update");
        js.create_or_update_stream(config.clone())
            .await
            .with_context(|| format!("creating or updating stream {}", config.name))?;
    }
    js.get_stream(&config.name).await.with_context(|| format!("looking up stream {}", config.name))
}

/// Creates or updates the dead-letter stream (`PROSPECTS_DLQ`, `dlq.prospect.>`):
/// file storage, limits retention, the same replicas as the event stream.
pub async fn ensure_dlq_stream(js: &jetstream::Context, events: &StreamSettings) -> anyhow::Result<stream::Stream> {
    let settings = StreamSettings {
        name: dlq_stream_name(events),
        subjects: messages::streams::DLQ_SUBJECTS.to_owned(),
        max_age_days: 0,
        ..events.clone()
    };
    ensure_stream(js, &settings).await
}

/// The dead-letter stream's name for an event stream (`PROSPECTS_DLQ`).
pub fn dlq_stream_name(events: &StreamSettings) -> String {
    format!("{}_DLQ", events.name)
}
