//! Dead-lettering: a copy of the failed event, with why, in the dead-letter
//! stream, stored before the original is terminated.

use async_nats::jetstream::message::{AckKind, PublishMessage};
use messages::{cloudevents as ce, dlq};

use super::ConsumerRunner;
use super::names;
use super::settle::{Held, ack};

impl ConsumerRunner {
    /// Whether this handler keeps `dead_letter_cap` dead letters in full
    /// already.
    /// Counted by the server: a durable consumer of the dead-letter stream
    /// on this handler's letters (`<handler>-letters`), never fetched, whose
    /// pending count is theirs; replayed and purged letters leave it. When
    /// the count cannot be read, the letter is written (better kept than
    /// lost).
    async fn over_dead_letter_cap(&self) -> bool {
        use async_nats::jetstream::consumer::{self, pull};
        let cap = self.settings.dead_letter_cap;
        if cap == 0 {
            return false;
        }
        let mut tally = self.letter_tally.lock().await;
        let counted = async {
            if tally.is_none() {
                let name = format!("{}-letters", self.durable_name);
                let stream = self.js.get_stream_no_info(&self.dlq_stream).await?;
                let config = pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("counts {}'s dead letters (never fetched)", self.durable_name)),
                    filter_subject: format!("dlq.prospect.{}.>", self.durable_name),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                };
                *tally = Some(stream.get_or_create_consumer(&name, config).await?);
            }
            let counter = tally.as_mut().expect("made above");
            anyhow::Ok(counter.info().await?.num_pending)
        };
        let counted = counted.await;
        if counted.is_err() {
            // Made again next time (it may have been deleted).
            *tally = None;
        }
        match counted {
            Ok(kept) => kept >= cap,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot count the handler's dead letters; writing this one");
                false
            }
        }
    }

    /// Copies the message to the dead-letter stream with the reason, waits for
    /// that to be stored, then terminates the original. If the copy cannot be
    /// stored the original is redelivered later instead: never dropped. An
    /// event holding personal data of a prospect that has been erased
    /// meanwhile is not kept at all: erasure purges such letters, and one
    /// made later must not bring the data back.
    pub(super) async fn dead_letter(&self, held: &Held, reason: &str, forged: bool) {
        if self.dead_letters.load(std::sync::atomic::Ordering::Relaxed) {
            // A dead letter is not dead-lettered again: it stays where it is,
            // in the dead-letter stream, for `signup dlq`.
            tracing::error!(stream_sequence = held.stream_sequence, %reason,
                "a dead letter cannot be handled; it stays in the dead-letter stream");
            ack(&held.acker, AckKind::Term).await;
            return;
        }
        if self.of_an_erased_prospect(held).await {
            ack(&held.acker, AckKind::Term).await;
            return;
        }
        let withheld = self.withheld(held, forged).await;
        let reason = crate::redact::addresses(reason);
        let reason: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(1_000).collect();
        let headers = self.letter_headers(held, &reason, withheld);
        let event_id = headers.get(ce::ID).map(|v| v.as_str().to_owned()).unwrap_or_else(|| "-".to_owned());
        let subject = dlq::subject(&self.durable_name, &held.message.subject);
        let payload = if withheld.is_some() { bytes::Bytes::new() } else { held.message.payload.clone() };
        let publish = PublishMessage::build().headers(headers).payload(payload);
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match stored {
            Ok(()) => {
                tracing::error!(event_id, trace_id = held.trace_id(), stream_sequence = held.stream_sequence,
                    delivered = held.delivered, %reason, "event dead-lettered");
                held.span.record("otel.status_code", "error");
                held.span.record("otel.status_description", format!("dead-lettered: {reason}"));
                ack(&held.acker, AckKind::Term).await;
                metrics::counter!(names::DEAD_LETTERED, "consumer" => self.durable_name.clone()).increment(1);
            }
            Err(error) => {
                tracing::warn!(event_id, trace_id = held.trace_id(), %error,
                    "could not store the dead letter; the event will be redelivered");
                ack(&held.acker, AckKind::Nak(Some(self.settings.retry_delay(held.delivered)))).await;
            }
        }
    }

    /// Whether the event holds personal data of a prospect erased
    /// meanwhile. When that cannot be told, it is kept: better than losing
    /// an event.
    async fn of_an_erased_prospect(&self, held: &Held) -> bool {
        let subject = held.message.subject.as_str();
        let Some(prospect) = messages::streams::prospect_of(subject) else { return false };
        if !messages::streams::carries_personal_data(subject) {
            return false;
        }
        match crate::erasure::is_erased(&self.js, &self.stream.name, prospect).await {
            Ok(erased) => {
                if erased {
                    tracing::info!(stream_sequence = held.stream_sequence, %prospect,
                        "the event's prospect was erased: not kept as a dead letter");
                }
                erased
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot tell whether the prospect was erased");
                false
            }
        }
    }

    /// Why the letter keeps its headers only, if it does. A forged event's
    /// payload is whatever its sender chose (someone else's data, perhaps),
    /// and past the cap a handler's letters keep their headers only, so that
    /// one handler failing everything cannot fill the stream the others
    /// need. Either is still a letter, reported and replayable (replay
    /// republishes the stream's own copy).
    async fn withheld(&self, held: &Held, forged: bool) -> Option<&'static str> {
        if forged {
            return Some("forged: its payload is not kept");
        }
        if !self.over_dead_letter_cap().await {
            return None;
        }
        tracing::error!(
            stream_sequence = held.stream_sequence,
            cap = self.settings.dead_letter_cap,
            "the handler has as many dead letters as it may keep in full; this one keeps its headers only"
        );
        metrics::counter!(names::DEAD_LETTER_CAP_REACHED, "consumer" => self.durable_name.clone()).increment(1);
        Some("the handler's dead-letter cap is reached: headers only")
    }

    /// The letter's headers: the original's, and why, by whom, after how
    /// many deliveries, from where.
    fn letter_headers(&self, held: &Held, reason: &str, withheld: Option<&str>) -> async_nats::HeaderMap {
        let mut headers = held.message.headers.clone().unwrap_or_default();
        if let Some(why) = withheld {
            headers.insert(dlq::PAYLOAD_WITHHELD, why);
        }
        // One letter per consumer and position, however often this is retried.
        headers.insert(ce::NATS_MSG_ID, format!("{}:{}", self.durable_name, held.stream_sequence).as_str());
        headers.insert(dlq::REASON, reason);
        headers.insert(dlq::CONSUMER, self.durable_name.as_str());
        headers.insert(dlq::DELIVERIES, held.delivered.to_string().as_str());
        headers.insert(dlq::STREAM_SEQ, held.logical_sequence().to_string().as_str());
        headers.insert(dlq::SUBJECT, held.message.subject.as_str());
        headers
    }
}
