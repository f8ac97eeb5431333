//! The HTTP side: the analytics API, the dashboard, access control, health.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, web};
use askama::Template;
use chrono::NaiveDate;
use runtime::ops::Problem;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::dashboard::{FilterView, html};
use crate::index::ProspectIndex;
use crate::query::{DateRange, Search, SearchPage, Summary};
use crate::session::Sessions;
use crate::settings::AnalyticsSettings;

/// The dashboard's sessions for these settings: the token signs them,
/// `Secure` when the public URL is HTTPS.
pub fn session_for(analytics: &AnalyticsSettings, links: &links::LinkSettings) -> anyhow::Result<Sessions> {
    let token = analytics.token.as_ref().ok_or_else(|| anyhow::anyhow!("analytics.token is not set"))?;
    let secure = links.base_url.trim().to_ascii_lowercase().starts_with("https://");
    Ok(Sessions::new(token, analytics.session_secs, secure))
}

/// Shared by all workers.
pub struct HttpState {
    /// The index to query.
    pub index: Arc<ProspectIndex>,
    /// The access token, if configured.
    pub token: Option<SecretString>,
    /// The dashboard's login sessions.
    pub sessions: Sessions,
    /// JetStream, for the delivery ledger.
    pub js: bus::async_nats::jetstream::Context,
    /// The event stream the ledger reads.
    pub stream: bus::settings::StreamSettings,
}

impl HttpState {
    fn token_matches(&self, presented: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|expected| bool::from(presented.as_bytes().ct_eq(expected.expose_secret().as_bytes())))
    }

    /// Whether the request carries the token (`Authorization: Bearer`): what
    /// the API takes.
    fn authorized(&self, request: &HttpRequest) -> bool {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        bearer.is_some_and(|t| self.token_matches(t))
    }

    /// The token, or a browser's login session: what the dashboard takes.
    fn dashboard_authorized(&self, request: &HttpRequest) -> bool {
        self.authorized(request) || self.sessions.valid(request)
    }
}

/// Why an analytics request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid token.
    #[error("a valid access token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// A query parameter is malformed; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// The index failed.
    #[error("the index cannot answer right now")]
    Internal(#[from] anyhow::Error),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(error) = self {
            tracing::error!(error = %format!("{error:#}"), "index query failed");
        }
        let status = self.status_code();
        let headers = if status == StatusCode::UNAUTHORIZED {
            vec![(header::WWW_AUTHENTICATE, "Bearer realm=\"signup-analytics\"".to_owned())]
        } else {
            Vec::new()
        };
        Problem::new(status, self.to_string()).response(&headers)
    }
}

/// Query parameters, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RawParams {
    q: Option<String>,
    country: Option<String>,
    role: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
    token: Option<String>,
}

/// `YYYY-MM-DD`, digits and dashes where RFC 3339 puts them.
fn is_full_date(value: &str) -> bool {
    value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
}

/// Who asks: the dashboard's form sends every field, empty ones included, as
/// typed; the API takes exactly what its OpenAPI document says (a parameter
/// is absent or a value of its format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Form,
    Api,
}

/// The form's blank fields mean "any"; the API's parameters are left out
/// for that, so a blank or padded one is refused as malformed.
fn given(caller: Caller, value: &Option<String>) -> Option<&str> {
    match caller {
        Caller::Form => value.as_deref().map(str::trim).filter(|v| !v.is_empty()),
        Caller::Api => value.as_deref(),
    }
}

fn read_query(request: &HttpRequest) -> Result<RawParams, ApiError> {
    serde_urlencoded::from_str(request.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be read: {e}")))
}

/// `from` and `to`.
fn parse_range(raw: &RawParams, caller: Caller) -> Result<DateRange, ApiError> {
    let date = |name: &str, value: &Option<String>| -> Result<Option<NaiveDate>, ApiError> {
        match given(caller, value) {
            None => Ok(None),
            // RFC 3339's full-date exactly (the parser alone would take
            // "2026-1-5" or "+2026-01-05").
            Some(v) if is_full_date(v) => NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("{name} must be a date like 2026-11-21, not {v:?}"))),
            Some(v) => Err(ApiError::BadRequest(format!("{name} must be a date like 2026-11-21, not {v:?}"))),
        }
    };
    let range = DateRange { from: date("from", &raw.from)?, to: date("to", &raw.to)? };
    // A reversed range holds no day: the API answers it (with nothing), the
    // dashboard points out the slip.
    if let (Caller::Form, Some(from), Some(to)) = (caller, range.from, range.to)
        && from > to
    {
        return Err(ApiError::BadRequest(format!("from ({from}) must not be after to ({to})")));
    }
    Ok(range)
}

/// Every parameter of a search (the range, the words, the codes, the page).
fn parse_params(request: &HttpRequest, caller: Caller) -> Result<(RawParams, Search), ApiError> {
    let raw = read_query(request)?;
    let range = parse_range(&raw, caller)?;
    let code = |name: &str, value: &Option<String>| -> Result<Option<String>, ApiError> {
        match given(caller, value) {
            None => Ok(None),
            Some(v) if (1..=3).contains(&v.len()) && (v == "-" || v.chars().all(|c| c.is_ascii_alphanumeric())) => {
                Ok(Some(v.to_owned()))
            }
            Some(v) => Err(ApiError::BadRequest(format!("{name} must be a code like GB, not {v:?}"))),
        }
    };
    let page = match given(caller, &raw.page) {
        None => 1,
        // Digits only (`parse` alone would take "+2").
        Some(v) => Some(v)
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|p| (1..=10_000).contains(p))
            .ok_or_else(|| ApiError::BadRequest(format!("page must be a whole number from 1 to 10000, not {v:?}")))?,
    };
    let text = raw.q.clone().unwrap_or_default();
    if text.chars().count() > 200 {
        return Err(ApiError::BadRequest("q must be at most 200 characters".into()));
    }
    let search = Search { text, country: code("country", &raw.country)?, role: code("role", &raw.role)?, range, page };
    Ok((raw, search))
}

/// `GET /api/analytics/summary?from=&to=`
#[utoipa::path(
    operation_id = "summary",
    params(crate::schema::RangeParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts of live prospects signed up in the range", body = Summary),
        crate::schema::Refusals,
    )
)]
#[get("/api/analytics/summary")]
pub async fn api_summary(state: web::Data<HttpState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !state.authorized(&request) {
        return Err(ApiError::Unauthorized);
    }
    // Only the range: the search's parameters are not the summary's.
    let range = parse_range(&read_query(&request)?, Caller::Api)?;
    let index = Arc::clone(&state.index);
    let summary = web::block(move || index.summary(range)).await.map_err(|e| anyhow::anyhow!("{e}"))??;
    Ok(HttpResponse::Ok().json(summary))
}

/// `GET /api/analytics/delivery/{prospect_id}`: where each of the
/// prospect's events stands with each handler (the `signup trace` ledger,
/// see `bus::ledger`), for operators with the token.
#[utoipa::path(
    operation_id = "delivery",
    params(("prospect_id" = uuid::Uuid, Path, description = "The prospect")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each of the prospect's events and where it stands with each handler \
            (the JSON of `signup trace --json`)", body = Object),
        crate::schema::Refusals,
    )
)]
#[get("/api/analytics/delivery/{prospect_id}")]
pub async fn api_delivery(
    state: web::Data<HttpState>,
    request: HttpRequest,
    prospect_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.authorized(&request) {
        return Err(ApiError::Unauthorized);
    }
    let prospect_id: uuid::Uuid = prospect_id
        .parse()
        .map_err(|_| ApiError::BadRequest("prospect_id: must be a prospect id (a UUID)".to_owned()))?;
    let ledger = bus::ledger::Ledger::read(&state.js, &state.stream, prospect_id).await?;
    Ok(HttpResponse::Ok().json(ledger))
}

/// `GET /api/analytics/search?q=&country=&role=&from=&to=&page=`
#[utoipa::path(
    operation_id = "search",
    params(
        crate::schema::RangeParams,
        ("q" = Option<String>, Query, max_length = 200,
            description = "Words matched as prefixes (and loosely) against names, address and company"),
        ("country" = Option<String>, Query, pattern = "^(-|[A-Za-z0-9]{1,3})$", description = "A country code"),
        ("role" = Option<String>, Query, pattern = "^(-|[A-Za-z0-9]{1,3})$", description = "A role code"),
        ("page" = Option<u16>, Query, minimum = 1, maximum = 10000, description = "1-based page of 20"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of live prospects", body = SearchPage),
        crate::schema::Refusals,
    )
)]
#[get("/api/analytics/search")]
pub async fn api_search(state: web::Data<HttpState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !state.authorized(&request) {
        return Err(ApiError::Unauthorized);
    }
    let (_, search) = parse_params(&request, Caller::Api)?;
    let index = Arc::clone(&state.index);
    let page = web::block(move || index.search(&search)).await.map_err(|e| anyhow::anyhow!("{e}"))??;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    message: Option<&'a str>,
}

fn login_page(message: Option<&str>) -> HttpResponse {
    let mut response = html(StatusCode::UNAUTHORIZED, &LoginPage { message });
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"signup-analytics\""));
    response
}

fn with_login_cookie(state: &HttpState) -> HttpResponse {
    HttpResponse::SeeOther().cookie(state.sessions.issue()).insert_header((header::LOCATION, "/analytics")).finish()
}

/// `POST /analytics/logout`: ends the browser's session.
pub async fn logout(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::SeeOther().cookie(state.sessions.end()).insert_header((header::LOCATION, "/analytics")).finish()
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /analytics/login`: sets the cookie for a valid token.
pub async fn login(state: web::Data<HttpState>, form: web::Form<LoginForm>) -> HttpResponse {
    if state.token_matches(form.token.trim()) {
        with_login_cookie(&state)
    } else {
        login_page(Some("That token is not valid."))
    }
}

/// `GET /analytics`: the dashboard. `?token=` logs a browser in (the link
/// `scripts/run` prints) and redirects to a clean URL.
pub async fn dashboard(state: web::Data<HttpState>, request: HttpRequest) -> HttpResponse {
    let (raw, search) = match parse_params(&request, Caller::Form) {
        Ok(parsed) => parsed,
        Err(error) => {
            return crate::dashboard::error_page(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    if let Some(token) = raw.token.as_deref() {
        return if state.token_matches(token) {
            with_login_cookie(&state)
        } else {
            login_page(Some("That token is not valid."))
        };
    }
    if !state.dashboard_authorized(&request) {
        return login_page(None);
    }
    let index = Arc::clone(&state.index);
    let query = search.clone();
    let result = web::block(move || -> anyhow::Result<(Summary, SearchPage)> {
        Ok((index.summary(query.range)?, index.search(&query)?))
    })
    .await;
    match result {
        Ok(Ok((summary, page))) => crate::dashboard::render(&raw_view(&raw), &summary, &page),
        Ok(Err(error)) => {
            tracing::error!(error = %format!("{error:#}"), "dashboard query failed");
            crate::dashboard::error_page(StatusCode::SERVICE_UNAVAILABLE, "The index cannot answer right now.")
        }
        Err(error) => {
            tracing::error!(%error, "dashboard query panicked");
            crate::dashboard::error_page(StatusCode::SERVICE_UNAVAILABLE, "The index cannot answer right now.")
        }
    }
}

fn raw_view(raw: &RawParams) -> FilterView {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    FilterView { q: v(&raw.q), country: v(&raw.country), role: v(&raw.role), from: v(&raw.from), to: v(&raw.to) }
}
