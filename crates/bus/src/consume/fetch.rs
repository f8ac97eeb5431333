//! Taking batches: what is ready now, a moment's linger under load, a wait
//! for the first message when idle; and the next batch fetched while the
//! current one is applied.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, message::AckKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{ConsumerRunner, Handler};

impl ConsumerRunner {
    /// Processes `messages` while fetching the next batch, so the consumer
    /// never waits for the server between batches. Fetched messages that wait
    /// for a long batch (a database outage, say) get progress acks, so the
    /// server does not hand them out again meanwhile. Returns the next batch,
    /// if one was fetched.
    pub(super) async fn process_and_prefetch<H: Handler>(
        &self,
        handler: &H,
        messages: Vec<jetstream::Message>,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> Option<Vec<jetstream::Message>> {
        let processing = self.process(handler, messages, shutdown);
        let fetching = self.next_batch(consumer, shutdown);
        tokio::pin!(processing, fetching);
        let mut next: Option<anyhow::Result<Vec<jetstream::Message>>> = None;
        let mut ticker = tokio::time::interval(self.progress_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut processing => break,
                result = &mut fetching, if next.is_none() => {
                    next = Some(result);
                    ticker.reset();
                }
                _ = ticker.tick(), if matches!(&next, Some(Ok(n)) if !n.is_empty()) => {
                    for message in next.iter().flatten().flatten() {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::warn!(%error, "could not send a progress ack");
                        }
                    }
                }
            }
        }
        // Processing is done; an unfinished fetch is what the runner would wait for now.
        let result = match next {
            Some(result) => result,
            None => fetching.await,
        };
        // On an error the next round fetches again and recovers as usual.
        result.inspect_err(|error| tracing::debug!(error = %format!("{error:#}"), "prefetch failed")).ok()
    }

    /// Takes what is ready now; when nothing is, waits (up to `idle_wait_ms`)
    /// for the first message and then takes what arrived with it.
    pub(super) async fn next_batch(
        &self,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<jetstream::Message>> {
        // The server refuses pull requests for more than the consumer's
        // max_ack_pending, which the instance that created it chose.
        let limit = usize::try_from(consumer.cached_info().config.max_ack_pending).ok().filter(|l| *l > 0);
        let max = self.settings.batch_size.clamp(1, limit.unwrap_or(usize::MAX));
        let idle_wait = Duration::from_millis(self.settings.idle_wait_ms.max(100));
        let mut out = Vec::new();
        let started = tokio::time::Instant::now();
        collect_ready(consumer, max, &mut out).await?;
        if !out.is_empty() {
            // Under load: gather more for a moment, so the batch pays the
            // fixed cost of a transaction for many events, not a few.
            let linger = Duration::from_millis(self.settings.linger_ms);
            if out.len() < max && !linger.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(out),
                    () = tokio::time::sleep_until(started + linger) => {}
                }
                collect_ready(consumer, max - out.len(), &mut out).await?;
            }
            return Ok(out);
        }
        let mut waiting = consumer.batch().max_messages(1).expires(idle_wait).messages().await?;
        // The batch ends by itself at `expires`; the outer bound covers a
        // connection that dropped mid-request.
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(out),
            first = tokio::time::timeout(idle_wait + Duration::from_secs(2), waiting.next()) => first,
        };
        match first {
            Ok(Some(message)) => out.push(message.map_err(|e| anyhow::anyhow!(e))?),
            Ok(None) => return Ok(out),
            Err(_elapsed) => anyhow::bail!("pull request got no answer within {idle_wait:?}"),
        }
        let gather = Duration::from_millis(self.settings.gather_ms);
        if max > 1 && !gather.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(out),
                () = tokio::time::sleep(gather) => {}
            }
        }
        if max > 1 {
            collect_ready(consumer, max - 1, &mut out).await?;
        }
        Ok(out)
    }
}

/// Takes up to `max` messages that are ready now. Bounded in time: a request
/// in flight when the server restarts would otherwise never end.
async fn collect_ready(consumer: &PullConsumer, max: usize, out: &mut Vec<jetstream::Message>) -> anyhow::Result<()> {
    const LIMIT: Duration = Duration::from_secs(5);
    let collect = async {
        let mut ready = consumer.fetch().max_messages(max).messages().await?;
        while let Some(message) = ready.next().await {
            out.push(message.map_err(|e| anyhow::anyhow!(e))?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(LIMIT, collect).await.map_err(|_| anyhow::anyhow!("fetch got no answer within {LIMIT:?}"))?
}
