//! Whether a mail may go now (its records, the suppression list, the
//! budgets, its turn), and sending it.

use std::time::Duration;

use bus::{Delivery, HandlerError};
use chrono::Utc;
use messages::ProspectEvent;
use uuid::Uuid;

use super::mails::Mail;
use super::{Mailer, count, store_unavailable};
use crate::budget::domain_of;
use crate::records::{Budget, Turn};

/// A mail that may go now.
pub(super) struct Admitted {
    event_id: Uuid,
    /// Its record's key.
    key: String,
    mail: Mail,
}

impl Mailer {
    /// Whether the mail may go now. When its record says it went out (or was
    /// skipped) already, or its address is suppressed, it need not go
    /// (`None`). When its address had its share of mails of its budget for
    /// now, the mail waits ([`HandlerError::Deferred`]) until there is room.
    /// Of what anyone can cause, one mail per address and kind waits at
    /// most: one that a newer mail of its kind to its address replaced
    /// while it waited goes no more (the person gets the newer one), so a
    /// flood of sign-ups or lost-link requests neither floods the inbox
    /// later nor piles up in the mailer. A mail to an unconfirmed address
    /// then takes its turn in the budget of such mails ([`crate::budget`]),
    /// and waits for it.
    ///
    /// The mails of a batch are admitted one at a time, in stream order, so
    /// that they take their budgets' turns in the order they came.
    pub(super) async fn admit(
        &self,
        delivery: &Delivery<ProspectEvent>,
        mail: Mail,
    ) -> Result<Option<Admitted>, HandlerError> {
        let event_id = delivery.meta.event_id;
        let key = mail.slot.key(event_id);
        let email = &mail.email;
        // About a sign-up, or to an address nobody has confirmed (a lost
        // link asked for a stranger's pending sign-up): what a suppressed
        // address no longer gets.
        let suppressible = email.kind.about_a_sign_up() || mail.unconfirmed;
        // A newer mail of its kind to its address waits only if this one
        // came back (redelivered after waiting itself): on its first
        // delivery every later event is still behind it in the stream.
        let may_be_replaced = mail.budget == Budget::Anyone && delivery.meta.delivered > 1;
        // What is recorded of the mail and of its address, read at once.
        let (done, scheduled, suppressed, replaced) = tokio::try_join!(
            async { if mail.not_done { Ok(false) } else { self.records.done(&key).await } },
            self.records.scheduled(&key),
            async { if suppressible { self.records.suppressed(&email.to).await } else { Ok(false) } },
            async {
                if may_be_replaced {
                    self.records.replaced(&email.to, email.kind.name(), delivery.meta.stream_sequence).await
                } else {
                    Ok(false)
                }
            },
        )
        .map_err(store_unavailable)?;
        if done {
            count(email.kind, "already_sent");
            return Ok(None);
        }
        if suppressed {
            tracing::info!(%event_id, kind = email.kind.name(), "not sent: the address's owner asked for no more mail about sign-ups");
            count(email.kind, "suppressed");
            self.waiting.over(&key, Utc::now().timestamp_millis());
            self.records.record(&key, "suppressed").await.map_err(store_unavailable)?;
            return Ok(None);
        }
        // A mail with a turn was through its address's budget when it got
        // it; at its domain's turn it takes its turn of the total.
        let now = Utc::now().timestamp_millis();
        let due = match scheduled {
            Some(Turn { at, of_domain: true }) if at <= now => self.take_total(&key, now).await?,
            Some(turn) => turn.at,
            None => match self.take_budgets(delivery, &mail, &key, replaced).await? {
                Some(due) => due,
                None => return Ok(None),
            },
        };
        // Read again: a turn of now, taken a moment ago, is due.
        let now = Utc::now().timestamp_millis();
        if due > now {
            self.waiting.until(&key, due, now);
            count(email.kind, "waiting_for_budget");
            return Err(HandlerError::Deferred {
                // Exactly its turn: the mails held back come back in the
                // order they came.
                for_at_least: Duration::from_millis(u64::try_from(due - now).unwrap_or_default()),
                reason: anyhow::anyhow!("the budget of mails to unconfirmed addresses is used up for now"),
            });
        }
        Ok(Some(Admitted { event_id, key, mail }))
    }

    /// Sends an admitted mail and records it sent. Its `Message-ID` is made
    /// from its record's key, so a copy sent again (a crash between the
    /// server's answer and the record) is the same message to the receiver.
    pub(super) async fn deliver(&self, admitted: Admitted) -> Result<(), HandlerError> {
        let Admitted { event_id, key, mail } = admitted;
        let kind = mail.email.kind;
        let id = self.links.address_digest("message-id", &key);
        let message = mail.email.message(&self.sender, &id).map_err(|e| {
            HandlerError::Permanent(e.context("the mail could not be written (the address is unusable)"))
        })?;
        self.transport.send(&message).await.map_err(smtp::classify)?;
        // A crash right here would send it again: at least once, never lost.
        self.records.record(&key, "sent").await.map_err(store_unavailable)?;
        self.waiting.over(&key, Utc::now().timestamp_millis());
        tracing::info!(%event_id, kind = kind.name(), "mail sent");
        count(kind, "sent");
        Ok(())
    }

    /// Counts the mail against its address's budget and, when nobody has
    /// confirmed the address, against the budget of such mails: when it may
    /// go (unix milliseconds; a time to come is its turn, noted), `None`
    /// when it need not go at all (a newer mail of its kind `replaced` it),
    /// or [`HandlerError::Deferred`] when its address had its share for now.
    async fn take_budgets(
        &self,
        delivery: &Delivery<ProspectEvent>,
        mail: &Mail,
        key: &str,
        replaced: bool,
    ) -> Result<Option<i64>, HandlerError> {
        let Mail { email, budget, unconfirmed, .. } = mail;
        let (event_id, sequence) = (delivery.meta.event_id, delivery.meta.stream_sequence);
        let kind = email.kind.name();
        if replaced {
            tracing::info!(%event_id, kind, "not sent: a newer mail of its kind to the address replaced it while it waited");
            count(email.kind, "replaced");
            self.records.record(key, "replaced").await.map_err(store_unavailable)?;
            return Ok(None);
        }
        let limit = match budget {
            Budget::Anyone => self.per_address_limit,
            Budget::Owner => self.per_address_owner_limit,
        };
        let taken = self.records.take(&email.to, *budget, limit, Utc::now()).await.map_err(store_unavailable)?;
        if let Some(wait) = taken {
            if *budget == Budget::Anyone {
                self.records.wait_here(&email.to, kind, sequence).await.map_err(store_unavailable)?;
            }
            count(email.kind, "deferred");
            return Err(HandlerError::Deferred {
                // Back within a minute at most, so that a mail a newer one
                // replaced meanwhile is settled soon instead of held (held
                // messages count against the consumer's pending limit); up to
                // five seconds more, so that mails waiting for one window do
                // not all come back at the same instant.
                for_at_least: wait.min(Duration::from_secs(60)) + Duration::from_millis(fastrand::u64(..5_000)),
                reason: anyhow::anyhow!("the address had its share of {} mails for now", email.kind.name()),
            });
        }
        let now = Utc::now().timestamp_millis();
        if !unconfirmed {
            return Ok(Some(now));
        }
        let settings = &self.unconfirmed_budget;
        if settings.per_domain > 0 {
            let domain = self.records.domain_budget(&domain_of(&email.to));
            let at = self.records.reserve(&domain, settings.per_domain, settings.window(), now);
            let at = at.await.map_err(store_unavailable)?;
            if at > now {
                // The total is taken at that turn, not now: mails waiting
                // for a flooded domain hold back no other domain's.
                let turn = Turn { at, of_domain: true };
                self.records.schedule(key, turn).await.map_err(store_unavailable)?;
                return Ok(Some(at));
            }
        }
        self.take_total(key, now).await.map(Some)
    }

    /// Takes the mail `key`'s turn of the total budget of mails to
    /// unconfirmed addresses: when it may go (noted when that is to come).
    async fn take_total(&self, key: &str, now: i64) -> Result<i64, HandlerError> {
        let settings = &self.unconfirmed_budget;
        if settings.total == 0 {
            return Ok(now);
        }
        let at = self.records.reserve("budget.total", settings.total, settings.window(), now);
        let at = at.await.map_err(store_unavailable)?;
        if at > now {
            self.records.schedule(key, Turn { at, of_domain: false }).await.map_err(store_unavailable)?;
        }
        Ok(at)
    }
}
