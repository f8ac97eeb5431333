//! Which way of pulling from a JetStream consumer costs less on a current
//! server: the batched `fetch` the consumer runner uses (one pull request per
//! batch, the next one sent while the batch is applied), or the continuous
//! pull of `messages()` (the client keeps pull requests topped up itself).
//!
//! Puts `N` events (default 200,000, about 400 bytes each) on a stream of a
//! private nats-server, then consumes them all with each mode in turn
//! (explicit acks, batches of 500) and prints, per mode, the wall time, the
//! rate, and the CPU seconds of this process and of the server. Run by
//! `scripts/bench`; alone:
//!
//!     cargo run --release -p bus --example pull_modes -- 200000

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt as _;
use test_support::NatsServer;

const BATCH: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(200_000);
    let server = NatsServer::start().await?;
    let client = async_nats::connect(server.url()).await?;
    let version = client.server_info().version;
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "PULL".into(),
        subjects: vec!["pull.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 400]);
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..count {
        acks.push(std::future::IntoFuture::into_future(
            js.publish(format!("pull.{}", i % 1000), payload.clone()).await?,
        ));
        if acks.len() >= 2_000 {
            acks.next().await.transpose()?;
        }
    }
    while acks.next().await.transpose()?.is_some() {}
    println!("nats-server {version}: {count} events of {} bytes, batches of {BATCH}", payload.len());
    println!("{:<24} {:>9} {:>12} {:>14} {:>14}", "mode", "seconds", "events/s", "client CPU s", "server CPU s");
    for mode in ["fetch (the runner)", "messages()"] {
        let consumer = js
            .get_stream("PULL")
            .await?
            .create_consumer(pull::Config {
                durable_name: Some(mode.replace(|c: char| !c.is_ascii_alphanumeric(), "")),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await?;
        let (cpu, server_cpu, started) = (cpu_seconds(None), cpu_seconds(server.pid()), Instant::now());
        let mut seen = 0;
        if mode.starts_with("fetch") {
            while seen < count {
                let mut batch = consumer.fetch().max_messages(BATCH).expires(Duration::from_secs(1)).messages().await?;
                while let Some(message) = batch.next().await {
                    message.map_err(|e| anyhow::anyhow!(e))?.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                    seen += 1;
                }
            }
        } else {
            let mut messages = consumer.stream().max_messages_per_batch(BATCH).messages().await?;
            while seen < count {
                let message = messages.next().await.expect("the stream goes on").map_err(|e| anyhow::anyhow!(e))?;
                message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                seen += 1;
            }
        }
        client.flush().await?;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{mode:<24} {elapsed:>9.2} {:>12.0} {:>14.2} {:>14.2}",
            count as f64 / elapsed,
            cpu_seconds(None) - cpu,
            cpu_seconds(server.pid()) - server_cpu
        );
    }
    Ok(())
}

/// User + system CPU seconds of a process (this one by default), from
/// /proc (Linux; clock ticks of 1/100 s).
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}
