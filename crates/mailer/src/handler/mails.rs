//! Which mails an event sends: each mail's slot among its event's, its
//! e-mail with the links it carries, and the budget it counts against; who
//! holds each address, asked once per batch.

use bus::request::ask;
use bus::{Delivery, HandlerError};
use links::Purpose;
use messages::service::{self as contract, AddressesRef, FindEachAddress, FoundProspect};
use messages::{EmailAddress, ProspectEvent};
use uuid::Uuid;

use super::{Mailer, count, store_unavailable};
use crate::email::{Email, Kind};
use crate::records::Budget;

/// One mail of an event.
pub(super) struct Mail {
    /// Where its sent record goes.
    pub(super) slot: Slot,
    /// The mail.
    pub(super) email: Email,
    /// The per-address budget it counts against.
    pub(super) budget: Budget,
    /// Nobody has confirmed the address it goes to: it counts against the
    /// budget of such mails too ([`crate::budget`]).
    pub(super) unconfirmed: bool,
    /// Its record was read a moment ago and said it had not gone: no need
    /// to read it again before admitting it.
    pub(super) not_done: bool,
}

impl Mail {
    fn new(slot: Slot, email: Email, budget: Budget, unconfirmed: bool) -> Self {
        Self { slot, email, budget, unconfirmed, not_done: false }
    }
}

/// Where a mail goes among those of one event: the key of its sent record
/// is `<event id>.<slot>`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    /// The one mail of a sign-up or a manage-link request.
    Only,
    /// An e-mail change's mail to the new address.
    NewAddress,
    /// An e-mail change's notice to the address in use.
    CurrentAddress,
}

impl Slot {
    /// The key of its sent record.
    pub(super) fn key(self, event_id: Uuid) -> String {
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
/// answered: by the address exactly as the event has it (the service folds
/// case as the database's key does; two spellings are asked apart, so no
/// answer stands for another spelling). When the service could not answer,
/// only the mails that needed its answer wait.
#[derive(Default)]
pub(super) struct Holders {
    found: std::collections::HashMap<String, Option<FoundProspect>>,
    /// Why the service gave no answer, if it did not.
    unanswered: Option<String>,
}

impl Holders {
    /// The live prospect holding `email`, if any.
    fn of(&self, email: &EmailAddress) -> Result<Option<&FoundProspect>, HandlerError> {
        match (self.found.get(email.as_str()), &self.unanswered) {
            (Some(found), _) => Ok(found.as_ref()),
            (None, Some(why)) => Err(HandlerError::Unavailable(
                anyhow::anyhow!("{why}").context("asking the prospects service who holds the address"),
            )),
            // A bug, not an outage: the batch's addresses were all asked.
            (None, None) => Err(HandlerError::Transient(anyhow::anyhow!("the holder of an address was not asked for"))),
        }
    }
}

impl Mailer {
    /// An e-mail of `kind` to `to`, without its links yet.
    fn compose(&self, kind: Kind, to: &str) -> Email {
        Email {
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
    pub(super) async fn holders(&self, events: &[&Delivery<ProspectEvent>]) -> Holders {
        let mut emails: Vec<EmailAddress> = events
            .iter()
            .filter_map(|delivery| match &delivery.event {
                ProspectEvent::SignedUp(event) => Some(event.details.email.clone()),
                ProspectEvent::ManageLinkRequested(event) => Some(event.email.clone()),
                _ => None,
            })
            .collect();
        emails.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        emails.dedup_by(|a, b| a.as_str() == b.as_str());
        let mut holders = Holders::default();
        for chunk in emails.chunks(contract::FIND_EACH_MAX) {
            let asked = AddressesRef { emails: chunk.to_vec() };
            match ask::<FindEachAddress>(&self.client, &asked, self.service_timeout).await {
                Ok(found) if found.holders.len() == chunk.len() => {
                    holders.found.extend(chunk.iter().map(|email| email.to_string()).zip(found.holders));
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
    pub(super) async fn mails(
        &self,
        delivery: &Delivery<ProspectEvent>,
        holders: &Holders,
    ) -> Result<Vec<Mail>, HandlerError> {
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
                let mut mail = self.compose(if known { Kind::Claim } else { Kind::Confirm }, email);
                let confirm = self.links.confirm_token(event.prospect_id, event.signed_up_at);
                mail.confirm_url = Some(self.links.url(Purpose::Confirm, &confirm));
                // The manage link only to an address nobody holds: the holder
                // of a claimed one has its own, and "it wasn't me" erases the
                // stranger's sign-up.
                if !known {
                    let manage = self.links.manage_token(event.prospect_id, event.signed_up_at);
                    mail.manage_url = Some(self.links.url(Purpose::Manage, &manage));
                }
                let not_me = self.links.not_me_token(event.prospect_id, event.signed_up_at);
                mail.not_me_url = Some(self.links.url(Purpose::NotMe, &not_me));
                let unconfirmed = holder.is_none_or(|h| !h.confirmed);
                vec![Mail { not_done: true, ..Mail::new(Slot::Only, mail, Budget::Anyone, unconfirmed) }]
            }
            ProspectEvent::EmailChangeRequested(event) => {
                let new_email = &event.details.email;
                let mut to_new = self.compose(Kind::NewAddress, new_email);
                let token = self.links.email_token(event.prospect_id, delivery.meta.event_id, event.requested_at);
                to_new.confirm_url = Some(self.links.url(Purpose::ConfirmEmail, &token));
                let mut to_current = self.compose(Kind::AddressChanging, &event.previous_email);
                to_current.new_email = Some(new_email.to_string());
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
                let mut mail = self.compose(Kind::ManageLink, &event.email);
                // Issued at the request: an owner's request ends every link
                // issued before it, this one not.
                let manage = self.links.manage_token(event.prospect_id, event.requested_at);
                mail.manage_url = Some(self.links.url(Purpose::Manage, &manage));
                let (budget, unconfirmed) =
                    if event.by_owner { (Budget::Owner, false) } else { (Budget::Anyone, !holder.confirmed) };
                vec![Mail::new(Slot::Only, mail, budget, unconfirmed)]
            }
            ProspectEvent::Updated(_) | ProspectEvent::Deleted(_) | ProspectEvent::Confirmed(_) => Vec::new(),
        })
    }

    /// Whether the mail of `slot` for this event went out (or was skipped)
    /// already.
    async fn done(&self, event_id: Uuid, slot: Slot) -> Result<bool, HandlerError> {
        self.records.done(&slot.key(event_id)).await.map_err(store_unavailable)
    }
}
