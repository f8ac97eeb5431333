//! The system on a real three-node JetStream cluster: three `nats-server`
//! processes with routes on loopback, the streams at three replicas, every
//! service connected with the whole seed list. First the whole system works
//! on it; then nodes fail under load — the stream leader killed, a follower
//! killed, every node restarted in turn — and each fault prints its line
//! (accepted, refused, saved, lost, duplicated): nothing may be lost or
//! duplicated, and a sign-up answered 303 while the leader moved is saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::async_nats::jetstream;
use e2e_tests::faults::{FaultBed, LINKS_SECRET, reached};
use e2e_tests::processes::{Service, steady_load};
use test_support::{NatsCluster, SmtpServer, eventually, free_port};
use tokio_util::sync::CancellationToken;

/// Every service started here keeps its streams (and buckets) on all three nodes.
const R3: [(&str, &str); 1] = [("SIGNUP__NATS__STREAM__REPLICAS", "3")];

async fn cluster_bed() -> (NatsCluster, FaultBed) {
    let cluster = NatsCluster::start(3).await.expect("a three-node cluster");
    let bed = FaultBed::start(cluster.urls(), &R3).await;
    (cluster, bed)
}

/// The node that leads the event stream now (after a failure: once a new
/// leader is elected).
async fn stream_leader(cluster: &NatsCluster, bed: &FaultBed) -> usize {
    let js = jetstream::new(bed.client.clone());
    eventually(Duration::from_secs(30), "a leader for PROSPECTS", || async {
        let info = js.get_stream("PROSPECTS").await.ok()?.info().await.ok()?.clone();
        cluster.node_named(info.cluster.as_ref()?.leader.as_deref()?)
    })
    .await
    .expect("stream leader")
}

/// Waits until the answered sign-ups grew by `more` from now: the system
/// goes on taking sign-ups.
async fn goes_on(progress: &AtomicUsize, more: usize) {
    let now = progress.load(Ordering::Relaxed);
    reached(progress, now + more).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_system_runs_on_a_three_node_cluster() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let (cluster, bed) = cluster_bed().await;
    let _saver = bed.saver(&[]);
    let smtp = SmtpServer::start().await.expect("smtp server");
    let index = tempfile::tempdir().expect("index dir");
    let common = |extra: Vec<(&str, String)>| -> Vec<(String, String)> {
        let mut env = vec![("SIGNUP__NATS__URL".to_owned(), cluster.urls())];
        env.extend(R3.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env
    };
    let token = "cluster-test-analytics-token";
    let analytics_port = free_port().expect("port");
    let _indexer = Service::spawn(
        "analytics-indexer",
        &["run"],
        &common(vec![
            ("SIGNUP__ANALYTICS__PORT", analytics_port.to_string()),
            ("SIGNUP__ANALYTICS__INDEX_DIR", index.path().join("index").display().to_string()),
            ("SIGNUP__ANALYTICS__TOKEN", token.to_owned()),
            ("SIGNUP__ANALYTICS__WRITER_MEMORY_MB", "15".to_owned()),
            ("SIGNUP__ANALYTICS__CONSUMER__LINGER_MS", "20".to_owned()),
        ]),
    )
    .expect("analytics-indexer");
    let mailer_port = free_port().expect("port");
    let _mailer = Service::spawn(
        "mailer",
        &["run"],
        &common(vec![
            ("SIGNUP__MAILER__HTTP__PORT", mailer_port.to_string()),
            ("SIGNUP__MAILER__SMTP__PORT", smtp.port().to_string()),
            ("SIGNUP__MAILER__SMTP__TLS", "none".to_owned()),
            ("SIGNUP__LINKS__SECRET", LINKS_SECRET.to_owned()),
            ("SIGNUP__LINKS__BASE_URL", bed.web_url.clone()),
        ]),
    )
    .expect("mailer");

    // The mailer starts at new events: wait until its consumer exists.
    for port in [analytics_port, mailer_port] {
        let url = format!("http://127.0.0.1:{port}/readyz");
        eventually(Duration::from_secs(60), &url, || async {
            (reqwest::get(&url).await.ok()?.status() == 200).then_some(())
        })
        .await
        .expect("ready");
    }

    // A sign-up goes through every service.
    let email = "ada.cluster@example.com";
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http");
    let fields = [("firstName", "Ada"), ("lastName", "Lovelace"), ("email", email), ("country", "GB"), ("role", "EN")];
    let response = http.post(format!("{}/signup", bed.web_url)).form(&fields).send().await.expect("post");
    assert_eq!(response.status(), 303);
    let id = e2e_tests::id_from_location(&response).expect("prospect id");
    bed.all_saved(&[id].into()).await;
    let mail = eventually(Duration::from_secs(30), "the confirmation mail", || async { smtp.messages_to(email).pop() })
        .await
        .expect("mailed");
    let mail = e2e_tests::Mail::parse(&mail, &bed.web_url).expect("a mail");
    let confirm = mail.link("/prospects/confirm/").expect("confirmation link");
    let confirmed = http.post(format!("{}{confirm}", bed.web_url)).send().await.expect("confirm");
    assert_eq!(confirmed.status(), 303);
    let summary = format!("http://127.0.0.1:{analytics_port}/api/analytics/summary");
    eventually(Duration::from_secs(30), "the confirmed sign-up in the index", || async {
        let summary: serde_json::Value = http.get(&summary).bearer_auth(token).send().await.ok()?.json().await.ok()?;
        (summary["confirmed"].as_u64()? == 1).then_some(())
    })
    .await
    .expect("indexed");

    // Everything the system keeps in JetStream is on all three nodes.
    let js = jetstream::new(bed.client.clone());
    for name in ["PROSPECTS", "PROSPECTS_DLQ", "KV_MAILER_SENT", "KV_MAILER_RATE"] {
        let info = js.get_stream(name).await.expect(name).info().await.expect("info").clone();
        assert_eq!(info.config.num_replicas, 3, "{name} has three replicas");
        let peers = info.cluster.expect("cluster info").replicas.len();
        assert_eq!(peers, 2, "{name}: a leader and two followers");
    }
    let events = js.get_stream("PROSPECTS").await.expect("stream");
    for consumer in ["save-prospect", "analytics-indexer", "mailer"] {
        let info = events.consumer_info(consumer).await.expect(consumer).clone();
        let peers = info.cluster.expect("cluster info").replicas.len();
        assert_eq!(peers, 2, "the {consumer} consumer is replicated with its stream");
    }
    assert_eq!(cluster.size(), 3);
}

/// Runs a steady load of sign-ups (8 at a time) through `fault`, then
/// until 300 more were answered, and reports.
async fn under_load<F>(cluster: &mut NatsCluster, bed: &FaultBed, name: &str, fault: F)
where
    F: AsyncFnOnce(&mut NatsCluster, &FaultBed, &AtomicUsize),
{
    let stop = CancellationToken::new();
    let progress = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(steady_load(bed.web_url.clone(), 8, stop.clone(), Arc::clone(&progress)));
    goes_on(&progress, 500).await;
    fault(cluster, bed, &progress).await;
    goes_on(&progress, 300).await;
    stop.cancel();
    let burst = load.await.expect("load");
    assert!(burst.other.is_empty(), "a 303 or a 503, nothing else: {:?}", &burst.other[..burst.other.len().min(10)]);
    bed.all_saved(&burst.accepted).await;
    bed.report(name, &burst.accepted, burst.refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_mid_burst_then_restarted_loses_nothing() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let (mut cluster, bed) = cluster_bed().await;
    let _saver = bed.saver(&[]);
    let name = "cluster: stream leader killed (kill -9) under load, then restarted";
    under_load(&mut cluster, &bed, name, async |cluster, bed, progress| {
        let leader = stream_leader(cluster, bed).await;
        cluster.kill(leader).await.expect("kill -9 the leader");
        // Another node takes over, and sign-ups go on.
        let new_leader = stream_leader(cluster, bed).await;
        assert_ne!(new_leader, leader, "a new leader was elected");
        goes_on(progress, 300).await;
        cluster.restart(leader).await.expect("the old leader comes back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_burst_loses_nothing() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let (mut cluster, bed) = cluster_bed().await;
    let _saver = bed.saver(&[]);
    let name = "cluster: a follower killed (kill -9) under load";
    under_load(&mut cluster, &bed, name, async |cluster, bed, progress| {
        let leader = stream_leader(cluster, bed).await;
        let follower = (leader + 1) % cluster.size();
        cluster.kill(follower).await.expect("kill -9 a follower");
        // Two nodes of three are a quorum: sign-ups go on with it down.
        goes_on(progress, 1_000).await;
        cluster.restart(follower).await.expect("the follower comes back and catches up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_steady_load_loses_nothing() {
    let _beside_no_build = crate::BUILD_OR_BURST.read().await;
    let (mut cluster, bed) = cluster_bed().await;
    let _saver = bed.saver(&[]);
    let name = "cluster: rolling restart of all three nodes under steady load";
    under_load(&mut cluster, &bed, name, async |cluster, _, progress| {
        for node in 0..cluster.size() {
            // As an operator does it: stop one node, start it, wait until it
            // is healthy (caught up), and only then the next.
            cluster.stop(node).await.expect("stop");
            goes_on(progress, 100).await;
            cluster.restart(node).await.expect("restart");
            goes_on(progress, 100).await;
        }
    })
    .await;
}
