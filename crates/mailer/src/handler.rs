//! The handler: which mails an event sends, each at most once.

use std::time::Duration;

use anyhow::Context as _;
use bus::request::ask;
use bus::{Delivery, Handler, HandlerError, async_nats};
use chrono::Utc;
use futures::StreamExt as _;
use lettre::message::Mailbox;
use links::{Links, Purpose};
use messages::ProspectEvent;
use messages::service::{self as contract, AddressesRef, FindEachAddress, FoundProspect};
use uuid::Uuid;

use crate::Settings;
use crate::budget::{BudgetSettings, Waiting, domain_of};
use crate::ledger::{Budget, Ledger, Turn};
use crate::letters::{Kind, Letter};
use smtp::Transport;

/// The handler behind the `mailer` durable consumer.
pub struct Mailer {
    transport: Transport,
    sender: smtp::Sender,
    links: Links,
    ledger: Ledger,
    client: async_nats::Client,
    service_timeout: Duration,
    per_address_limit: u32,
    per_address_owner_limit: u32,
    max_age: chrono::Duration,
    confirm_days: i64,
    unconfirmed_budget: BudgetSettings,
    waiting: std::sync::Arc<Waiting>,
    /// Mails under way at once: the SMTP connections (`mailer.smtp.pool_size`).
    under_way: usize,
}

/// One mail of an event.
struct Mail {
    /// Where its sent record goes.
    slot: Slot,
    /// The mail.
    letter: Letter,
    /// The per-address budget it counts against.
    budget: Budget,
    /// Nobody has confirmed the address it goes to: it counts against the
    /// budget of such mails too ([`crate::budget`]).
    unconfirmed: bool,
    /// Its record was read a moment ago and said it had not gone: no need
    /// to read it again before admitting it.
    not_done: bool,
}

impl Mail {
    fn new(slot: Slot, letter: Letter, budget: Budget, unconfirmed: bool) -> Self {
        Self { slot, letter, budget, unconfirmed, not_done: false }
    }
}

/// A mail that may go now.
struct Admitted {
    event_id: Uuid,
    /// Its record's key.
    key: String,
    mail: Mail,
}

/// Where a mail goes among those of one event: the key of its sent record
/// is `<event id>.<slot>`.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The one mail of a sign-up or a manage-link request.
    Only,
    /// An e-mail change's mail to the new address.
    NewAddress,
    /// An e-mail change's notice to the address in use.
    CurrentAddress,
}

impl Slot {
    /// The key of its sent record.
    fn key(self, event_id: Uuid) -> String {
        let [only, new_address, current_address] = messages::streams::SENT_SLOTS;
        let slot = match self {
            Slot::Only => only,
            Slot::NewAddress => new_address,
            Slot::CurrentAddress => current_address,
        };
        format!("{event_id}.{slot}")
    }
}

/// Who holds each address of a batch's mails, as the prospects service
/// answered: by the address exactly as the event has it. When the service
/// could not answer, only the mails that needed its answer wait.
#[derive(Default)]
struct Holders {
    found: std::collections::HashMap<String, Option<FoundProspect>>,
    /// Why the service gave no answer, if it did not.
    unanswered: Option<String>,
}

impl Holders {
    /// The live prospect holding `email`, if any.
    fn of(&self, email: &str) -> Result<Option<&FoundProspect>, HandlerError> {
        match (self.found.get(email), &self.unanswered) {
            (Some(found), _) => Ok(found.as_ref()),
            (None, Some(why)) => Err(HandlerError::Unavailable(
                anyhow::anyhow!("{why}").context("asking the prospects service who holds the address"),
            )),
            // A bug, not an outage: the batch's addresses were all asked.
            (None, None) => Err(HandlerError::Transient(anyhow::anyhow!("the holder of an address was not asked for"))),
        }
    }
}

fn store_unavailable(error: anyhow::Error) -> HandlerError {
    HandlerError::Unavailable(error.context("the mailer's key-value store"))
}

impl Mailer {
    /// A mailer for `settings`, asking the `prospects` service over `client`.
    /// Checks the SMTP settings, the sender and the link secret; the SMTP
    /// server itself is first contacted with the first mail.
    pub fn new(settings: &Settings, client: async_nats::Client) -> anyhow::Result<Self> {
        let mailer = &settings.mailer;
        let links = Links::new(&settings.links)?;
        let from: Mailbox =
            mailer.from.parse().with_context(|| format!("mailer.from {:?} is not an e-mail address", mailer.from))?;
        let max_age = settings.links.confirm_within();
        let ledger =
            Ledger::new(bus::async_nats::jetstream::new(client.clone()), crate::buckets(settings), links.clone());
        Ok(Self {
            transport: smtp::transport(&mailer.smtp, "mailer.smtp")?,
            sender: smtp::Sender::new(from, &mailer.smtp, "mailer.smtp")?,
            links,
            ledger,
            service_timeout: Duration::from_millis(mailer.service_timeout_ms),
            per_address_limit: mailer.per_address_limit,
            per_address_owner_limit: mailer.per_address_owner_limit,
            max_age,
            client,
            confirm_days: settings.links.confirm_within_days(),
            unconfirmed_budget: mailer.budget.clone(),
            waiting: std::sync::Arc::default(),
            under_way: usize::try_from(mailer.smtp.pool_size).unwrap_or(1).max(1),
        })
    }

    /// The mails this instance holds back for the budget (the gauges).
    pub fn waiting(&self) -> std::sync::Arc<Waiting> {
        std::sync::Arc::clone(&self.waiting)
    }

    /// Whether the SMTP server answers (for `check`).
    pub async fn smtp_reachable(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.transport.test_connection().await?, "the SMTP server did not accept a NOOP");
        Ok(())
    }

    fn letter(&self, kind: Kind, to: &str) -> Letter {
        Letter {
            kind,
            to: to.to_owned(),
            confirm_url: None,
            manage_url: None,
            not_me_url: None,
            new_email: None,
            confirm_days: self.confirm_days,
            manage_days: self.links.manage_days(),
        }
    }

    /// The live prospect that holds each address the events of a batch
    /// mail to about a sign-up or a link, asked of the prospects service
    /// once for the batch (`prospects.find-each`). Until a prospects service
    /// answers that (save-prospect upgraded before the mailer), the batch
    /// waits as for any outage of the service.
    async fn holders(&self, events: &[&Delivery<ProspectEvent>]) -> Holders {
        let mut emails: Vec<String> = events
            .iter()
            .filter_map(|delivery| match &delivery.event {
                ProspectEvent::SignedUp(event) => Some(event.details.email.clone()),
                ProspectEvent::ManageLinkRequested(event) => Some(event.email.clone()),
                _ => None,
            })
            .collect();
        emails.sort_unstable();
        emails.dedup();
        let mut holders = Holders::default();
        for chunk in emails.chunks(contract::FIND_EACH_MAX) {
            let asked = AddressesRef { emails: chunk.to_vec() };
            match ask::<FindEachAddress>(&self.client, &asked, self.service_timeout).await {
                Ok(found) if found.holders.len() == chunk.len() => {
                    holders.found.extend(chunk.iter().cloned().zip(found.holders));
                }
                Ok(found) => {
                    holders.unanswered =
                        Some(format!("it answered {} holders for {} addresses", found.holders.len(), chunk.len()));
                }
                Err(error) => holders.unanswered = Some(error.to_string()),
            }
        }
        holders
    }

    /// The mails of one event, in the order they go out.
    async fn letters(&self, delivery: &Delivery<ProspectEvent>, holders: &Holders) -> Result<Vec<Mail>, HandlerError> {
        Ok(match &delivery.event {
            ProspectEvent::SignedUp(event) => {
                // Sent already (a redelivery, a replay, the runner's retry
                // one event at a time): whoever holds the address, nothing
                // to send (so it settles even while the prospects service
                // is away).
                if self.done(delivery.meta.event_id, Slot::Only).await? {
                    count(Kind::Confirm, "already_sent");
                    return Ok(Vec::new());
                }
                let email = &event.details.email;
                let holder = holders.of(email)?.filter(|found| found.prospect_id != event.prospect_id);
                let known = holder.is_some();
                let mut letter = self.letter(if known { Kind::Claim } else { Kind::Confirm }, email);
                let confirm = self.links.confirm_token(event.prospect_id, event.signed_up_at);
                letter.confirm_url = Some(self.links.url(Purpose::Confirm, &confirm));
                // The manage link only to an address nobody holds: the holder
                // of a claimed one has its own, and "it wasn't me" erases the
                // stranger's sign-up.
                if !known {
                    let manage = self.links.manage_token(event.prospect_id, event.signed_up_at);
                    letter.manage_url = Some(self.links.url(Purpose::Manage, &manage));
                }
                let not_me = self.links.not_me_token(event.prospect_id, event.signed_up_at);
                letter.not_me_url = Some(self.links.url(Purpose::NotMe, &not_me));
                let unconfirmed = holder.is_none_or(|h| !h.confirmed);
                vec![Mail { not_done: true, ..Mail::new(Slot::Only, letter, Budget::Anyone, unconfirmed) }]
            }
            ProspectEvent::EmailChangeRequested(event) => {
                let new_email = &event.details.email;
                let mut to_new = self.letter(Kind::NewAddress, new_email);
                let token = self.links.email_token(event.prospect_id, delivery.meta.event_id, event.requested_at);
                to_new.confirm_url = Some(self.links.url(Purpose::ConfirmEmail, &token));
                let mut to_current = self.letter(Kind::AddressChanging, &event.previous_email);
                to_current.new_email = Some(new_email.clone());
                // The address in use is still the record's until the new one
                // is confirmed; then this link dies with the move.
                let manage = self.links.manage_token(event.prospect_id, event.requested_at);
                to_current.manage_url = Some(self.links.url(Purpose::Manage, &manage));
                // The new address is not proven: anyone could have typed it.
                // The notice first: the owner's mail never waits for the
                // budget of mails to unconfirmed addresses.
                vec![
                    Mail::new(Slot::CurrentAddress, to_current, Budget::Owner, false),
                    Mail::new(Slot::NewAddress, to_new, Budget::Anyone, true),
                ]
            }
            ProspectEvent::ManageLinkRequested(event) => {
                // Only to the address the prospect holds: a request naming
                // another address (forged, or the address moved meanwhile)
                // mails nothing.
                let holder = holders.of(&event.email)?.filter(|h| h.prospect_id == event.prospect_id);
                let Some(holder) = holder else {
                    tracing::warn!(event_id = %delivery.meta.event_id, prospect_id = %event.prospect_id,
                        "link request not mailed: the prospect does not hold the address it names");
                    count(Kind::ManageLink, "not_the_holders_address");
                    return Ok(Vec::new());
                };
                let mut letter = self.letter(Kind::ManageLink, &event.email);
                // Issued at the request: an owner's request ends every link
                // issued before it, this one not.
                let manage = self.links.manage_token(event.prospect_id, event.requested_at);
                letter.manage_url = Some(self.links.url(Purpose::Manage, &manage));
                let (budget, unconfirmed) =
                    if event.by_owner { (Budget::Owner, false) } else { (Budget::Anyone, !holder.confirmed) };
                vec![Mail::new(Slot::Only, letter, budget, unconfirmed)]
            }
            ProspectEvent::Updated(_) | ProspectEvent::Deleted(_) | ProspectEvent::Confirmed(_) => Vec::new(),
        })
    }

    /// Whether the mail of `slot` for this event went out (or was skipped)
    /// already.
    async fn done(&self, event_id: Uuid, slot: Slot) -> Result<bool, HandlerError> {
        self.ledger.done(&slot.key(event_id)).await.map_err(store_unavailable)
    }

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
    async fn admit(&self, delivery: &Delivery<ProspectEvent>, mail: Mail) -> Result<Option<Admitted>, HandlerError> {
        let event_id = delivery.meta.event_id;
        let key = mail.slot.key(event_id);
        let letter = &mail.letter;
        // About a sign-up, or to an address nobody has confirmed (a lost
        // link asked for a stranger's pending sign-up): what a suppressed
        // address no longer gets.
        let suppressible = letter.kind.about_a_sign_up() || mail.unconfirmed;
        // A newer mail of its kind to its address waits only if this one
        // came back (redelivered after waiting itself): on its first
        // delivery every later event is still behind it in the stream.
        let may_be_replaced = mail.budget == Budget::Anyone && delivery.meta.delivered > 1;
        // What is recorded of the mail and of its address, read at once.
        let (done, scheduled, suppressed, replaced) = tokio::try_join!(
            async { if mail.not_done { Ok(false) } else { self.ledger.done(&key).await } },
            self.ledger.scheduled(&key),
            async { if suppressible { self.ledger.suppressed(&letter.to).await } else { Ok(false) } },
            async {
                if may_be_replaced {
                    self.ledger.replaced(&letter.to, letter.kind.name(), delivery.meta.stream_sequence).await
                } else {
                    Ok(false)
                }
            },
        )
        .map_err(store_unavailable)?;
        if done {
            count(letter.kind, "already_sent");
            return Ok(None);
        }
        if suppressed {
            tracing::info!(%event_id, kind = letter.kind.name(), "not sent: the address's owner asked for no more mail about sign-ups");
            count(letter.kind, "suppressed");
            self.waiting.over(&key, Utc::now().timestamp_millis());
            self.ledger.record(&key, "suppressed").await.map_err(store_unavailable)?;
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
            count(letter.kind, "waiting_for_budget");
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
    async fn deliver(&self, admitted: Admitted) -> Result<(), HandlerError> {
        let Admitted { event_id, key, mail } = admitted;
        let kind = mail.letter.kind;
        let id = self.links.address_digest("message-id", &key);
        let message = mail.letter.message(&self.sender, &id).map_err(|e| {
            HandlerError::Permanent(e.context("the mail could not be written (the address is unusable)"))
        })?;
        self.transport.send(&message).await.map_err(smtp::classify)?;
        // A crash right here would send it again: at least once, never lost.
        self.ledger.record(&key, "sent").await.map_err(store_unavailable)?;
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
        let Mail { letter, budget, unconfirmed, .. } = mail;
        let (event_id, sequence) = (delivery.meta.event_id, delivery.meta.stream_sequence);
        let kind = letter.kind.name();
        if replaced {
            tracing::info!(%event_id, kind, "not sent: a newer mail of its kind to the address replaced it while it waited");
            count(letter.kind, "replaced");
            self.ledger.record(key, "replaced").await.map_err(store_unavailable)?;
            return Ok(None);
        }
        let limit = match budget {
            Budget::Anyone => self.per_address_limit,
            Budget::Owner => self.per_address_owner_limit,
        };
        let taken = self.ledger.take(&letter.to, *budget, limit, Utc::now()).await.map_err(store_unavailable)?;
        if let Some(wait) = taken {
            if *budget == Budget::Anyone {
                self.ledger.wait_here(&letter.to, kind, sequence).await.map_err(store_unavailable)?;
            }
            count(letter.kind, "deferred");
            return Err(HandlerError::Deferred {
                // Back within a minute at most, so that a mail a newer one
                // replaced meanwhile is settled soon instead of held (held
                // messages count against the consumer's pending limit); up to
                // five seconds more, so that mails waiting for one window do
                // not all come back at the same instant.
                for_at_least: wait.min(Duration::from_secs(60)) + Duration::from_millis(fastrand::u64(..5_000)),
                reason: anyhow::anyhow!("the address had its share of {} mails for now", letter.kind.name()),
            });
        }
        let now = Utc::now().timestamp_millis();
        if !unconfirmed {
            return Ok(Some(now));
        }
        let settings = &self.unconfirmed_budget;
        if settings.per_domain > 0 {
            let domain = self.ledger.domain_budget(&domain_of(&letter.to));
            let at = self.ledger.reserve(&domain, settings.per_domain, settings.window(), now);
            let at = at.await.map_err(store_unavailable)?;
            if at > now {
                // The total is taken at that turn, not now: mails waiting
                // for a flooded domain hold back no other domain's.
                let turn = Turn { at, of_domain: true };
                self.ledger.schedule(key, turn).await.map_err(store_unavailable)?;
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
        let at = self.ledger.reserve("budget.total", settings.total, settings.window(), now);
        let at = at.await.map_err(store_unavailable)?;
        if at > now {
            self.ledger.schedule(key, Turn { at, of_domain: false }).await.map_err(store_unavailable)?;
        }
        Ok(at)
    }
}

fn count(kind: Kind, outcome: &'static str) {
    bus::metrics::counter!("signup_mails_total", "kind" => kind.name(), "outcome" => outcome).increment(1);
}

impl Handler for Mailer {
    type Event = ProspectEvent;

    /// The mails of a batch go through three steps: which mails each event
    /// sends (several events asked about at once), admitted one at a time in
    /// stream order ([`Mailer::admit`]: records, suppression, budgets), then
    /// sent up to `mailer.smtp.pool_size` at once. The batch is `Ok` only
    /// once the server took every mail (so the runner acks it, in stream
    /// order); a mail that fails does not stop the others, and each of
    /// them is recorded as it goes, so the runner's retry of the batch one
    /// event at a time sends nothing twice. When any mail met an outage
    /// (the SMTP server or the key-value store away), the batch fails as
    /// unavailable, so the runner holds it whole.
    #[tracing::instrument(name = "mail_batch", skip_all, fields(size = batch.len()))]
    async fn handle(&self, batch: &[Delivery<ProspectEvent>]) -> Result<(), HandlerError> {
        let under_way = self.under_way;
        // The mails admitted in this batch: the same event twice in one
        // batch (published again after the duplicate window) mails once.
        let admitted = std::sync::Mutex::new(std::collections::HashSet::new());
        let admitted = &admitted;
        // Events by their place in the batch, mails owned: the steps'
        // closures take no borrowed arguments.
        let fresh: Vec<usize> = (0..batch.len())
            .filter(|&i| {
                // Its links would not work any more: a replay of old history
                // mails nothing.
                let fresh = (Utc::now() - batch[i].event.occurred_at()) <= self.max_age;
                if !fresh {
                    tracing::debug!(event_id = %batch[i].meta.event_id, "too old to mail");
                }
                fresh
            })
            .collect();
        // Who holds each address, asked once for the batch.
        let holders = self.holders(&fresh.iter().map(|&i| &batch[i]).collect::<Vec<_>>()).await;
        let holders = &holders;
        let outcomes: Vec<Result<(), HandlerError>> = futures::stream::iter(fresh)
            .map(|i| async move {
                let mails = match self.letters(&batch[i], holders).await {
                    Ok(mails) => mails.into_iter().map(|mail| Ok((i, mail))).collect(),
                    Err(error) => vec![Err(error)],
                };
                futures::stream::iter(mails)
            })
            .buffered(under_way)
            .flatten()
            // One at a time, in stream order.
            .map(|mail: Result<(usize, Mail), HandlerError>| async move {
                let (i, mail) = mail?;
                let key = mail.slot.key(batch[i].meta.event_id);
                if !admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key) {
                    count(mail.letter.kind, "already_sent");
                    return Ok(None);
                }
                self.admit(&batch[i], mail).await
            })
            .buffered(1)
            .map(|admitted: Result<Option<Admitted>, HandlerError>| async move {
                match admitted? {
                    Some(admitted) => self.deliver(admitted).await,
                    None => Ok(()),
                }
            })
            .buffer_unordered(under_way)
            .collect()
            .await;
        // An outage holds the whole batch (nothing is wrong with its
        // mails); any other failure has the runner try its events one by
        // one.
        let mut failures = outcomes.into_iter().filter_map(Result::err);
        let first = failures.next();
        match first {
            None => Ok(()),
            Some(error @ HandlerError::Unavailable(_)) => Err(error),
            Some(error) => Err(failures.find(|e| matches!(e, HandlerError::Unavailable(_))).unwrap_or(error)),
        }
    }
}
