//! Stream and subject names shared by publishers and consumers.
//!
//! Every event has a subject of its prospect's own:
//! `events.prospect.<prospect id>.<kind>`. Consumers filter on
//! `events.prospect.>` (or `events.prospect.*.<kind>`), so the per-prospect
//! token costs them nothing, and an erasure can purge exactly one prospect's
//! events that hold personal data ([`PERSONAL_KINDS`]), and its dead letters
//! (`dlq.prospect.<handler>.<prospect id>.<kind>`).

use uuid::Uuid;

/// The JetStream stream holding every prospect event.
pub const PROSPECTS_STREAM: &str = "PROSPECTS";

/// The subjects captured by [`PROSPECTS_STREAM`].
pub const PROSPECTS_SUBJECTS: &str = "events.prospect.>";

/// The stream holding dead letters (events a handler could not apply).
pub const DLQ_STREAM: &str = "PROSPECTS_DLQ";

/// The subjects captured by [`DLQ_STREAM`].
pub const DLQ_SUBJECTS: &str = "dlq.prospect.>";

/// The key-value bucket of suppressed addresses: keys are
/// `links::Links::suppression_key` digests (never an address), each kept
/// `mailer.suppress_days`. signup-web writes one when the owner of an
/// address presses "it wasn't me"; the mailer sends nothing about a sign-up
/// to a suppressed address; `signup suppression remove` lifts one.
pub const SUPPRESSED_BUCKET: &str = "MAILER_SUPPRESSED";

/// The mailer's key-value bucket of mails done: key `<event id>.<slot>`
/// (one of [`SENT_SLOTS`]), value `sent`, `suppressed` or `replaced`. The
/// export (`prospects.export`) reads it to list the mails sent to a person.
pub const SENT_BUCKET: &str = "MAILER_SENT";

/// The slots of an event's mails in [`SENT_BUCKET`]: `mail`, the one mail
/// of a sign-up or a link request; `new-address` and `current-address`, the
/// two of an address change.
pub const SENT_SLOTS: [&str; 3] = [MAIL_SLOT, NEW_ADDRESS_SLOT, CURRENT_ADDRESS_SLOT];
/// The one mail of a sign-up or a link request.
pub const MAIL_SLOT: &str = "mail";
/// An address change's mail to the new address.
pub const NEW_ADDRESS_SLOT: &str = "new-address";
/// An address change's notice to the address in use.
pub const CURRENT_ADDRESS_SLOT: &str = "current-address";

/// The slots of [`SENT_SLOTS`] an event of `kind` can have mails in: one
/// for a sign-up or a link request, two for an address change, none else.
pub fn sent_slots(kind: &str) -> &'static [&'static str] {
    match kind {
        "signedup" | "linkrequested" => &SENT_SLOTS[..1],
        "emailchange" => &SENT_SLOTS[1..],
        _ => &[],
    }
}

/// The subject of an event of `kind` about `prospect_id`.
pub fn event_subject(prospect_id: Uuid, kind: &str) -> String {
    format!("events.prospect.{prospect_id}.{kind}")
}

/// The kinds of event the stream carries (the last token of their subjects).
pub const KINDS: [&str; 6] = ["signedup", "updated", "deleted", "confirmed", "emailchange", "linkrequested"];

/// The kinds of event whose payload holds personal data (a name, an
/// address, a company; a confirmation the confirming client's address and
/// `User-Agent`, when the operator records them). Only these are purged at
/// an erasure: the erasure itself (`deleted`) holds none, and its dead
/// letter must stay until it is applied.
pub const PERSONAL_KINDS: [&str; 5] = ["signedup", "updated", "confirmed", "emailchange", "linkrequested"];

/// Whether the event on `subject` holds personal data (see [`PERSONAL_KINDS`]).
pub fn carries_personal_data(subject: &str) -> bool {
    subject.rsplit('.').next().is_some_and(|kind| PERSONAL_KINDS.contains(&kind))
}

/// The prospect an event subject is about, when it names one.
pub fn prospect_of(subject: &str) -> Option<Uuid> {
    let mut tokens = subject.strip_prefix("events.prospect.")?.split('.');
    let id = tokens.next()?.parse().ok()?;
    (tokens.next().is_some() && tokens.next().is_none()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prospect_has_subjects_of_its_own() {
        let id = Uuid::now_v7();
        assert_eq!(event_subject(id, "signedup"), format!("events.prospect.{id}.signedup"));
        assert_eq!(prospect_of(&event_subject(id, "deleted")), Some(id));
        assert_eq!(prospect_of("events.prospect.signedup"), None, "an old-style subject names no prospect");
        assert_eq!(prospect_of(&format!("events.prospect.{id}.a.b")), None);
        assert!(carries_personal_data(&event_subject(id, "signedup")));
        assert!(!carries_personal_data(&event_subject(id, "deleted")));
    }
}
