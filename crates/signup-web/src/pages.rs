//! The HTML pages: home, sign-up form, thank-you page.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use messages::{Country, Role};
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
struct ThanksPage {
    prospect_id: Uuid,
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
        let code = |v: &'a Option<String>| {
            v.as_deref()
                .map(str::trim)
                .unwrap_or(messages::reference::NOT_TELLING)
        };
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
        [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.company_name,
            &self.country,
            &self.role,
        ]
        .iter()
        .all(|e| e.is_none())
    }
}

fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(body),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

fn signup_form(
    state: &AppState,
    status: StatusCode,
    input: &SignupInput,
    errors: &[FieldError],
    notice: Option<&str>,
) -> HttpResponse {
    html(
        status,
        &SignupPage {
            form: FormValues::of(input),
            errors: FormErrors::of(errors),
            countries: state.catalog.countries(),
            roles: state.catalog.roles(),
            notice,
        },
    )
}

/// A short page with a title and a sentence, for error statuses.
pub fn message(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    html(status, &MessagePage { title, text })
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
) -> HttpResponse {
    let body = match body {
        Ok(body) => body,
        Err(error) if crate::body_too_large(&error) => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too much data",
                "The form sent more data than we accept. Please shorten your answers.",
            );
        }
        Err(error) => return message(StatusCode::BAD_REQUEST, "Bad request", &error.to_string()),
    };
    if !crate::media_type_is(&request, "application/x-www-form-urlencoded") {
        return message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported form encoding",
            "Please submit the form from the sign-up page.",
        );
    }
    let input: SignupInput = match serde_urlencoded::from_bytes(&body) {
        Ok(input) => input,
        Err(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The form data could not be read.",
            );
        }
    };
    match submit::sign_up(
        &state.publisher,
        &state.catalog,
        &input,
        crate::traceparent(&request),
    )
    .await
    {
        Ok(prospect_id) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/signup/thanks/{prospect_id}")))
            .finish(),
        Err(SubmitError::Invalid(errors)) => signup_form(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &input,
            &errors,
            None,
        ),
        Err(SubmitError::Unavailable(_)) => {
            let mut response = signup_form(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                &input,
                &[],
                Some(
                    "We could not record your sign-up just now. Nothing was saved; your answers are kept below — please try again in a moment.",
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
    }
}

/// `GET /signup/thanks/{prospectId}`
pub async fn thanks(path: web::Path<String>) -> HttpResponse {
    match path.parse::<Uuid>() {
        Ok(prospect_id) => html(StatusCode::OK, &ThanksPage { prospect_id }),
        Err(_) => not_found().await,
    }
}

/// Any unknown path.
pub async fn not_found() -> HttpResponse {
    message(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address.",
    )
}
