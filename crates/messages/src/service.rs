//! The `prospects` request-reply service (NATS micro-services API): its
//! subjects and the JSON of its requests and replies. `save-prospect`
//! answers; anyone (the web tier) asks. Errors come back as the service API's
//! `Nats-Service-Error` / `Nats-Service-Error-Code` headers with the codes
//! below.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::ProspectDetails;

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

/// Error code: the request is not valid JSON of the expected shape.
pub const BAD_REQUEST: usize = 400;
/// Error code: no such (live) prospect.
pub const NOT_FOUND: usize = 404;
/// Error code: the service cannot answer now (its database is down).
pub const UNAVAILABLE: usize = 503;

/// Names one prospect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProspectRef {
    /// The prospect id given at sign-up.
    pub prospect_id: Uuid,
}

/// Where a sign-up is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not in the database (yet): accepted sign-ups are saved within moments;
    /// an id that was never signed up also reads as pending.
    Pending,
    /// Saved.
    Saved,
    /// Erased at the prospect's request.
    Deleted,
}

/// The reply of [`STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The status.
    pub status: Status,
}

/// The reply of [`GET`]: a prospect's current details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}
