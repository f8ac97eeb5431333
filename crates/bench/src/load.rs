//! Load generators: wrk (closed loop, as fast as the server answers) for the
//! accept phase, and a paced open-loop generator for fixed rates.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

/// What one wrk run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub errors: WrkErrors,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WrkErrors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub status: u64,
    pub timeout: u64,
}

impl WrkRun {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub fn error_count(&self) -> u64 {
        let e = &self.errors;
        e.connect + e.read + e.write + e.status + e.timeout
    }
}

/// Runs wrk with `script` against `base_url` for `secs` seconds on
/// `connections` connections (2 threads), every request a distinct sign-up;
/// `args` go to the script after the run id.
pub async fn wrk(
    script: &Path,
    base_url: &str,
    secs: u64,
    connections: u32,
    run_id: &str,
    args: &[&str],
) -> anyhow::Result<WrkRun> {
    let output = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .args([base_url, "--", run_id])
        .args(args)
        .output()
        .await
        .context("running wrk (scripts/bench installs it)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("wrk printed no figures")?;
    serde_json::from_str(line).with_context(|| format!("reading wrk's figures {line}"))
}

/// What a paced run measured.
#[derive(Debug, Clone)]
pub struct PacedRun {
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl PacedRun {
    pub fn achieved_rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

struct Tally {
    accepted: u64,
    refused: u64,
    failed: u64,
    latency_us: Histogram<u64>,
}

/// Sends `rate` sign-ups per second for `duration`, on schedule whatever the
/// answers take (up to `max_in_flight` outstanding). Each 303 is reported on
/// `answered` with the prospect id and the moment it arrived. With `proofs`,
/// sign-up `i` sends `proofs[i]` as its `altcha` (form-encoded already).
pub async fn paced(
    base_url: &str,
    rate: u64,
    duration: Duration,
    run_id: &str,
    answered: Option<mpsc::UnboundedSender<(Uuid, Instant)>>,
    proofs: Option<&[String]>,
) -> anyhow::Result<PacedRun> {
    const MAX_IN_FLIGHT: usize = 2_048;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .tcp_nodelay(true)
        .build()?;
    let url: Arc<str> = format!("{base_url}/signup").into();
    let tally = Arc::new(Mutex::new(Tally {
        accepted: 0,
        refused: 0,
        failed: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    }));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let total = rate * duration.as_secs();
    if let Some(proofs) = proofs {
        anyhow::ensure!(proofs.len() as u64 >= total, "{} proofs for {total} sign-ups", proofs.len());
    }
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let (http, url, tally, answered) = (http.clone(), Arc::clone(&url), Arc::clone(&tally), answered.clone());
        let mut body = format!(
            "firstName=Paced&lastName=Visitor&email=p{i}.{run_id}%40example.com&companyName=Acme&country=NL&role=EN"
        );
        if let Some(proofs) = proofs {
            body.push_str("&altcha=");
            body.push_str(&proofs[usize::try_from(i)?]);
        }
        tokio::spawn(async move {
            let sent = Instant::now();
            let response =
                http.post(&*url).header("content-type", "application/x-www-form-urlencoded").body(body).send().await;
            let arrived = Instant::now();
            let micros = u64::try_from(arrived.duration_since(sent).as_micros()).unwrap_or(u64::MAX).max(1);
            let id = response.as_ref().ok().filter(|r| r.status().as_u16() == 303).and_then(prospect_id);
            let mut tally = tally.lock().expect("tally");
            tally.latency_us.saturating_record(micros);
            match (&response, id) {
                (Ok(_), Some(id)) => {
                    tally.accepted += 1;
                    if let Some(answered) = answered {
                        let _ = answered.send((id, arrived));
                    }
                }
                (Ok(r), None) if r.status().as_u16() == 503 => tally.refused += 1,
                _ => tally.failed += 1,
            }
            drop(slot);
        });
    }
    // Every answer is in once all slots are free again.
    let _all = slots.acquire_many(u32::try_from(MAX_IN_FLIGHT)?).await?;
    let elapsed = start.elapsed();
    let tally = tally.lock().expect("tally");
    Ok(PacedRun {
        accepted: tally.accepted,
        refused: tally.refused,
        failed: tally.failed,
        elapsed,
        latency_us: tally.latency_us.clone(),
    })
}

/// The prospect id in a `/signup/thanks/<id>[.<expiry>.<mac>]` location.
fn prospect_id(response: &reqwest::Response) -> Option<Uuid> {
    let location = response.headers().get("location")?.to_str().ok()?;
    location.rsplit('/').next()?.split('.').next()?.parse().ok()
}
