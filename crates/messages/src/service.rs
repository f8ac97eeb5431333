//! The `prospects` request-reply service (NATS micro-services API): its
//! endpoints, each a subject paired with the JSON of its request and reply
//! ([`Endpoint`]: [`ReferenceCountries`], [`ReferenceRoles`],
//! [`StatusOf`], [`GetProspect`], [`FindByAddress`], [`FindEachAddress`],
//! [`FindHolders`], [`ExportProspect`]). `save-prospect`
//! answers (its `prospects_service` module); anyone (the web tier, the
//! mailer) asks, with `bus::request::ask`. Errors come back as the service
//! API's `Nats-Service-Error` / `Nats-Service-Error-Code` headers with the
//! codes below.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::email::EmailAddress;
use crate::events::{ClientContext, Consent, ProspectDetails};
use crate::reference::{Country, Role};

/// The service's name, as `$SRV.PING` reports it.
pub const SERVICE_NAME: &str = "prospects";
/// Queue group shared by all instances, so each request is answered once.
pub const QUEUE_GROUP: &str = "prospects";
/// Request: empty. Reply: `[Country]` in form order.
pub const REFERENCE_COUNTRIES: &str = "prospects.reference.countries";
/// Request: empty. Reply: `[Role]` in form order.
pub const REFERENCE_ROLES: &str = "prospects.reference.roles";
/// Request: [`ProspectRef`]. Reply: [`StatusReply`].
pub const STATUS: &str = "prospects.status";
/// Request: [`ProspectRef`]. Reply: [`ProspectView`], or error [`NOT_FOUND`]
/// when the prospect is unknown or deleted.
pub const GET: &str = "prospects.get";
/// Request: [`AddressRef`]. Reply: [`FoundProspect`], the live prospect that
/// holds the address (the confirmed one, else the earliest sign-up), or
/// error [`NOT_FOUND`]. Only for those that mail the address itself (the web
/// tier's "lost my link"; the mailer asks [`FIND_EACH`]): its answer must
/// never reach the person who typed the address.
pub const FIND: &str = "prospects.find";
/// Request: [`AddressesRef`], at most [`FIND_EACH_MAX`] addresses. Reply:
/// [`FoundEach`], what [`FIND`] answers for each address, in the order
/// asked. For the mailer, which asks once per batch of events instead of
/// once per mail; the same rule holds: the answer never reaches the person
/// who typed an address.
pub const FIND_EACH: &str = "prospects.find-each";
/// The most addresses one [`FIND_EACH`] request may name (error
/// [`BAD_REQUEST`] beyond).
pub const FIND_EACH_MAX: usize = 1000;
/// Request: [`ProspectRef`]. Reply: [`ProspectExport`], or error
/// [`NOT_FOUND`]. Only for those who hold the prospect's proof of address
/// (the manage page's link) or an operator's rights.
pub const EXPORT: &str = "prospects.export";
/// Request: [`AddressRef`]. Reply: [`Holders`], every sign-up that holds the
/// address: the live prospects with it (confirmed or pending) and the
/// sign-ups merged into them. For operators (`signup trace <address>`).
pub const HOLDERS: &str = "prospects.holders";

/// One endpoint of the service: its subject, with what it is asked and what
/// it answers, as events pair a subject with a payload.
pub trait Endpoint: Send + Sync + 'static {
    /// The subject requests are sent to.
    const SUBJECT: &'static str;
    /// The endpoint's name in `$SRV.INFO` (the subject after `prospects.`).
    const NAME: &'static str;
    /// The request's JSON.
    type Request: Serialize + DeserializeOwned + JsonSchema + Send + Sync;
    /// The reply's JSON.
    type Reply: Serialize + DeserializeOwned + JsonSchema + Send + Sync;
    /// What the endpoint answers, as the AsyncAPI document says it.
    const SUMMARY: &'static str;
}

macro_rules! endpoint {
    ($(#[$doc:meta])* $name:ident, $subject:expr, $endpoint:literal, $summary:literal, $request:ty => $reply:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl Endpoint for $name {
            const SUMMARY: &'static str = $summary;
            const SUBJECT: &'static str = $subject;
            const NAME: &'static str = $endpoint;
            type Request = $request;
            type Reply = $reply;
        }
    };
}

endpoint!(
    /// [`REFERENCE_COUNTRIES`]: the countries of the form, in form order.
    ReferenceCountries, REFERENCE_COUNTRIES, "reference-countries", "The countries of the form, in form order.", () => Vec<Country>
);
endpoint!(
    /// [`REFERENCE_ROLES`]: the roles of the form, in form order.
    ReferenceRoles, REFERENCE_ROLES, "reference-roles", "The roles of the form, in form order.", () => Vec<Role>
);
endpoint!(
    /// [`STATUS`]: where a sign-up is.
    StatusOf, STATUS, "status", "Where a sign-up is (an id never signed up reads as pending).", ProspectRef => StatusReply
);
endpoint!(
    /// [`GET`]: a live prospect's details.
    GetProspect, GET, "get", "A live prospect's details; error 404 when unknown or erased.", ProspectRef => ProspectView
);
endpoint!(
    /// [`FIND`]: the live prospect holding an address.
    FindByAddress, FIND, "find", "The live prospect holding an address (the confirmed one, else the earliest); error 404 when none. Only for services that mail the address itself.", AddressRef => FoundProspect
);

endpoint!(
    /// [`FIND_EACH`]: the live prospect holding each of several addresses.
    FindEachAddress, FIND_EACH, "find-each", "For each address asked (at most 1000), the live prospect holding it, as prospects.find answers, or null; in the order asked. Only for services that mail the addresses themselves.", AddressesRef => FoundEach
);

endpoint!(
    /// [`HOLDERS`]: every sign-up that holds an address.
    FindHolders, HOLDERS, "holders", "Every sign-up that holds an address: the live prospects with it and the sign-ups merged into them. For operators.", AddressRef => Holders
);

endpoint!(
    /// [`EXPORT`]: everything held about one person.
    ExportProspect, EXPORT, "export", "Everything held about a live prospect: the record with its consent and pending change, the kinds and times of its events in the stream, the mails sent to it; error 404 when unknown or erased.", ProspectRef => ProspectExport
);

/// Error code: the request is not valid JSON of the expected shape.
pub const BAD_REQUEST: usize = 400;
/// Error code: no such (live) prospect.
pub const NOT_FOUND: usize = 404;
/// Error code: the reply could not be encoded (a bug).
pub const INTERNAL: usize = 500;
/// Error code: the service cannot answer now (its database is down).
pub const UNAVAILABLE: usize = 503;

/// Names one prospect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectRef {
    /// The prospect id given at sign-up.
    pub prospect_id: Uuid,
}

/// Names an e-mail address (compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressRef {
    /// The address as typed.
    pub email: EmailAddress,
}

/// Names several e-mail addresses (each compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressesRef {
    /// The addresses as typed, at most [`FIND_EACH_MAX`].
    #[schemars(length(max = 1000))]
    pub emails: Vec<EmailAddress>,
}

/// The reply of [`FIND_EACH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FoundEach {
    /// For each address asked, in the order asked: the live prospect
    /// holding it (the confirmed one, else the earliest), or `null`.
    pub holders: Vec<Option<FoundProspect>>,
}

/// The reply of [`FIND`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FoundProspect {
    /// The prospect holding the address.
    pub prospect_id: Uuid,
    /// The address as saved.
    pub email: EmailAddress,
    /// Whether that prospect's sign-up is confirmed.
    pub confirmed: bool,
}

/// The reply of [`HOLDERS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Holders {
    /// Each sign-up, the holders first (confirmed before pending, earlier
    /// before later), each followed by the sign-ups merged into it.
    pub sign_ups: Vec<HeldBy>,
}

/// One sign-up holding an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldBy {
    /// The sign-up's prospect id.
    pub prospect_id: Uuid,
    /// Its owner confirmed it.
    pub confirmed: bool,
    /// The prospect it was merged into, for a sign-up that lives on as an
    /// alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<Uuid>,
}

/// Where a sign-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the owner of the address to confirm it (saved or not yet);
    /// an id that was never signed up also reads as pending.
    Pending,
    /// Confirmed by the owner of the address (for a sign-up made with an
    /// address that was taken: its details were applied to that address's
    /// prospect).
    Confirmed,
    /// Erased at the prospect's request, or never confirmed in time.
    Deleted,
}

impl Status {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Deleted => "deleted",
        }
    }

    /// What the status means, as a visitor's page says it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Pending => "Waiting for you to confirm it from your inbox.",
            Self::Confirmed => "Your sign-up is confirmed. Thank you!",
            Self::Deleted => "These details have been erased.",
        }
    }
}

/// The reply of [`STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusReply {
    /// The status.
    pub status: Status,
}

/// The reply of [`GET`]: a prospect's current details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectView {
    /// The prospect's id (when a second sign-up with the same e-mail was merged
    /// into an earlier prospect, the earlier one's id).
    pub prospect_id: Uuid,
    /// The details as saved.
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// When the prospect signed up.
    pub signed_up_at: DateTime<Utc>,
    /// When the details last changed.
    pub updated_at: DateTime<Utc>,
    /// When the owner of the address confirmed the sign-up; absent while
    /// pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// An e-mail change waiting for its new address to be confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<PendingChange>,
    /// Links issued before this time open nothing (`links::Claims::current`):
    /// when the record last took another address, or its owner asked for a
    /// new link and an end to the old ones. Absent: every link since the
    /// sign-up counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links_not_before: Option<DateTime<Utc>>,
    /// What the person agreed to at sign-up (for a sign-up merged into an
    /// earlier one, the newer agreement); `{"recorded": false}` for a
    /// sign-up made before consent was recorded. Absent from a service
    /// older than consent records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// Where the confirming request came from, when the operator records
    /// the client (`web.privacy.record_client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_from: Option<ClientContext>,
}

/// The reply of [`EXPORT`]: everything the system holds about one person
/// (GDPR art. 15 and 20), for the manage page's "Download my data" and
/// `signup prospect export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectExport {
    /// When this copy was made.
    pub exported_at: DateTime<Utc>,
    /// The record: details, consent, confirmation, a pending address change.
    pub prospect: ExportedProspect,
    /// More events than one export lists ([`EXPORT_MAX_EVENTS`]): the
    /// oldest are listed, and an operator's `signup trace` shows them all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The sign-ups merged into this record (made with its address, then
    /// confirmed by its owner); their events are listed below too.
    pub merged_sign_ups: Vec<Uuid>,
    /// The events the event stream holds about this person, oldest first.
    pub events: Vec<HeldEvent>,
    /// The mails sent to this person, as the mailer's records keep them
    /// (for `[links] confirm_within_secs` and a day).
    pub mails: Vec<SentMail>,
}

/// The most events one export lists (and reads): a history longer than this
/// is cut, and says so.
pub const EXPORT_MAX_EVENTS: usize = 500;

/// The record as the export gives it: what [`ProspectView`] holds about the
/// person, without what the system keeps for itself (when links start to
/// count) or knows about others (whether a requested address is taken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedProspect {
    /// The record's id.
    pub prospect_id: Uuid,
    /// The details as saved.
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// When the person signed up.
    pub signed_up_at: DateTime<Utc>,
    /// When the details last changed.
    pub updated_at: DateTime<Utc>,
    /// When the sign-up was confirmed; absent while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    /// What was agreed to at sign-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// Where the confirmation came from, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_from: Option<ClientContext>,
    /// The details of an address change waiting for its new address to be
    /// confirmed (its `email` is the new address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_change: Option<ProspectDetails>,
}

impl From<ProspectView> for ExportedProspect {
    fn from(view: ProspectView) -> Self {
        Self {
            prospect_id: view.prospect_id,
            details: view.details,
            signed_up_at: view.signed_up_at,
            updated_at: view.updated_at,
            confirmed_at: view.confirmed_at,
            consent: view.consent,
            confirmed_from: view.confirmed_from,
            pending_change: view.pending_change.map(|change| change.details),
        }
    }
}

/// An event the stream holds: its kind and time, not its content (the
/// content is the record above, as it is now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent {
    /// Its kind (`signedup`, `confirmed`, `updated`, …).
    pub kind: String,
    /// Its CloudEvents type, with its version.
    pub event_type: String,
    /// When the stream stored it.
    pub stored_at: DateTime<Utc>,
    /// The sign-up it is about (this record's, or one merged into it).
    pub prospect_id: Uuid,
}

/// A mail sent because of one of those events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentMail {
    /// The kind of the event it answered.
    pub about: String,
    /// Which address it went to (`crate::streams::SENT_SLOTS`): `mail`, the
    /// event's address; `new-address` and `current-address`, the two of an
    /// address change.
    pub recipient: String,
    /// When the mailer recorded it as sent.
    pub sent_at: DateTime<Utc>,
}

/// A requested e-mail change, as [`ProspectView`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingChange {
    /// The `ce-id` of the `ProspectEmailChangeRequested` event: the link
    /// mailed to the new address names it, so an older link cannot apply a
    /// newer request.
    pub request_id: Uuid,
    /// The details to apply once confirmed (with the new address).
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// The new address belongs to another confirmed prospect now, so the
    /// change cannot be applied.
    pub address_taken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_as_its_json() {
        for status in [Status::Pending, Status::Confirmed, Status::Deleted] {
            let json = serde_json::to_string(&status).expect("json");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert!(!status.description().is_empty());
        }
    }
}
