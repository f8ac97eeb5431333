//! The shapes the OpenAPI document describes but no handler builds as
//! such: a reference entry, the problem body (`runtime::ops::Problem`'s shape),
//! the date range's query parameters, the refusals every route may answer.
//! A leaf: the handlers' annotations and the query types name them, and the
//! document lists them.

use serde::Serialize;
use utoipa::ToSchema;

/// A country or role: its code and its name.
#[derive(Serialize, ToSchema)]
pub struct Reference {
    /// The code (`-`: not told).
    code: String,
    /// The name shown.
    name: String,
}

/// An RFC 9457 problem (`application/problem+json`), `runtime::ops::Problem`'s
/// shape.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what happened.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
}

/// The sign-up days a summary or a search covers (UTC, both ends included).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First sign-up day
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last sign-up day; before `from`, no day is
    #[param(format = Date)]
    pub to: Option<String>,
}

/// What every analytics route may answer besides its own 200, each an RFC
/// 9457 problem (the API's errors, `http::ApiError`).
#[derive(utoipa::IntoResponses)]
pub enum Refusals {
    /// A parameter is malformed; the detail names it
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No valid token
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "Bearer realm=\"signup-analytics\""))
    )]
    Unauthorized(Problem),
    /// The index or NATS cannot answer now
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}
