//! Indexing throughput: fills a private nats-server's stream with sign-ups,
//! then times a fresh analytics-indexer replaying them into an empty index.
//!
//! `cargo run --release -p analytics-indexer --example index_throughput [-- COUNT]`
//! (default 100,000). Prints one line of figures and exits.

use std::time::{Duration, Instant};

use analytics_indexer::{Application, Settings};
use bus::async_nats::jetstream;
use bus::settings::{NatsSettings, StreamSettings};
use bus::{EventContext, Publisher};
use chrono::Utc;
use futures::StreamExt;
use messages::{Country, ProspectDetails, ProspectSignedUp, Role};
use test_support::NatsServer;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const COUNTRIES: [(&str, &str); 4] =
    [("GB", "United Kingdom"), ("FR", "France"), ("DE", "Germany"), ("US", "United States")];
const ROLES: [(&str, &str); 3] = [("EN", "Engineer"), ("DV", "Developer"), ("MA", "Manager")];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(100_000);
    let nats = NatsServer::start().await?;
    let settings = NatsSettings { url: nats.url(), ..NatsSettings::default() };
    let client = bus::connect(&settings, "index-throughput").await?;
    while !bus::is_connected(&client) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &StreamSettings::default()).await?;

    let publisher = Publisher::new(client.clone(), "/bench", Duration::from_secs(10));
    let started = Instant::now();
    let published = futures::stream::iter(0..count)
        .map(|i| {
            let publisher = publisher.clone();
            async move {
                let (code, name) = COUNTRIES[i % COUNTRIES.len()];
                let (role, role_name) = ROLES[i % ROLES.len()];
                let event = ProspectSignedUp {
                    prospect_id: Uuid::now_v7(),
                    details: ProspectDetails {
                        first_name: format!("Visitor{i}"),
                        last_name: "Benchmark".into(),
                        email: format!("visitor{i}@example.com").into(),
                        company_name: Some(format!("Company {}", i % 1000)),
                        country: Country { code: code.into(), name: name.into() },
                        role: Role { code: role.into(), name: role_name.into() },
                    },
                    signed_up_at: Utc::now(),
                    consent: messages::Consent::NotRecorded,
                };
                publisher.publish(&event, &EventContext::new()).await
            }
        })
        .buffer_unordered(512)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    anyhow::ensure!(published == count, "only {published} of {count} published");
    let fill = started.elapsed();

    let index_dir = tempfile::tempdir()?;
    let mut indexer_settings = Settings { nats: settings.clone(), ..Settings::default() };
    indexer_settings.analytics.port = 0;
    indexer_settings.analytics.index_dir = index_dir.path().join("index");
    // The indexer refuses to start without a token (its API is closed).
    indexer_settings.analytics.token = Some(secrecy::SecretString::from("index-throughput-example-token"));
    let indexer_client = bus::connect(&settings, analytics_indexer::CONSUMER_NAME).await?;
    let app = Application::build(&indexer_settings, indexer_client)?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let stream = js.get_stream(&StreamSettings::default().name).await?;
    loop {
        if let Ok(info) = stream.consumer_info(analytics_indexer::CONSUMER_NAME).await
            && info.delivered.stream_sequence >= count as u64
            && info.num_ack_pending == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let indexing = started.elapsed();
    shutdown.cancel();
    task.await??;
    println!(
        "index_throughput: events={count} fill_secs={:.2} index_secs={:.2} events_per_sec={:.0}",
        fill.as_secs_f64(),
        indexing.as_secs_f64(),
        count as f64 / indexing.as_secs_f64()
    );
    Ok(())
}
