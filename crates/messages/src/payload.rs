//! Reading one payload as one event type, and why a payload can fail to
//! become an event. A leaf: the upcasters in `events` read older versions
//! with it, and `decode` reads the current ones.

use serde::de::DeserializeOwned;

/// Why a payload could not become an event. Both cases are permanent: the
/// same bytes will never decode on a later try.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The `ce-type` is not one this set of events understands (for example
    /// a newer version).
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A version of a known event that this build does not read: a newer
    /// one (its handler must be upgraded first), or one too old to upcast.
    #[error(
        "event type {ce_type:?} is a version this handler does not read (it reads {reads}): upgrade the handler, then replay this dead letter"
    )]
    UnsupportedVersion {
        /// The type the message claimed.
        ce_type: String,
        /// The versions of that event this build reads.
        reads: String,
    },
    /// The payload is not valid JSON for the event type.
    #[error("invalid {ce_type} payload: {source}")]
    InvalidPayload {
        /// The type the payload claimed to be.
        ce_type: String,
        /// What serde found wrong.
        source: serde_json::Error,
    },
}

/// `data` as the JSON of `E`, the event type `ce_type` names.
pub(crate) fn decode_as<E: DeserializeOwned>(ce_type: &str, data: &[u8]) -> Result<E, DecodeError> {
    serde_json::from_slice(data).map_err(|source| DecodeError::InvalidPayload { ce_type: ce_type.to_owned(), source })
}
