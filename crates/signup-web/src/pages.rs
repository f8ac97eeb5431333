//! The HTML pages: home, sign-up form, thank-you page, manage page.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use messages::service::{ProspectView, Status};
use messages::{Country, ProspectDetails, Role};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{Field, FieldError, SignupInput};
use crate::state::AppState;
use crate::submit::{self, SubmitError};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage;

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage<'a> {
    form: FormValues<'a>,
    errors: FormErrors,
    countries: &'a [Country],
    roles: &'a [Role],
    notice: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "thanks.html")]
struct ThanksPage<'a> {
    prospect_id: Uuid,
    token: &'a str,
    status: &'a str,
    status_text: &'a str,
    link_days: i64,
}

#[derive(Template)]
#[template(path = "manage.html")]
struct ManagePage<'a> {
    token: &'a str,
    form: FormValues<'a>,
    errors: FormErrors,
    countries: &'a [Country],
    roles: &'a [Role],
    notice: Option<&'a str>,
    notice_kind: &'a str,
}

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
        email: Some(details.email.clone()),
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
            };
            slot.get_or_insert_with(|| error.message.clone());
        }
        out
    }

    fn is_empty(&self) -> bool {
        [&self.first_name, &self.last_name, &self.email, &self.company_name, &self.country, &self.role]
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

fn signup_form(
    state: &AppState,
    status: StatusCode,
    input: &SignupInput,
    errors: &[FieldError],
    notice: Option<&str>,
) -> HttpResponse {
    let catalog = state.catalog();
    html(
        status,
        &SignupPage {
            form: FormValues::of(input),
            errors: FormErrors::of(errors),
            countries: catalog.countries(),
            roles: catalog.roles(),
            notice,
        },
    )
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

/// Reads a form-encoded body.
fn read_form(request: &HttpRequest, body: Result<web::Bytes, actix_web::Error>) -> Result<SignupInput, PageError> {
    let body = match body {
        Ok(body) => body,
        Err(error) if crate::body_too_large(&error) => return Err(PageError::TooLarge),
        Err(error) => return Err(PageError::BadRequest(error.to_string())),
    };
    if !crate::media_type_is(request, "application/x-www-form-urlencoded") {
        return Err(PageError::UnsupportedMediaType);
    }
    serde_urlencoded::from_bytes(&body).map_err(|_| PageError::BadRequest("The form data could not be read.".into()))
}

/// `GET /`
pub async fn home() -> HttpResponse {
    html(StatusCode::OK, &HomePage)
}

/// `GET /signup`
pub async fn signup_page(state: web::Data<AppState>) -> HttpResponse {
    signup_form(&state, StatusCode::OK, &SignupInput::default(), &[], None)
}

/// `POST /signup` (form-encoded): 303 to the thank-you page once the event is
/// stored; 422 with the form and its errors; 503 with the form kept.
pub async fn signup_submit(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, PageError> {
    let input = read_form(&request, body)?;
    let catalog = state.catalog();
    Ok(match submit::sign_up(&state.publisher, &catalog, &input, crate::traceparent(&request)).await {
        Ok(prospect_id) => see_other(format!("/signup/thanks/{}", state.tokens.issue(prospect_id, Utc::now()))),
        Err(SubmitError::Invalid(errors)) => {
            signup_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &input, &errors, None)
        }
        Err(SubmitError::Unavailable(_)) => {
            retry_later(signup_form(&state, StatusCode::SERVICE_UNAVAILABLE, &input, &[], Some(NOT_SAVED)))
        }
    })
}

/// `GET /signup/thanks/{token}`: the sign-up's status and its manage link.
pub async fn thanks(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let prospect_id = state.tokens.verify(&token, Utc::now()).ok_or(PageError::NotFound)?;
    let (status, status_text) = match state.status(prospect_id).await {
        Ok(Status::Saved) => ("saved", "Your sign-up is saved."),
        Ok(Status::Deleted) => ("deleted", "Your details have been erased."),
        Ok(Status::Pending) | Err(_) => ("pending", "We have received your sign-up; it is being saved."),
    };
    let link_days = state.tokens.lifetime_days();
    Ok(html(StatusCode::OK, &ThanksPage { prospect_id, token: &token, status, status_text, link_days }))
}

/// What the manage page was redirected with.
#[derive(Deserialize)]
pub struct ManageQuery {
    updated: Option<String>,
}

/// The prospect behind a manage token.
async fn managed_prospect(state: &AppState, token: &str) -> Result<ProspectView, PageError> {
    let prospect_id = state.tokens.verify(token, Utc::now()).ok_or(PageError::NotFound)?;
    state.prospect(prospect_id).await.map_err(|error| {
        if error.is_unavailable() {
            tracing::warn!(%error, "cannot load a prospect for its manage page");
            PageError::Unavailable
        } else {
            PageError::NotFound
        }
    })
}

fn manage_form(
    state: &AppState,
    status: StatusCode,
    token: &str,
    input: &SignupInput,
    errors: &[FieldError],
    notice: Option<(&str, &str)>,
) -> HttpResponse {
    let catalog = state.catalog();
    html(
        status,
        &ManagePage {
            token,
            form: FormValues::of(input),
            errors: FormErrors::of(errors),
            countries: catalog.countries(),
            roles: catalog.roles(),
            notice: notice.map(|(text, _)| text),
            notice_kind: notice.map_or("good", |(_, kind)| kind),
        },
    )
}

/// `GET /prospects/manage/{token}`
pub async fn manage_page(
    state: web::Data<AppState>,
    token: web::Path<String>,
    query: web::Query<ManageQuery>,
) -> Result<HttpResponse, PageError> {
    let view = managed_prospect(&state, &token).await?;
    let notice =
        query.updated.is_some().then_some(("Your changes were received. They can take a moment to show here.", "good"));
    Ok(manage_form(&state, StatusCode::OK, &token, &input_of(&view.details), &[], notice))
}

/// `POST /prospects/manage/{token}`: publishes `ProspectUpdated`, then 303
/// back to the manage page; 422 with errors; 503 with the values kept.
pub async fn manage_update(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, PageError> {
    let view = managed_prospect(&state, &token).await?;
    let input = read_form(&request, body)?;
    let catalog = state.catalog();
    Ok(match submit::update(&state.publisher, &catalog, view.prospect_id, &input, crate::traceparent(&request)).await {
        Ok(()) => see_other(format!("/prospects/manage/{token}?updated=1")),
        Err(SubmitError::Invalid(errors)) => {
            manage_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &token, &input, &errors, None)
        }
        Err(SubmitError::Unavailable(_)) => retry_later(manage_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &token,
            &input,
            &[],
            Some((NOT_SAVED, "bad")),
        )),
    })
}

/// `POST /prospects/manage/{token}/erase`: publishes `ProspectDeleted`, then
/// 303 to a confirmation.
pub async fn manage_erase(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let view = managed_prospect(&state, &token).await?;
    submit::erase(&state.publisher, view.prospect_id, crate::traceparent(&request))
        .await
        .map_err(|_| PageError::Unavailable)?;
    Ok(see_other("/prospects/erased".to_owned()))
}

/// `GET /prospects/erased`
pub async fn erased() -> HttpResponse {
    message(
        StatusCode::OK,
        "Your details are being erased",
        "Your request was received: your details are erased within moments.",
    )
}

/// `GET /static/thanks.js`: the thank-you page's status updater.
pub async fn thanks_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../static/thanks.js"))
}

/// `GET /static/site.css`: the pages' stylesheet (a file, not inline, so the
/// Content-Security-Policy can refuse inline styles).
pub async fn site_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../static/site.css"))
}

/// Any unknown path.
pub async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}
