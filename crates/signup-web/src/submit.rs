//! Turning what a visitor submits into stored events; shared by the HTML
//! pages and the JSON API.

use bus::{EventContext, PublishError, Publisher};
use chrono::{DateTime, Utc};
use messages::{
    ClientContext, EmailAddress, Event, ManageLinkRequested, ProspectConfirmed, ProspectDeleted, ProspectDetails,
    ProspectEmailChangeRequested, ProspectSignedUp, ProspectUpdated,
};
use uuid::Uuid;

use crate::bot_check::{BotCheck, Proof, Refused, SpendError, UsedProofs};
use crate::catalog::Catalog;
use crate::domain::{Field, FieldError, NewProspect, SignupInput};

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The visitor's input is invalid; each error names its field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The event could not be stored now (or the bot check could not record
    /// its proof); the visitor should try again.
    #[error("not accepted now: {0:#}")]
    Unavailable(anyhow::Error),
}

impl From<PublishError> for SubmitError {
    fn from(error: PublishError) -> Self {
        SubmitError::Unavailable(error.into())
    }
}

/// What guards the way in: the bot check, the proofs it spent, and what
/// the sign-up brings as proof.
pub struct Gate<'a> {
    /// The check (off: every sign-up passes).
    pub bot_check: &'a BotCheck,
    /// Where proofs are spent.
    pub used: &'a UsedProofs,
    /// What the sign-up brings.
    pub proof: Proof<'a>,
}

/// What a sign-up agrees to, and the request it came with (where the
/// consent came from, when the operator records that).
pub struct Consenting<'a> {
    /// The notice the form showed.
    pub notice: &'a crate::privacy::PrivacyNotice,
    /// The sign-up's request.
    pub request: &'a actix_web::HttpRequest,
}

/// Parses `input`, checks the bot check's proof, spends it, and publishes
/// `ProspectSignedUp`, waiting for the PubAck. Returns the new prospect id
/// only once JetStream has stored the event. Invalid fields and a refused
/// proof are reported together (the proof as the field `altcha`); a proof
/// is spent only for a sign-up whose fields are valid, and then never
/// counts again, even when the publish fails (the page asks for a new one).
pub async fn sign_up(
    publisher: &Publisher,
    catalog: &Catalog,
    gate: &Gate<'_>,
    input: &SignupInput,
    consent: &Consenting<'_>,
    traceparent: Option<String>,
) -> Result<Uuid, SubmitError> {
    let parsed = NewProspect::parse(input, catalog);
    let checked =
        if gate.bot_check.enabled() { gate.bot_check.check(&gate.proof, Utc::now()).map(Some) } else { Ok(None) };
    let refused = |refused: Refused| FieldError { field: Field::Altcha, message: refused.to_string() };
    let (prospect, ticket) = match (parsed, checked) {
        (Ok(prospect), Ok(ticket)) => (prospect, ticket),
        (parsed, checked) => {
            let mut errors = parsed.err().unwrap_or_default();
            errors.extend(checked.err().map(refused));
            return Err(SubmitError::Invalid(errors));
        }
    };
    if let Some(ticket) = ticket {
        match gate.used.spend(&ticket).await {
            Ok(()) => {}
            Err(SpendError::Replayed) => return Err(SubmitError::Invalid(vec![refused(Refused::Replayed)])),
            Err(SpendError::Unavailable(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "not accepted: the bot check cannot record the proof");
                return Err(SubmitError::Unavailable(error));
            }
        }
    }
    let signed_up_at = Utc::now();
    let event = ProspectSignedUp {
        prospect_id: Uuid::now_v7(),
        details: prospect.into_details(),
        signed_up_at,
        consent: consent.notice.consent(signed_up_at, consent.request),
    };
    publish(publisher, &event, traceparent).await?;
    Ok(event.prospect_id)
}

/// What a change on the manage page became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The details changed now (`ProspectUpdated`).
    Applied,
    /// The address changed: nothing changes until the new address is
    /// confirmed (`ProspectEmailChangeRequested`).
    AwaitsNewAddress,
}

/// Parses `input` as the new details of the prospect that now has
/// `current`. The same address (in any case) publishes `ProspectUpdated`;
/// another address publishes `ProspectEmailChangeRequested` instead, so the
/// change waits for the new address to be confirmed.
pub async fn update(
    publisher: &Publisher,
    catalog: &Catalog,
    prospect_id: Uuid,
    current: &ProspectDetails,
    input: &SignupInput,
    traceparent: Option<String>,
) -> Result<Change, SubmitError> {
    let details = NewProspect::parse(input, catalog).map_err(SubmitError::Invalid)?.into_details();
    // The same address in another ASCII case is no move (as before the
    // contract's EmailAddress: its key folds more than this check does).
    if details.email.as_str().eq_ignore_ascii_case(current.email.as_str()) {
        let event = ProspectUpdated { prospect_id, details, updated_at: Utc::now() };
        publish(publisher, &event, traceparent).await?;
        return Ok(Change::Applied);
    }
    let event = ProspectEmailChangeRequested {
        prospect_id,
        details,
        previous_email: current.email.clone(),
        requested_at: Utc::now(),
    };
    publish(publisher, &event, traceparent).await?;
    Ok(Change::AwaitsNewAddress)
}

/// Publishes `ProspectUpdated` with details that were already checked (a
/// confirmed e-mail change); returns the change's time, from which the
/// record's links count once it moved to the new address.
pub async fn apply(
    publisher: &Publisher,
    prospect_id: Uuid,
    details: ProspectDetails,
    traceparent: Option<String>,
) -> Result<DateTime<Utc>, SubmitError> {
    let event = ProspectUpdated { prospect_id, details, updated_at: Utc::now() };
    publish(publisher, &event, traceparent).await?;
    Ok(event.updated_at)
}

/// The namespace of confirmations' event ids (UUIDv5 of the prospect id).
const CONFIRMATIONS: Uuid = uuid::uuid!("0192f0c1-7a3b-5cde-8f01-636f6e666972");

/// The namespace of "it wasn't me" erasures' event ids (UUIDv5 of the
/// prospect id).
const DISOWNINGS: Uuid = uuid::uuid!("0192f0c1-7a3b-5cde-8f01-6469736f776e");

/// Publishes `ProspectConfirmed` for `prospect_id`. Its event id is the
/// prospect's own (UUIDv5), so confirming twice within the stream's duplicate
/// window stores one event, and a later one is skipped by every handler as
/// applied already; the pages publish it only for a sign-up still pending.
/// `client` is where the confirming request came from, when the operator
/// records it.
pub async fn confirm(
    publisher: &Publisher,
    prospect_id: Uuid,
    client: Option<ClientContext>,
    traceparent: Option<String>,
) -> Result<(), SubmitError> {
    let event = ProspectConfirmed { prospect_id, confirmed_at: Utc::now(), client: client.unwrap_or_default() };
    let context = EventContext { id: Uuid::new_v5(&CONFIRMATIONS, prospect_id.as_bytes()), ..EventContext::new() };
    publish_in(publisher, &event, context.with_traceparent(traceparent)).await
}

/// `ManageLinkRequested` from the lost-link page: the mailer sends a new
/// manage link to `email`, the prospect's own address; older links still
/// work (anyone who knows the address may ask).
pub fn link_request(prospect_id: Uuid, email: EmailAddress) -> ManageLinkRequested {
    ManageLinkRequested { prospect_id, email, requested_at: Utc::now(), by_owner: false }
}

/// Publishes `ManageLinkRequested` from the manage page: a new link to the
/// prospect's address, and an end to every link issued before it.
pub async fn renew_link(
    publisher: &Publisher,
    prospect_id: Uuid,
    email: EmailAddress,
    traceparent: Option<String>,
) -> Result<(), SubmitError> {
    let event = ManageLinkRequested { by_owner: true, ..link_request(prospect_id, email) };
    publish(publisher, &event, traceparent).await
}

/// Publishes `ProspectDeleted` for `prospect_id`.
pub async fn erase(publisher: &Publisher, prospect_id: Uuid, traceparent: Option<String>) -> Result<(), SubmitError> {
    publish(publisher, &ProspectDeleted { prospect_id, deleted_at: Utc::now(), disowned: false }, traceparent).await
}

/// Publishes the erasure of `prospect_id` that its address's owner asked
/// for with "it wasn't me" (`ProspectDeleted` with `disowned`): one event id
/// per sign-up, so that pressing twice stores it once.
pub async fn disown(publisher: &Publisher, prospect_id: Uuid, traceparent: Option<String>) -> Result<(), SubmitError> {
    let event = ProspectDeleted { prospect_id, deleted_at: Utc::now(), disowned: true };
    let context = EventContext { id: Uuid::new_v5(&DISOWNINGS, prospect_id.as_bytes()), ..EventContext::new() };
    publish_in(publisher, &event, context.with_traceparent(traceparent)).await
}

async fn publish<E: Event>(publisher: &Publisher, event: &E, traceparent: Option<String>) -> Result<(), SubmitError> {
    publish_in(publisher, event, EventContext::new().with_traceparent(traceparent)).await
}

/// Publishes `event` with these CloudEvents attributes, waiting for the PubAck.
pub async fn publish_in<E: Event>(publisher: &Publisher, event: &E, context: EventContext) -> Result<(), SubmitError> {
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
