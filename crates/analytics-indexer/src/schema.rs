//! The shapes the OpenAPI document describes but no handler builds as
//! such: a reference entry, the date range's query parameters, the
//! refusals every route may answer (each `runtime::ops::Problem`, every
//! service's problem body). A leaf: the handlers' annotations and the query
//! types name them, and the document lists them.

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
    BadRequest(runtime::ops::Problem),
    /// No valid token
    #[response(
        status = 401,
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "Bearer realm=\"signup-analytics\""))
    )]
    Unauthorized(runtime::ops::Problem),
    /// The index or NATS cannot answer now
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(runtime::ops::Problem),
}
