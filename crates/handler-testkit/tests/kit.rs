//! The kit on itself: a handler that applies, one that refuses, and an
//! outage, each through the real consumer runner and a real nats-server.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bus::{Delivery, Handler, HandlerError};
use handler_testkit::{TestBus, sample};
use messages::{Event as _, ProspectEvent};

/// Records the ids of the events it applies (a redelivered one counts
/// once: delivery is at least once), and the consent of each sign-up;
/// refuses those of `refused` type.
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<BTreeSet<uuid::Uuid>>>,
    consents: Arc<Mutex<Vec<(uuid::Uuid, bool)>>>,
    refused: Option<&'static str>,
}

impl Recorder {
    fn applied(&self) -> usize {
        self.applied.lock().expect("not poisoned").len()
    }
}

impl Handler for Recorder {
    type Event = ProspectEvent;
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        if let Some(refused) = self.refused
            && batch.iter().any(|d| d.event.ce_type() == refused)
        {
            return Err(HandlerError::Permanent(anyhow::anyhow!("refusing {refused}")));
        }
        self.applied.lock().expect("not poisoned").extend(batch.iter().map(|d| d.meta.event_id));
        for delivery in batch {
            if let ProspectEvent::SignedUp(event) = &delivery.event {
                let recorded = matches!(event.consent, messages::Consent::Recorded(_));
                self.consents.lock().expect("not poisoned").push((event.prospect_id, recorded));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_reaches_a_handler_of_every_event() -> anyhow::Result<()> {
    let bus = TestBus::start().await?;
    let handler = Recorder::default();
    let running = bus.run("recorder", handler.clone()).await?;
    let signed_up = sample::signed_up();
    let id = signed_up.prospect_id;
    bus.publish(&signed_up).await?;
    bus.publish(&sample::confirmed(id)).await?;
    bus.publish(&sample::updated(id, sample::details())).await?;
    bus.publish(&sample::email_change(id, "new@example.com")).await?;
    bus.publish(&sample::link_requested(id)).await?;
    bus.publish(&sample::deleted(id)).await?;
    // A sign-up from before consent records, as the stream keeps it.
    let older = sample::signed_up_v1();
    bus.publish(&older).await?;
    bus.settled("recorder").await?;
    assert_eq!(handler.applied(), 7);
    assert_eq!(bus.dead_letters().await?, 0);
    let consents = handler.consents.lock().expect("not poisoned").clone();
    assert_eq!(consents, [(id, true), (older.prospect_id, false)], "version 1 arrives as version 2, not recorded");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_dead_lettered_and_the_rest_applied() -> anyhow::Result<()> {
    let bus = TestBus::start().await?;
    // Published before the handler runs: a new consumer starts at the
    // stream's first event.
    let signed_up = sample::signed_up();
    bus.publish(&signed_up).await?;
    bus.publish(&sample::deleted(signed_up.prospect_id)).await?;
    let handler = Recorder { refused: Some(messages::ProspectDeleted::TYPE), ..Recorder::default() };
    let running = bus.run("recorder", handler.clone()).await?;
    bus.settled("recorder").await?;
    assert_eq!(handler.applied(), 1, "the sign-up");
    assert_eq!(bus.dead_letters().await?, 1, "the erasure it refused");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_catches_up_after_a_server_outage() -> anyhow::Result<()> {
    let mut bus = TestBus::start().await?;
    let handler = Recorder::default();
    let running = bus.run("recorder", handler.clone()).await?;
    bus.publish(&sample::signed_up()).await?;
    bus.settled("recorder").await?;
    // Killed (as a crash): the consumer may not have stored its last ack, so
    // that event can come again; the handler counts it once.
    bus.server().stop().await?;
    bus.server().restart().await?;
    handler_testkit::eventually(std::time::Duration::from_secs(30), "the client to reconnect", || async {
        bus::is_connected(bus.client()).then_some(())
    })
    .await?;
    bus.publish(&sample::signed_up()).await?;
    bus.settled("recorder").await?;
    assert_eq!(handler.applied(), 2);
    running.stop().await
}
