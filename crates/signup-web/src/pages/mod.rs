//! The HTML pages, one module per flow, each registering the routes it
//! serves (`startup` composes them): the sign-up form, the pages the links in
//! mails open, "lost your link?", and their scripts.
//!
//! # Layout
//! - [`signup`]: home, the sign-up form, the thank-you page.
//! - [`confirm`]: a confirmation mail's links (confirm, "it wasn't me") and
//!   a new address's confirmation.
//! - [`manage`]: the manage page and what it does (change, confirm, a new
//!   link, erase).
//! - [`my_data`]: "Download my data", and the consent record the pages show.
//! - [`new_link`]: "lost your link?".
//! - [`assets`]: the scripts and the style sheet.
//! - here: what they share: rendering, the error pages, reading a form, and
//!   the one check of a mailed link (`linked`).

pub mod assets;
pub mod confirm;
pub mod manage;
pub mod my_data;
pub mod new_link;
pub mod signup;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use links::{Claims, Purpose};
use messages::ProspectDetails;
use messages::service::ProspectView;
use uuid::Uuid;

use crate::domain::{Field, FieldError, SignupInput};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
}

/// The values shown in the form: what the visitor typed, or defaults.
struct FormValues<'a> {
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    company_name: &'a str,
    country: &'a str,
    role: &'a str,
}

impl<'a> FormValues<'a> {
    fn of(input: &'a SignupInput) -> Self {
        let text = |v: &'a Option<String>| v.as_deref().unwrap_or("");
        let code = |v: &'a Option<String>| v.as_deref().map(str::trim).unwrap_or(messages::reference::NOT_TELLING);
        Self {
            first_name: text(&input.first_name),
            last_name: text(&input.last_name),
            email: text(&input.email),
            company_name: text(&input.company_name),
            country: code(&input.country),
            role: code(&input.role),
        }
    }
}

fn input_of(details: &ProspectDetails) -> SignupInput {
    SignupInput {
        first_name: Some(details.first_name.clone()),
        last_name: Some(details.last_name.clone()),
        email: Some(details.email.to_string()),
        company_name: details.company_name.clone(),
        country: Some(details.country.code.clone()),
        role: Some(details.role.code.clone()),
    }
}

/// One optional message per field, for the template.
#[derive(Default)]
struct FormErrors {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    company_name: Option<String>,
    country: Option<String>,
    role: Option<String>,
    altcha: Option<String>,
}

impl FormErrors {
    fn of(errors: &[FieldError]) -> Self {
        let mut out = Self::default();
        for error in errors {
            let slot = match error.field {
                Field::FirstName => &mut out.first_name,
                Field::LastName => &mut out.last_name,
                Field::Email => &mut out.email,
                Field::CompanyName => &mut out.company_name,
                Field::Country => &mut out.country,
                Field::Role => &mut out.role,
                Field::Altcha => &mut out.altcha,
            };
            slot.get_or_insert_with(|| error.message.clone());
        }
        out
    }

    fn is_empty(&self) -> bool {
        [&self.first_name, &self.last_name, &self.email, &self.company_name, &self.country, &self.role, &self.altcha]
            .iter()
            .all(|e| e.is_none())
    }
}

fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type(ContentType::html()).body(body),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

fn retry_later(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

fn see_other(location: String) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// A short page with a title and a sentence, for error statuses.
pub fn message(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    html(status, &MessagePage { title, text })
}

const NOT_SAVED: &str = "We could not record this just now. Nothing was changed; your answers are kept below — please try again in a moment.";

/// Why a page request is answered with an error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    TooLarge,
    /// The body is not a form.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body could not be read.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Nothing here — also for a bad, expired or foreign manage link and for
    /// an unknown or erased prospect, alike, so the answer reveals nothing.
    #[error("not found")]
    NotFound,
    /// A dependency does not answer now; try again.
    #[error("unavailable")]
    Unavailable,
}

impl actix_web::ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            PageError::TooLarge => {
                message(status, "Too much data", "The form sent more data than we accept. Please shorten your answers.")
            }
            PageError::UnsupportedMediaType => {
                message(status, "Unsupported form encoding", "Please submit the form from its page.")
            }
            PageError::BadRequest(detail) => message(status, "Bad request", detail),
            PageError::NotFound => message(status, "Page not found", "There is nothing at this address."),
            PageError::Unavailable => retry_later(message(
                status,
                "Please try again",
                "We cannot do this right now. Nothing was changed; please try again in a moment.",
            )),
        }
    }
}

/// The body of a form post.
fn read_body(request: &HttpRequest, body: Result<web::Bytes, actix_web::Error>) -> Result<web::Bytes, PageError> {
    let body = match body {
        Ok(body) => body,
        Err(error) if crate::request::body_too_large(&error) => return Err(PageError::TooLarge),
        Err(error) => return Err(PageError::BadRequest(error.to_string())),
    };
    if !crate::request::media_type_is(request, "application/x-www-form-urlencoded") {
        return Err(PageError::UnsupportedMediaType);
    }
    Ok(body)
}

/// Reads a form-encoded body.
fn read_form(request: &HttpRequest, body: Result<web::Bytes, actix_web::Error>) -> Result<SignupInput, PageError> {
    let body = read_body(request, body)?;
    serde_urlencoded::from_bytes(&body).map_err(|_| PageError::BadRequest("The form data could not be read.".into()))
}

/// The live prospect a mailed link of `purpose` opens, with what the link
/// says. 404, alike, for a link that is not genuine (forged, altered, of
/// another purpose, expired), for a prospect that is gone, and for a link
/// issued before the prospect's links count: one mailed to an earlier
/// address, or ended by the owner's request for a new one. 503 when the
/// `prospects` service does not answer. Every link page goes through here.
async fn linked(state: &AppState, purpose: Purpose, token: &str) -> Result<(Claims, ProspectView), PageError> {
    let claims = state.links.verify(purpose, token, Utc::now()).ok_or(PageError::NotFound)?;
    let view = prospect_of(state, claims.prospect_id).await?;
    if !claims.current(view.links_not_before) {
        return Err(PageError::NotFound);
    }
    Ok((claims, view))
}

/// A live prospect from the `prospects` service: 404 when there is none,
/// 503 when the service does not answer.
async fn prospect_of(state: &AppState, prospect_id: Uuid) -> Result<ProspectView, PageError> {
    state.prospect(prospect_id).await.map_err(|error| {
        if error.is_unavailable() {
            tracing::warn!(%error, "cannot load a prospect for its manage page");
            PageError::Unavailable
        } else {
            PageError::NotFound
        }
    })
}

/// Any unknown path.
pub async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}
