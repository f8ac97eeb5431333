//! Home, the sign-up form and the thank-you page.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use messages::service::Status;
use messages::{Country, Role};
use serde::Deserialize;
use uuid::Uuid;

use super::{FormErrors, FormValues, NOT_SAVED, PageError, html, read_body, retry_later, see_other};
use crate::bot_check::Proof;
use crate::domain::{FieldError, SignupInput};
use crate::state::AppState;
use crate::submit::{self, Gate, SubmitError};

/// `/`, `/signup`, `/signup/thanks/{id}`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(home))
        .route("/signup", web::get().to(signup_page))
        .route("/signup", web::post().to(signup_submit))
        .route("/signup/thanks/{id}", web::get().to(thanks));
}

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
    /// The bot check, when it is on.
    bot: Option<BotForm>,
    /// The privacy notice signing up agrees to.
    privacy: &'a crate::privacy::PrivacyNotice,
}

/// What the sign-up form carries for the bot check: its script solves a
/// challenge into the field `altcha`; without JavaScript the form's token
/// (signed now) and the honeypot field take its place.
struct BotForm {
    form_token: String,
    without_javascript: bool,
    min_fill_secs: u64,
}

/// The bot check's fields of a posted form.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BotFields {
    altcha: Option<String>,
    form_token: Option<String>,
    /// The honeypot.
    website: Option<String>,
}

/// The version of the privacy notice the posted form showed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NoticeField {
    notice_version: Option<String>,
}

#[derive(Template)]
#[template(path = "thanks.html")]
struct ThanksPage {
    prospect_id: Uuid,
    /// Shown as its text; the page's script gets every status's text too.
    status: Status,
    confirm_days: i64,
}

fn signup_form(
    state: &AppState,
    status: StatusCode,
    input: &SignupInput,
    errors: &[FieldError],
    notice: Option<&str>,
) -> HttpResponse {
    let catalog = state.catalog();
    let check = &state.bot_check;
    let bot = check.enabled().then(|| BotForm {
        form_token: check.form_token(Utc::now()),
        without_javascript: check.without_javascript(),
        min_fill_secs: check.min_fill_secs(),
    });
    html(
        status,
        &SignupPage {
            form: FormValues::of(input),
            errors: FormErrors::of(errors),
            countries: catalog.countries(),
            roles: catalog.roles(),
            notice,
            bot,
            privacy: &state.privacy,
        },
    )
}

const NOTICE_CHANGED: &str = "Our privacy notice changed since this page was loaded. Please read it again below; \
     your answers are kept. Signing up means agreeing to it.";

/// `GET /`
pub async fn home() -> HttpResponse {
    html(StatusCode::OK, &HomePage)
}

/// `GET /signup`
pub async fn signup_page(state: web::Data<AppState>) -> HttpResponse {
    signup_form(&state, StatusCode::OK, &SignupInput::default(), &[], None)
}

/// `POST /signup` (form-encoded): 303 to the thank-you page once the event is
/// stored; 409 with the form and the notice in force when the form showed
/// another (`noticeVersion`); 422 with the form and its errors; 503 with the
/// form kept.
pub async fn signup_submit(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, PageError> {
    let body = read_body(&request, body)?;
    let unreadable = |_| PageError::BadRequest("The form data could not be read.".into());
    let input: SignupInput = serde_urlencoded::from_bytes(&body).map_err(unreadable)?;
    let bot: BotFields = serde_urlencoded::from_bytes(&body).map_err(unreadable)?;
    let proof = Proof {
        altcha: bot.altcha.as_deref(),
        form_token: bot.form_token.as_deref(),
        honeypot: bot.website.as_deref(),
    };
    // A form showing an older notice agreed to that one, not to the notice
    // in force: nothing is spent or sent, the form comes back with it.
    let shown: NoticeField = serde_urlencoded::from_bytes(&body).map_err(unreadable)?;
    if shown.notice_version.as_deref().is_some_and(|shown| shown != state.privacy.version) {
        return Ok(signup_form(&state, StatusCode::CONFLICT, &input, &[], Some(NOTICE_CHANGED)));
    }
    let gate = Gate { bot_check: &state.bot_check, used: &state.used_proofs, proof };
    let catalog = state.catalog();
    let consent = submit::Consenting { notice: &state.privacy, request: &request };
    Ok(
        match submit::sign_up(
            &state.publisher,
            &catalog,
            &gate,
            &input,
            &consent,
            crate::request::traceparent(&request),
        )
        .await
        {
            Ok(prospect_id) => see_other(format!("/signup/thanks/{prospect_id}")),
            Err(SubmitError::Invalid(errors)) => {
                signup_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &input, &errors, None)
            }
            Err(SubmitError::Unavailable(_)) => {
                retry_later(signup_form(&state, StatusCode::SERVICE_UNAVAILABLE, &input, &[], Some(NOT_SAVED)))
            }
        },
    )
}

/// `GET /signup/thanks/{id}`: "check your inbox", and where the sign-up is.
/// The id grants nothing: the page shows no details and no link to them, the
/// same for every sign-up (whether or not the address was known).
pub async fn thanks(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, PageError> {
    let prospect_id: Uuid = id.parse().map_err(|_| PageError::NotFound)?;
    // Not known yet (or not answered now) reads as pending.
    let status = state.status(prospect_id).await.unwrap_or(Status::Pending);
    let confirm_days = state.confirm_days;
    Ok(html(StatusCode::OK, &ThanksPage { prospect_id, status, confirm_days }))
}
