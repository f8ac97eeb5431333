//! The prospect events.
//!
//! Events are versioned by their CloudEvents type: adding an optional field is
//! a compatible change; anything else is a new type (`…v2`) and a new struct.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::reference::{Country, Role};

/// A message of the contract: plain data with its kind and type attached.
///
/// Every event is published on a subject of its prospect's own,
/// `events.prospect.<prospect id>.<kind>` ([`Event::subject`]), so that an
/// erasure can purge that prospect's history from the stream and nothing
/// else (see `streams`).
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The last token of its subjects, e.g. `signedup`.
    const KIND: &'static str;
    /// The subjects of every event of this kind, `events.prospect.*.<kind>`:
    /// what a consumer of this event alone filters on.
    const SUBJECTS: &'static str;
    /// The CloudEvents `ce-type`, including its version.
    const TYPE: &'static str;
    /// The prospect the event is about; handlers order and de-duplicate by it.
    fn prospect_id(&self) -> Uuid;
    /// The subject this event is published on.
    fn subject(&self) -> String {
        crate::streams::event_subject(self.prospect_id(), Self::KIND)
    }
}

/// The details a prospect gives about themselves, as they travel in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectDetails {
    /// Given name, trimmed, 1–100 characters.
    pub first_name: String,
    /// Family name, trimmed, 1–100 characters.
    pub last_name: String,
    /// E-mail address as typed (trimmed); unique per prospect, case-insensitively.
    pub email: String,
    /// Company, absent when the prospect left it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// Country of residence ("-" when not told).
    pub country: Country,
    /// Job role ("-" when not told).
    pub role: Role,
}

/// A visitor signed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectSignedUp {
    /// A fresh UUIDv7 chosen by the publisher.
    pub prospect_id: Uuid,
    /// What the visitor entered.
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// When the form was accepted.
    pub signed_up_at: DateTime<Utc>,
}

impl Event for ProspectSignedUp {
    const KIND: &'static str = "signedup";
    const SUBJECTS: &'static str = "events.prospect.*.signedup";
    const TYPE: &'static str = "io.signup.prospect.signedup.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// A prospect changed their details; the event carries the complete new
/// details, so applying it twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectUpdated {
    /// The prospect that changed.
    pub prospect_id: Uuid,
    /// The details as they are now.
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// When the change was accepted.
    pub updated_at: DateTime<Utc>,
}

impl Event for ProspectUpdated {
    const KIND: &'static str = "updated";
    const SUBJECTS: &'static str = "events.prospect.*.updated";
    const TYPE: &'static str = "io.signup.prospect.updated.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// A prospect asked to be forgotten: handlers erase their personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectDeleted {
    /// The prospect to forget.
    pub prospect_id: Uuid,
    /// When the request was accepted.
    pub deleted_at: DateTime<Utc>,
    /// The owner of the sign-up's address said it was not them ("it wasn't
    /// me", a link beside the confirmation link): this pending sign-up is
    /// erased, with every other one still pending on the address, but never
    /// a confirmed prospect that holds it. Absent (false): the owner's own
    /// erasure, which erases every sign-up holding the address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disowned: bool,
}

impl Event for ProspectDeleted {
    const KIND: &'static str = "deleted";
    const SUBJECTS: &'static str = "events.prospect.*.deleted";
    const TYPE: &'static str = "io.signup.prospect.deleted.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// The owner of the prospect's address confirmed the sign-up by following
/// the link mailed to that address (double opt-in). When another prospect
/// already holds the address, the confirmed sign-up's details replace that
/// prospect's, and the sign-up becomes an alias of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectConfirmed {
    /// The sign-up that was confirmed (the id in the confirmation link).
    pub prospect_id: Uuid,
    /// When the link was followed.
    pub confirmed_at: DateTime<Utc>,
}

impl Event for ProspectConfirmed {
    const KIND: &'static str = "confirmed";
    const SUBJECTS: &'static str = "events.prospect.*.confirmed";
    const TYPE: &'static str = "io.signup.prospect.confirmed.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// A prospect asked, on the manage page, to move to another e-mail address.
/// Nothing changes yet: the new address gets a confirmation link, the
/// previous one is told, and only following the link applies `details` (as a
/// [`ProspectUpdated`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectEmailChangeRequested {
    /// The prospect asking.
    pub prospect_id: Uuid,
    /// The details as they will be once the new address is confirmed (its
    /// `email` is the new address).
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// The address in use now, which is told about the request.
    pub previous_email: String,
    /// When the request was accepted.
    pub requested_at: DateTime<Utc>,
}

impl Event for ProspectEmailChangeRequested {
    const KIND: &'static str = "emailchange";
    const SUBJECTS: &'static str = "events.prospect.*.emailchange";
    const TYPE: &'static str = "io.signup.prospect.emailchange.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// Someone who lost their manage link asked for a new one by entering an
/// address that belongs to this prospect: the link is mailed to that address
/// only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManageLinkRequested {
    /// The prospect whose address was entered.
    pub prospect_id: Uuid,
    /// The prospect's address, as saved: where the link goes.
    pub email: String,
    /// When the request was accepted.
    pub requested_at: DateTime<Utc>,
    /// Asked for on the manage page, by someone holding a valid link: every
    /// link issued before this one stops working, and the mail counts
    /// against the owner's own budget. Absent (false): asked for on the
    /// lost-link page, by anyone who knows the address, which ends nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_owner: bool,
}

impl Event for ManageLinkRequested {
    const KIND: &'static str = "linkrequested";
    const SUBJECTS: &'static str = "events.prospect.*.linkrequested";
    const TYPE: &'static str = "io.signup.prospect.linkrequested.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}
