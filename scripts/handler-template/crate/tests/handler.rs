//! __NAME__ under the real consumer runner, against a real nats-server
//! (`handler-testkit`): a sign-up published the way signup-web publishes it
//! reaches the handler.

use handler_testkit::{TestBus, sample};
use __CRATE__::{CONSUMER_NAME, __TYPE__};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_sign_up_reaches_the_handler() -> anyhow::Result<()> {
    let bus = TestBus::start().await?;
    let handler = __TYPE__::default();
    let running = bus.run(CONSUMER_NAME, handler.clone()).await?;
    bus.publish(&sample::signed_up()).await?;
    bus.settled(CONSUMER_NAME).await?;
    assert_eq!(handler.handled(), 1);
    running.stop().await
}
