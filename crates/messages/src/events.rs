//! The prospect events.
//!
//! Events are versioned by their CloudEvents type: adding an optional field is
//! a compatible change; anything else is a new type (`…v2`). The struct keeps
//! its name and takes the new shape; the old shape becomes a struct of its
//! own (`ProspectSignedUpV1`) with one upcaster to the new one.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::email::EmailAddress;
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
    /// The earlier versions' `ce-type`s that are still read, each upcast to
    /// this one by [`upcast`](Self::upcast).
    const OLDER_TYPES: &'static [&'static str] = &[];
    /// The prospect the event is about; handlers order and de-duplicate by it.
    fn prospect_id(&self) -> Uuid;
    /// An event of one of [`OLDER_TYPES`](Self::OLDER_TYPES), read as this
    /// version; `None` for any other type. Upcasting happens here, in the
    /// contract, once: handlers only ever see the current version.
    fn upcast(ce_type: &str, data: &[u8]) -> Option<Result<Self, crate::payload::DecodeError>> {
        let _ = (ce_type, data);
        None
    }
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
    pub email: EmailAddress,
    /// Company, absent when the prospect left it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// Country of residence ("-" when not told).
    pub country: Country,
    /// Job role ("-" when not told).
    pub role: Role,
}

/// A visitor signed up (version 2: with what they agreed to, or that this
/// was not recorded).
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
    /// What the visitor agreed to by signing up; "not recorded" for a
    /// sign-up made before consent was recorded (a version 1 event, upcast).
    pub consent: Consent,
}

impl Event for ProspectSignedUp {
    const KIND: &'static str = "signedup";
    const SUBJECTS: &'static str = "events.prospect.*.signedup";
    const TYPE: &'static str = "io.signup.prospect.signedup.v2";
    const OLDER_TYPES: &'static [&'static str] = &[ProspectSignedUpV1::TYPE];
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
    fn upcast(ce_type: &str, data: &[u8]) -> Option<Result<Self, crate::payload::DecodeError>> {
        (ce_type == ProspectSignedUpV1::TYPE)
            .then(|| crate::payload::decode_as::<ProspectSignedUpV1>(ce_type, data).map(Self::from))
    }
}

/// A visitor signed up: version 1, from before consent was recorded. The
/// stream keeps these; handlers read them as version 2 (`ProspectSignedUp`,
/// through the one upcaster), and nothing publishes them any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProspectSignedUpV1 {
    /// A fresh UUIDv7 chosen by the publisher.
    pub prospect_id: Uuid,
    /// What the visitor entered.
    #[serde(flatten)]
    pub details: ProspectDetails,
    /// When the form was accepted.
    pub signed_up_at: DateTime<Utc>,
}

impl Event for ProspectSignedUpV1 {
    const KIND: &'static str = ProspectSignedUp::KIND;
    const SUBJECTS: &'static str = ProspectSignedUp::SUBJECTS;
    const TYPE: &'static str = "io.signup.prospect.signedup.v1";
    fn prospect_id(&self) -> Uuid {
        self.prospect_id
    }
}

/// The upcaster, version 1 to 2: the sign-up as it was, its consent "not
/// recorded" (signed up before consent was recorded).
impl From<ProspectSignedUpV1> for ProspectSignedUp {
    fn from(v1: ProspectSignedUpV1) -> Self {
        Self {
            prospect_id: v1.prospect_id,
            details: v1.details,
            signed_up_at: v1.signed_up_at,
            consent: Consent::NotRecorded,
        }
    }
}

/// What a person agreed to by signing up (GDPR art. 7(1): the controller
/// must be able to show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConsentWire", into = "ConsentWire")]
pub enum Consent {
    /// Signed up before consent was recorded: `{"recorded": false}`.
    NotRecorded,
    /// Agreed to the privacy notice the form showed:
    /// `{"recorded": true, "noticeVersion": …, "agreedAt": …}`.
    Recorded(ConsentRecord),
}

/// The record of an agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The version of the privacy notice agreed to: a hash of its text.
    pub notice_version: String,
    /// When: the time of the sign-up.
    pub agreed_at: DateTime<Utc>,
    /// Where from, when the operator records it (`web.privacy.record_client`).
    pub client: Option<ClientContext>,
}

/// The client a request came from, kept only where the operator chose to
/// record it (`web.privacy.record_client`): proof of where consent was
/// given, and personal data in its own right.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientContext {
    /// The client's IP address, as signup-web saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub client_address: Option<String>,
    /// The browser's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub user_agent: Option<String>,
}

impl ClientContext {
    /// Whether it holds nothing (then no client is recorded).
    pub fn is_empty(&self) -> bool {
        self.client_address.is_none() && self.user_agent.is_none()
    }
}

/// [`Consent`] as it travels: one object, whose `recorded` says which
/// fields it has.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    rename = "Consent",
    description = "What the person agreed to by signing up. recorded false: signed up before consent was recorded \
                   (a version 1 sign-up, upcast), and nothing else is present; recorded true: noticeVersion and \
                   agreedAt are present, clientAddress and userAgent when the operator records them.",
    extend(
        "if" = {"properties": {"recorded": {"const": true}}},
        "then" = {"required": ["noticeVersion", "agreedAt"]},
        "else" = {"not": {"anyOf": [
            {"required": ["noticeVersion"]}, {"required": ["agreedAt"]},
            {"required": ["clientAddress"]}, {"required": ["userAgent"]}
        ]}}
    )
)]
struct ConsentWire {
    /// Whether consent was recorded for this sign-up.
    recorded: bool,
    /// The version of the privacy notice agreed to: a hash of its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    notice_version: Option<String>,
    /// When it was agreed to: the time of the sign-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DateTime<Utc>")]
    agreed_at: Option<DateTime<Utc>>,
    /// Where from, when recorded.
    #[serde(flatten)]
    client: ClientContext,
}

impl TryFrom<ConsentWire> for Consent {
    type Error = &'static str;
    fn try_from(wire: ConsentWire) -> Result<Self, Self::Error> {
        match (wire.recorded, wire.notice_version, wire.agreed_at) {
            (false, None, None) if wire.client.is_empty() => Ok(Self::NotRecorded),
            (false, ..) => Err("a consent that was not recorded has no notice version, time or client"),
            (true, Some(notice_version), Some(agreed_at)) => Ok(Self::Recorded(ConsentRecord {
                notice_version,
                agreed_at,
                client: (!wire.client.is_empty()).then_some(wire.client),
            })),
            (true, ..) => Err("a recorded consent names its noticeVersion and agreedAt"),
        }
    }
}

impl From<Consent> for ConsentWire {
    fn from(consent: Consent) -> Self {
        match consent {
            Consent::NotRecorded => {
                Self { recorded: false, notice_version: None, agreed_at: None, client: ClientContext::default() }
            }
            Consent::Recorded(record) => Self {
                recorded: true,
                notice_version: Some(record.notice_version),
                agreed_at: Some(record.agreed_at),
                client: record.client.unwrap_or_default(),
            },
        }
    }
}

impl JsonSchema for Consent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Consent".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ConsentWire::json_schema(generator)
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
    /// When the link was followed: the time of the confirmation that
    /// consent records keep beside the sign-up's.
    pub confirmed_at: DateTime<Utc>,
    /// Where the confirming request came from, when the operator records it
    /// (`web.privacy.record_client`): `clientAddress` and `userAgent`, both
    /// optional. Added without a new version: a reader that does not know
    /// them loses nothing it relied on.
    #[serde(flatten)]
    pub client: ClientContext,
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
    pub previous_email: EmailAddress,
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
    pub email: EmailAddress,
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
