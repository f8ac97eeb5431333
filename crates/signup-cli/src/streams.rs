//! `signup streams`: create the event and dead-letter streams, or update
//! them to the configured settings.

use std::io::Write;

use bus::async_nats::Client;
use bus::settings::StreamSettings;

use crate::Settings;

/// Makes both streams and says how each stands.
pub async fn run(client: &Client, settings: &Settings, out: &mut impl Write) -> anyhow::Result<()> {
    let js = bus::async_nats::jetstream::new(client.clone());
    let stream = StreamSettings { manage: true, ..settings.nats.stream.clone() };
    for info in [bus::ensure_stream(&js, &stream).await?, bus::stream::ensure_dlq_stream(&js, &stream).await?] {
        let config = &info.cached_info().config;
        writeln!(
            out,
            "stream {} ready: subjects {:?}, replicas {}, at most {}, kept {}, when full: refuse new messages",
            config.name,
            config.subjects,
            config.num_replicas,
            match config.max_bytes {
                bytes if bytes < 0 => "unlimited in size".to_owned(),
                bytes => format!("{} MiB", bytes / (1024 * 1024)),
            },
            match config.max_age.as_secs() {
                0 => "forever".to_owned(),
                secs => format!("{} days", secs / 86_400),
            },
        )?;
    }
    Ok(())
}
