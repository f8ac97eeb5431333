//! Turning what a visitor submits into stored events; shared by the HTML
//! pages and the JSON API.

use bus::{EventContext, PublishError, Publisher};
use chrono::Utc;
use messages::{Event, ProspectDeleted, ProspectSignedUp, ProspectUpdated};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::domain::{FieldError, NewProspect, SignupInput};

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The visitor's input is invalid; each error names its field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The event could not be stored now; the visitor should try again.
    #[error("event not stored: {0}")]
    Unavailable(#[from] PublishError),
}

/// Parses `input` and publishes `ProspectSignedUp`, waiting for the PubAck.
/// Returns the new prospect id only once JetStream has stored the event.
pub async fn sign_up(
    publisher: &Publisher,
    catalog: &Catalog,
    input: &SignupInput,
    traceparent: Option<String>,
) -> Result<Uuid, SubmitError> {
    let prospect = NewProspect::parse(input, catalog).map_err(SubmitError::Invalid)?;
    let event =
        ProspectSignedUp { prospect_id: Uuid::now_v7(), details: prospect.into_details(), signed_up_at: Utc::now() };
    publish(publisher, &event, traceparent).await?;
    Ok(event.prospect_id)
}

/// Parses `input` and publishes `ProspectUpdated` for `prospect_id`.
pub async fn update(
    publisher: &Publisher,
    catalog: &Catalog,
    prospect_id: Uuid,
    input: &SignupInput,
    traceparent: Option<String>,
) -> Result<(), SubmitError> {
    let prospect = NewProspect::parse(input, catalog).map_err(SubmitError::Invalid)?;
    let event = ProspectUpdated { prospect_id, details: prospect.into_details(), updated_at: Utc::now() };
    publish(publisher, &event, traceparent).await
}

/// Publishes `ProspectDeleted` for `prospect_id`.
pub async fn erase(publisher: &Publisher, prospect_id: Uuid, traceparent: Option<String>) -> Result<(), SubmitError> {
    publish(publisher, &ProspectDeleted { prospect_id, deleted_at: Utc::now() }, traceparent).await
}

async fn publish<E: Event>(publisher: &Publisher, event: &E, traceparent: Option<String>) -> Result<(), SubmitError> {
    let context = EventContext::new().with_traceparent(traceparent);
    match publisher.publish(event, &context).await {
        Ok(published) => {
            // Debug: the access log already has a line per request.
            tracing::debug!(event_id = %published.event_id, prospect_id = %event.prospect_id(), ce_type = E::TYPE,
                stream_sequence = published.stream_sequence, "event accepted");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(event_id = %context.id, ce_type = E::TYPE, %error, "not accepted: event not stored");
            Err(error.into())
        }
    }
}

/// A `traceparent` header worth passing on (W3C: version-traceid-spanid-flags).
pub fn valid_traceparent(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2))
        .then(|| value.trim().to_ascii_lowercase())
}
