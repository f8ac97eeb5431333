//! The JSON API. Errors are `application/problem+json` (RFC 9457).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::bot_check::Proof;
use crate::domain::{Field, FieldError, SignupInput};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::submit::{self, Gate, SubmitError};

/// The body of a 202: the event is stored.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Accepted {
    /// The new prospect.
    prospect_id: uuid::Uuid,
}

/// `POST /api/prospects`: 202 with `Location` once the event is stored.
#[utoipa::path(
    request_body(content = crate::schema::SignUp, content_type = "application/json"),
    responses(
        (status = 202, description = "The sign-up is stored as an event; a confirmation mail follows",
            body = Accepted,
            headers(("Location" = String, description = "Where the sign-up's status is: /api/prospects/{id}"))),
        (status = 400, description = "The body is not a JSON object", body = runtime::ops::Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = runtime::ops::Problem,
            content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = runtime::ops::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "Some fields are invalid, or the bot check's proof (`altcha`) is missing, \
            wrong, expired or used already: each is named in `errors`",
            body = runtime::ops::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this client", body = runtime::ops::Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Sign-ups cannot be stored now; nothing was saved", body = runtime::ops::Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[post("/api/prospects")]
pub async fn create_prospect(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
    limit: web::Data<BodyLimit>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|error| {
        if crate::request::body_too_large(&error) {
            ApiError::PayloadTooLarge(limit.0)
        } else {
            ApiError::BadRequest(error.to_string())
        }
    })?;
    if !crate::request::media_type_is(&request, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let (input, altcha) = parse_json_input(&body)?;
    let proof = Proof { altcha: altcha.as_deref(), ..Proof::default() };
    let gate = Gate { bot_check: &state.bot_check, used: &state.used_proofs, proof };
    let catalog = state.catalog();
    // An API client shows the notice itself (the form's text, whose version
    // the sign-up records).
    let consent = submit::Consenting { notice: &state.privacy, request: &request };
    match submit::sign_up(&state.publisher, &catalog, &gate, &input, &consent, crate::request::traceparent(&request))
        .await
    {
        Ok(prospect_id) => Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/api/prospects/{prospect_id}")))
            .json(Accepted { prospect_id })),
        Err(SubmitError::Invalid(errors)) => Err(ApiError::Invalid(errors)),
        Err(SubmitError::Unavailable(_)) => Err(ApiError::Unavailable),
    }
}

/// The configured request body limit, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Reads the sign-up fields, and the bot check's `altcha`, from a JSON
/// object; a field of the wrong type is reported against that field rather
/// than failing the whole body.
fn parse_json_input(body: &[u8]) -> Result<(SignupInput, Option<String>), ApiError> {
    // Bytes that are not UTF-8 inside a string become U+FFFD here, which the
    // field's own check refuses by name (422); anywhere else the body is
    // not JSON (400).
    let text = String::from_utf8_lossy(body);
    let object: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
        }
        Err(error) if body.iter().all(u8::is_ascii_whitespace) => {
            let _ = error;
            return Err(ApiError::BadRequest(
                "the request body is empty; send a JSON object with the sign-up fields".into(),
            ));
        }
        Err(error) => {
            return Err(ApiError::BadRequest(format!("the request body is not valid JSON: {error}")));
        }
    };
    let mut wrong_type = Vec::new();
    let mut take = |field: Field| match object.get(field.name()) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            wrong_type.push(FieldError { field, message: "must be a string".into() });
            None
        }
    };
    let input = SignupInput {
        first_name: take(Field::FirstName),
        last_name: take(Field::LastName),
        email: take(Field::Email),
        company_name: take(Field::CompanyName),
        country: take(Field::Country),
        role: take(Field::Role),
    };
    let altcha = take(Field::Altcha);
    if wrong_type.is_empty() { Ok((input, altcha)) } else { Err(ApiError::Invalid(wrong_type)) }
}

/// `GET /api/challenge`: a new ALTCHA challenge (protocol v2), for the
/// bot check every sign-up passes. Solve it (ALTCHA's libraries do, or
/// derive keys with PBKDF2 until one starts with `keyPrefix`) and send the
/// challenge with its solution, base64 JSON, as `altcha`. It expires at
/// `expiresAt` and counts for one sign-up.
#[utoipa::path(
    responses(
        (status = 200, description = "A signed challenge; never cached", body = crate::schema::Challenge,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 429, description = "Too many requests from this client", body = runtime::ops::Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[get("/api/challenge")]
pub async fn challenge(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let challenge = state.bot_check.challenge(chrono::Utc::now()).map_err(|error| {
        tracing::error!(error = %format!("{error:#}"), "cannot make a challenge");
        ApiError::Unavailable
    })?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(challenge))
}

/// `GET /api/countries`: the countries the form offers, in form order.
#[utoipa::path(
    responses((status = 200, description = "The countries, in form order", body = Vec<crate::schema::Reference>))
)]
#[get("/api/countries")]
pub async fn countries(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.catalog().countries())
}

/// `GET /api/roles`: the roles the form offers, in form order.
#[utoipa::path(
    responses((status = 200, description = "The roles, in form order", body = Vec<crate::schema::Reference>))
)]
#[get("/api/roles")]
pub async fn roles(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.catalog().roles())
}

/// The body of `GET /api/prospects/{id}`: a status, never personal data.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ProspectStatus)]
pub(crate) struct StatusBody<'a> {
    /// The prospect.
    prospect_id: uuid::Uuid,
    /// `pending` (not confirmed yet, or not saved yet), `confirmed`,
    /// `deleted`, or `unknown` when it cannot be checked now (503).
    #[schema(pattern = "^(pending|confirmed|deleted|unknown)$")]
    status: &'a str,
    /// Why the status is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    detail: Option<&'a str>,
}

/// `GET /api/prospects/{id}`: where a sign-up is. An id that was never
/// signed up reads as `pending`, like one not saved yet. When the service
/// does not answer in time: 503 with status `unknown`.
#[utoipa::path(
    params(("id" = uuid::Uuid, Path, description = "The prospect id from the 202's body or Location")),
    responses(
        (status = 200, description = "The status: never personal data", body = StatusBody),
        (status = 404, description = "The id is not a UUID", body = runtime::ops::Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "Too many look-ups from this client", body = runtime::ops::Problem,
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The status cannot be checked now (`unknown`)",
            body = StatusBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[get("/api/prospects/{id}")]
pub async fn prospect_status(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let prospect_id: uuid::Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    Ok(match state.status(prospect_id).await {
        Ok(status) => {
            let status = match status {
                messages::service::Status::Pending => "pending",
                messages::service::Status::Confirmed => "confirmed",
                messages::service::Status::Deleted => "deleted",
            };
            HttpResponse::Ok().json(StatusBody { prospect_id, status, detail: None })
        }
        Err(error) => {
            tracing::warn!(%prospect_id, %error, "status unknown right now");
            HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, "2")).json(StatusBody {
                prospect_id,
                status: "unknown",
                detail: Some("the status cannot be checked right now; try again shortly"),
            })
        }
    })
}
