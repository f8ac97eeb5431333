//! The minimal pipeline, the cpu phase's reference: the least an
//! event-driven sign-up can cost on these servers. The bench itself
//! publishes each sign-up to JetStream (a stream of its own on the same
//! nats-server, file storage, message ids for deduplication), awaits the
//! PubAcks, pulls the events back in batches from a durable consumer,
//! inserts each batch in one transaction (the raw batched insert of the
//! drain phase) into a database of its own on the same Postgres, then acks
//! every message. No HTTP, validation, headers, tracing, metrics, index or
//! mail: what the whole system costs per sign-up beyond this is what the
//! cpu phase's ratio says.
//!
//! Its CPU is the bench process's own (it does nothing else meanwhile),
//! nats-server's and every Postgres process's, per event.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::async_nats::{self, HeaderMap, jetstream};
use diesel_async::AsyncConnection as _;
use futures::{StreamExt as _, TryStreamExt as _};
use messages::ProspectSignedUp;
use serde::Serialize;

use crate::system::{Backends, migrated_database};

/// The reference's stream, beside `PROSPECTS` on the same server.
const STREAM: &str = "BENCH_MINIMAL";
/// Events pulled and inserted at a time.
const BATCH: usize = 500;

#[derive(Serialize)]
pub struct Minimal {
    pub events: usize,
    pub secs: f64,
    pub per_sec: f64,
    /// Microseconds of CPU per event: the bench (publisher and consumer),
    /// nats-server, Postgres.
    pub micros: BTreeMap<String, f64>,
    pub total_micros: f64,
}

/// Runs the minimal pipeline over `events` on `backends`' servers (nothing
/// else running on them).
pub async fn minimal(backends: &Backends, events: &[ProspectSignedUp]) -> anyhow::Result<Minimal> {
    let client = async_nats::connect(backends.nats.url()).await?;
    let js = jetstream::new(client.clone());
    let consumer = stream_and_consumer(&js).await?;
    let database = migrated_database().await?;
    let mut conn = database.connect().await?;
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|event| Ok((event.prospect_id.to_string(), serde_json::to_vec(event)?)))
        .collect::<anyhow::Result<_>>()?;

    let processes = vec![
        ("signup-bench (publisher and consumer)".to_owned(), std::process::id()),
        ("nats-server".to_owned(), backends.nats.pid().context("nats-server has exited")?),
    ];
    let before = crate::cpu_ticks(&processes)?;
    let start = Instant::now();
    let publish = async {
        futures::stream::iter(payloads)
            .map(|(id, payload)| {
                let js = &js;
                async move {
                    let mut headers = HeaderMap::new();
                    headers.insert("Nats-Msg-Id", id.as_str());
                    js.publish_with_headers(format!("bench.minimal.{id}"), headers, payload.into()).await?.await
                }
            })
            .buffer_unordered(1_000)
            .try_for_each(|_| async { Ok(()) })
            .await
            .context("publishing")
    };
    let consume = async {
        let mut inserted = 0;
        while inserted < events.len() {
            let messages: Vec<jetstream::Message> = consumer
                .batch()
                .max_messages(BATCH)
                .expires(Duration::from_millis(500))
                .messages()
                .await?
                .try_collect()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let batch: Vec<ProspectSignedUp> =
                messages.iter().map(|message| serde_json::from_slice(&message.payload)).collect::<Result<_, _>>()?;
            if batch.is_empty() {
                continue;
            }
            conn.transaction(async |conn| crate::raw_insert(conn, &batch).await).await?;
            for message in &messages {
                message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            }
            inserted += batch.len();
        }
        client.flush().await?;
        anyhow::Ok(())
    };
    tokio::try_join!(publish, consume)?;
    let took = start.elapsed();
    let after = crate::cpu_ticks(&processes)?;
    let micros = crate::micros_per(&before, &after, events.len() as u64);
    js.delete_stream(STREAM).await?;
    Ok(Minimal {
        events: events.len(),
        secs: took.as_secs_f64(),
        per_sec: events.len() as f64 / took.as_secs_f64(),
        total_micros: micros.values().sum(),
        micros,
    })
}

/// The pipeline's own stream (file store, the events' duplicate window) and
/// its durable pull consumer.
async fn stream_and_consumer(js: &jetstream::Context) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["bench.minimal.>".to_owned()],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            "minimal",
            jetstream::consumer::pull::Config { durable_name: Some("minimal".to_owned()), ..Default::default() },
        )
        .await?;
    Ok(consumer)
}
