//! The HTML pages: home, sign-up form, thank-you page, and the pages the
//! links in mails open — confirmation, manage, e-mail change — plus the form
//! that mails a lost manage link.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use links::{Claims, Purpose};
use messages::service::{ExportedProspect, ProspectExport, ProspectView, Status};
use messages::{ClientContext, Consent, Country, ProspectDetails, Role};
use serde::Deserialize;
use uuid::Uuid;

use crate::bot_check::Proof;
use crate::domain::{EmailAddress, Field, FieldError, SignupInput};
use crate::state::AppState;
use crate::submit::{self, Change, Gate, SubmitError};

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
    confirmed: bool,
    pending_email: Option<&'a str>,
    consent: ConsentShown<'a>,
}

/// What a person agreed to, as their pages show it.
struct ConsentShown<'a> {
    /// `None`: signed up before consent was recorded (or a service too old
    /// to say).
    version: Option<&'a str>,
    /// When, as text.
    agreed_at: String,
    /// The text agreed to, when it is the notice the form shows now (an
    /// older one is in the operator's start-up logs, by its version).
    text: Option<&'a str>,
    /// The policy link beside that text.
    policy_url: Option<&'a str>,
    /// Where from, when recorded.
    client: Option<&'a ClientContext>,
    /// When the sign-up was confirmed, as text.
    confirmed_at: Option<String>,
    /// Where the confirmation came from, when recorded.
    confirmed_from: Option<&'a ClientContext>,
}

impl<'a> ConsentShown<'a> {
    fn of(view: &'a ProspectView, notice: &'a crate::privacy::PrivacyNotice) -> Self {
        Self::from_parts(view.consent.as_ref(), view.confirmed_at, view.confirmed_from.as_ref(), notice)
    }

    fn exported(export: &'a ExportedProspect, notice: &'a crate::privacy::PrivacyNotice) -> Self {
        Self::from_parts(export.consent.as_ref(), export.confirmed_at, export.confirmed_from.as_ref(), notice)
    }

    fn from_parts(
        consent: Option<&'a Consent>,
        confirmed_at: Option<chrono::DateTime<Utc>>,
        confirmed_from: Option<&'a ClientContext>,
        notice: &'a crate::privacy::PrivacyNotice,
    ) -> Self {
        let record = match consent {
            Some(Consent::Recorded(record)) => Some(record),
            _ => None,
        };
        let current = record.is_some_and(|r| r.notice_version == notice.version);
        Self {
            version: record.map(|r| r.notice_version.as_str()),
            agreed_at: record.map(|r| shown_time(r.agreed_at)).unwrap_or_default(),
            text: current.then_some(notice.text.as_str()),
            policy_url: if current { notice.policy_url.as_deref() } else { None },
            client: record.and_then(|r| r.client.as_ref()),
            confirmed_at: confirmed_at.map(shown_time),
            confirmed_from,
        }
    }
}

/// A time as the pages show it.
fn shown_time(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "Download my data", readable: the same as the JSON document.
#[derive(Template)]
#[template(path = "my_data.html")]
struct MyDataPage<'a> {
    token: &'a str,
    export: &'a ProspectExport,
    consent: ConsentShown<'a>,
    exported_at: String,
    events: Vec<(String, &'a str, &'a str)>,
    mails: Vec<(String, &'a str, &'a str)>,
}

/// A page with one button that does what a mailed link is for: following a
/// link only shows it, so a mail scanner that opens links changes nothing.
#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage<'a> {
    title: &'a str,
    text: &'a str,
    action: &'a str,
    button: &'a str,
    /// What pressing the button confirms: shown here, behind the link, and
    /// never in the mail (a mail to an address that has not confirmed
    /// carries nothing a visitor typed).
    details: Option<&'a ProspectDetails>,
}

#[derive(Template)]
#[template(path = "new_link.html")]
struct NewLinkPage<'a> {
    email: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
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

/// A short page with a title and a sentence, for error statuses.
pub fn message(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    html(status, &MessagePage { title, text })
}

const NOTICE_CHANGED: &str = "Our privacy notice changed since this page was loaded. Please read it again below; \
     your answers are kept. Signing up means agreeing to it.";

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
        Err(error) if crate::body_too_large(&error) => return Err(PageError::TooLarge),
        Err(error) => return Err(PageError::BadRequest(error.to_string())),
    };
    if !crate::media_type_is(request, "application/x-www-form-urlencoded") {
        return Err(PageError::UnsupportedMediaType);
    }
    Ok(body)
}

/// Reads a form-encoded body.
fn read_form(request: &HttpRequest, body: Result<web::Bytes, actix_web::Error>) -> Result<SignupInput, PageError> {
    let body = read_body(request, body)?;
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
    Ok(match submit::sign_up(&state.publisher, &catalog, &gate, &input, &consent, crate::traceparent(&request)).await {
        Ok(prospect_id) => see_other(format!("/signup/thanks/{prospect_id}")),
        Err(SubmitError::Invalid(errors)) => {
            signup_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &input, &errors, None)
        }
        Err(SubmitError::Unavailable(_)) => {
            retry_later(signup_form(&state, StatusCode::SERVICE_UNAVAILABLE, &input, &[], Some(NOT_SAVED)))
        }
    })
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

/// The sign-up a link of its confirmation mail (of `purpose`: confirm, or
/// "it wasn't me") is about: as [`linked`], except that a sign-up not saved
/// yet (its mail overtook it) counts all the same — but never an erased one.
/// `None`: not saved yet.
async fn sign_up_of(
    state: &AppState,
    purpose: Purpose,
    token: &str,
) -> Result<(Claims, Option<ProspectView>), PageError> {
    let claims = state.links.verify(purpose, token, Utc::now()).ok_or(PageError::NotFound)?;
    let unavailable = |error: bus::RequestError| {
        tracing::warn!(%error, "cannot look a sign-up up for its confirmation");
        PageError::Unavailable
    };
    match state.prospect(claims.prospect_id).await {
        Ok(view) if claims.current(view.links_not_before) => Ok((claims, Some(view))),
        Ok(_) => Err(PageError::NotFound),
        Err(error) if error.is_unavailable() => Err(unavailable(error)),
        // Not found: erased (a tombstone), or not saved yet (no row).
        Err(_) => match state.status(claims.prospect_id).await.map_err(unavailable)? {
            Status::Deleted => Err(PageError::NotFound),
            Status::Pending | Status::Confirmed => Ok((claims, None)),
        },
    }
}

/// The page a mailed link opens: what it is for and one button that does
/// it (following a link only shows it, so a mail scanner that opens links
/// changes nothing).
fn button_page(
    purpose: Purpose,
    token: &str,
    (title, text, button): (&str, &str, &str),
    details: Option<&ProspectDetails>,
) -> HttpResponse {
    let action = purpose.path(token);
    html(StatusCode::OK, &ConfirmPage { title, text, action: &action, button, details })
}

/// `GET /prospects/confirm/{token}`: the confirmation link's page.
pub async fn confirm_page(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let (_, view) = sign_up_of(&state, Purpose::Confirm, &token).await?;
    Ok(button_page(
        Purpose::Confirm,
        &token,
        (
            "Confirm your sign-up",
            "These are the details given with this address. Press the button to confirm that you signed up \
             with them. If it was not you, close this page: nothing changes.",
            "Confirm my sign-up",
        ),
        view.as_ref().map(|v| &v.details),
    ))
}

/// `POST /prospects/confirm/{token}`: publishes `ProspectConfirmed` once,
/// then 303 to the confirmation. A sign-up already confirmed publishes
/// nothing more; a forged, altered, expired, outdated link, or one of an
/// erased sign-up, is a 404 and publishes nothing.
pub async fn confirm(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let (claims, view) = sign_up_of(&state, Purpose::Confirm, &token).await?;
    if view.is_none_or(|view| view.confirmed_at.is_none()) {
        submit::confirm(
            &state.publisher,
            claims.prospect_id,
            state.privacy.client(&request),
            crate::traceparent(&request),
        )
        .await
        .map_err(|_| PageError::Unavailable)?;
    }
    Ok(see_other("/prospects/confirmed".to_owned()))
}

/// The sign-up an "it wasn't me" link is about, unless it was confirmed
/// (with the link in the same mail, so by whoever has it): then a page that
/// says so, and nothing changes.
async fn disowned_sign_up(
    state: &AppState,
    token: &str,
) -> Result<Result<Option<ProspectView>, HttpResponse>, PageError> {
    let (_, view) = sign_up_of(state, Purpose::NotMe, token).await?;
    if view.as_ref().is_some_and(|view| view.confirmed_at.is_some()) {
        return Ok(Err(message(
            StatusCode::CONFLICT,
            "This sign-up is confirmed",
            "It was confirmed with the link in the same mail, so nothing was changed. To erase it, ask for a link \
             to manage it on the \"lost your link?\" page (/prospects/new-link).",
        )));
    }
    Ok(Ok(view))
}

/// `GET /prospects/not-me/{token}`: "it wasn't me", beside a confirmation
/// link: what was signed up with the address, and one button (a mail
/// scanner that follows the link changes nothing).
pub async fn not_me_page(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let view = match disowned_sign_up(&state, &token).await? {
        Ok(view) => view,
        Err(page) => return Ok(page),
    };
    Ok(button_page(
        Purpose::NotMe,
        &token,
        (
            "Not your sign-up?",
            "Someone signed up with your address, with these details. Press the button to erase this sign-up \
             at once: we then send this address no more mail about sign-ups. If it was you after all, close this \
             page and use the confirmation link instead.",
            "It wasn't me: erase it",
        ),
        view.as_ref().map(|v| &v.details),
    ))
}

/// `POST /prospects/not-me/{token}`: suppresses the sign-up's address (the
/// mailer sends it nothing more about a sign-up), then publishes the
/// sign-up's erasure (`ProspectDeleted` with `disowned`: this pending
/// sign-up and the others pending on the address, never a confirmed holder),
/// then 303 to a page that says so. In that order, so that a failure
/// between the two is mended by pressing again. A sign-up not saved yet is
/// a 503 (its address is not known here yet); a confirmed one a 409; a link
/// that is not genuine, outdated, or of an erased sign-up a 404.
pub async fn not_me(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let view = match disowned_sign_up(&state, &token).await? {
        Ok(Some(view)) => view,
        Ok(None) => return Err(PageError::Unavailable),
        Err(page) => return Ok(page),
    };
    state.suppress(&view.details.email).await.map_err(|error| {
        tracing::warn!(error = %bus::redact::addresses(&format!("{error:#}")), "cannot suppress an address");
        PageError::Unavailable
    })?;
    submit::disown(&state.publisher, view.prospect_id, crate::traceparent(&request))
        .await
        .map_err(|_| PageError::Unavailable)?;
    Ok(see_other("/prospects/disowned".to_owned()))
}

/// `GET /prospects/confirm-email/{token}`: the page of the link mailed to a
/// new address.
pub async fn confirm_email_page(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let (claims, view) = linked(&state, Purpose::ConfirmEmail, &token).await?;
    let change = view.pending_change.filter(|c| Some(c.request_id) == claims.reference);
    Ok(button_page(
        Purpose::ConfirmEmail,
        &token,
        (
            "Confirm your new address",
            "Press the button to confirm that this address is yours and that the sign-up should use it, with \
             these details. If you did not ask for this, close this page: nothing changes.",
            "Use this address",
        ),
        change.as_ref().map(|c| &c.details),
    ))
}

/// `POST /prospects/confirm-email/{token}`: applies the e-mail change the
/// link names — still the prospect's latest request — as `ProspectUpdated`,
/// then 303 to the manage page with a link of the new address (the links of
/// the old one end with the move). A link of an older or finished request is
/// a 404; an address that meanwhile belongs to another prospect is refused
/// with a page that says so.
pub async fn confirm_email(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let (claims, view) = linked(&state, Purpose::ConfirmEmail, &token).await?;
    let change = view.pending_change.filter(|c| Some(c.request_id) == claims.reference).ok_or(PageError::NotFound)?;
    if change.address_taken {
        return Ok(message(
            StatusCode::CONFLICT,
            "Address already in use",
            "This address already belongs to another sign-up, so nothing was changed. Erase that sign-up first, \
             or keep your current address.",
        ));
    }
    let moved_at = submit::apply(&state.publisher, view.prospect_id, change.details, crate::traceparent(&request))
        .await
        .map_err(|_| PageError::Unavailable)?;
    // Following the link proved the new address: its owner may manage the
    // record, with a link issued by the move itself.
    let manage = state.links.manage_token(view.prospect_id, moved_at);
    Ok(see_other(format!("{}?moved=1", Purpose::Manage.path(&manage))))
}

/// What the manage page was redirected with.
#[derive(Deserialize)]
pub struct ManageQuery {
    updated: Option<String>,
    requested: Option<String>,
    confirmed: Option<String>,
    moved: Option<String>,
}

/// The prospect behind a manage token.
async fn managed_prospect(state: &AppState, token: &str) -> Result<ProspectView, PageError> {
    Ok(linked(state, Purpose::Manage, token).await?.1)
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

fn manage_form(
    state: &AppState,
    status: StatusCode,
    token: &str,
    view: &ProspectView,
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
            confirmed: view.confirmed_at.is_some(),
            pending_email: view.pending_change.as_ref().map(|c| c.details.email.as_str()),
            consent: ConsentShown::of(view, &state.privacy),
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
    let notice = if query.requested.is_some() {
        Some((
            "We have sent a link to your new address. Your new details take effect when you follow it; \
             your current address has been told.",
            "good",
        ))
    } else if query.confirmed.is_some() {
        Some(("Thank you: your sign-up is confirmed. It can take a moment to show here.", "good"))
    } else if query.moved.is_some() {
        Some((
            "Your new address is confirmed; it can take a moment to show here. Links mailed to your previous \
             address no longer work: keep this page's address, or ask for a new link.",
            "good",
        ))
    } else {
        query.updated.is_some().then_some(("Your changes were received. They can take a moment to show here.", "good"))
    };
    Ok(manage_form(&state, StatusCode::OK, &token, &view, &input_of(&view.details), &[], notice))
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
    let traceparent = crate::traceparent(&request);
    Ok(match submit::update(&state.publisher, &catalog, view.prospect_id, &view.details, &input, traceparent).await {
        Ok(Change::Applied) => see_other(format!("{}?updated=1", Purpose::Manage.path(&token))),
        Ok(Change::AwaitsNewAddress) => see_other(format!("{}?requested=1", Purpose::Manage.path(&token))),
        Err(SubmitError::Invalid(errors)) => {
            manage_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &token, &view, &input, &errors, None)
        }
        Err(SubmitError::Unavailable(_)) => retry_later(manage_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &token,
            &view,
            &input,
            &[],
            Some((NOT_SAVED, "bad")),
        )),
    })
}

/// The export of the record a manage link opens: 404 for a link that opens
/// nothing, 503 when the prospects service cannot answer.
async fn exported(state: &AppState, token: &str) -> Result<ProspectExport, PageError> {
    let (claims, view) = linked(state, Purpose::Manage, token).await?;
    let export = state.export(view.prospect_id).await.map_err(|error| {
        if error.is_unavailable() {
            tracing::warn!(%error, "cannot export a prospect's data");
            PageError::Unavailable
        } else {
            PageError::NotFound
        }
    })?;
    // The record may have changed between the two questions (another
    // address, a new link): the link must still count for it.
    let again = state.prospect(view.prospect_id).await.map_err(|_| PageError::NotFound)?;
    if !claims.current(again.links_not_before) || again.details.email != export.prospect.details.email {
        return Err(PageError::NotFound);
    }
    Ok(export)
}

/// `GET /prospects/manage/{token}/data.json`: "Download my data", the JSON
/// document (`prospects.export`'s answer), as a file. Needs the manage
/// link, like everything else about the record.
pub async fn my_data_json(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let export = exported(&state, &token).await?;
    let body = serde_json::to_vec_pretty(&export).map_err(|_| PageError::Unavailable)?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"my-signup-data.json\""))
        .body(body))
}

/// `GET /prospects/manage/{token}/data`: the same, as a readable page.
pub async fn my_data_page(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let export = exported(&state, &token).await?;
    let events =
        export.events.iter().map(|e| (shown_time(e.stored_at), e.kind.as_str(), e.event_type.as_str())).collect();
    let mails = export.mails.iter().map(|m| (shown_time(m.sent_at), m.about.as_str(), m.recipient.as_str())).collect();
    Ok(html(
        StatusCode::OK,
        &MyDataPage {
            token: &token,
            consent: ConsentShown::exported(&export.prospect, &state.privacy),
            exported_at: shown_time(export.exported_at),
            events,
            mails,
            export: &export,
        },
    ))
}

/// `POST /prospects/manage/{token}/confirm`: the manage link was mailed to
/// the address, so following it proves the address as well as the
/// confirmation link does; this confirms a sign-up still pending.
pub async fn manage_confirm(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let view = managed_prospect(&state, &token).await?;
    if view.confirmed_at.is_none() {
        submit::confirm(
            &state.publisher,
            view.prospect_id,
            state.privacy.client(&request),
            crate::traceparent(&request),
        )
        .await
        .map_err(|_| PageError::Unavailable)?;
    }
    Ok(see_other(format!("{}?confirmed=1", Purpose::Manage.path(&token))))
}

/// `POST /prospects/manage/{token}/new-link`: the owner asks for a new
/// manage link, mailed to the address, and an end to every older link
/// (`ManageLinkRequested` with `byOwner`), for a link that leaked; then 303
/// to a page that says so.
pub async fn manage_new_link(
    state: web::Data<AppState>,
    token: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let view = managed_prospect(&state, &token).await?;
    submit::renew_link(&state.publisher, view.prospect_id, view.details.email, crate::traceparent(&request))
        .await
        .map_err(|_| PageError::Unavailable)?;
    Ok(see_other("/prospects/link-renewed".to_owned()))
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

/// `GET /prospects/new-link`: asks for an address to mail a new manage link to.
pub async fn new_link_page() -> HttpResponse {
    html(StatusCode::OK, &NewLinkPage { email: "", error: None, notice: None })
}

/// The form of `POST /prospects/new-link`.
#[derive(Deserialize)]
pub struct NewLinkForm {
    email: Option<String>,
}

/// `POST /prospects/new-link`: when a prospect holds the address, publishes
/// `ManageLinkRequested` so the mailer sends the link to that address (and
/// nowhere else). The answer is the same whether or not the address is
/// known; 422 for an invalid address, 503 when it cannot be checked now.
pub async fn new_link(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, PageError> {
    let body = read_body(&request, body)?;
    let form: NewLinkForm = serde_urlencoded::from_bytes(&body)
        .map_err(|_| PageError::BadRequest("The form data could not be read.".into()))?;
    let typed = form.email.as_deref().unwrap_or("");
    let email = match EmailAddress::parse(form.email.as_deref()) {
        Ok(email) => email,
        Err(error) => {
            let error = format!("E-mail {error}");
            return Ok(html(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewLinkPage { email: typed, error: Some(&error), notice: None },
            ));
        }
    };
    let unavailable = || {
        retry_later(html(
            StatusCode::SERVICE_UNAVAILABLE,
            &NewLinkPage { email: typed, error: None, notice: Some(NOT_SAVED) },
        ))
    };
    let holder = match state.holder(email.as_str()).await {
        Ok(holder) => holder,
        Err(error) => {
            tracing::warn!(%error, "cannot look an address up for a new manage link");
            return Ok(unavailable());
        }
    };
    // Answered before anything is published, and the same either way: the
    // time the answer takes must not tell a known address from an unknown
    // one. The request is published in the background, retried until
    // JetStream takes it (and waited for at shutdown).
    if let Some(holder) = holder {
        state.request_link_later(holder.prospect_id, holder.email, crate::traceparent(&request));
    }
    Ok(see_other("/prospects/new-link/sent".to_owned()))
}

/// `GET /prospects/new-link/sent`
pub async fn new_link_sent() -> HttpResponse {
    message(
        StatusCode::OK,
        "Check your inbox",
        "If we have a sign-up for that address, we have sent a new link to it. It can take a few minutes to arrive.",
    )
}

/// `GET /prospects/link-renewed`
pub async fn link_renewed() -> HttpResponse {
    message(
        StatusCode::OK,
        "Check your inbox",
        "We are sending a new link to your address. Once it is on its way, the links you had before no longer work.",
    )
}

/// `GET /prospects/confirmed`
pub async fn confirmed() -> HttpResponse {
    message(
        StatusCode::OK,
        "Your sign-up is confirmed",
        "Thank you! To change or erase your details later, use the manage link in the same mail.",
    )
}

/// `GET /prospects/erased`
pub async fn erased() -> HttpResponse {
    message(
        StatusCode::OK,
        "Your details are being erased",
        "Your request was received: your details are erased within moments.",
    )
}

/// `GET /prospects/disowned`
pub async fn disowned() -> HttpResponse {
    message(
        StatusCode::OK,
        "Thank you for telling us",
        "The sign-up made with your address is being erased, and we send this address no more mail about \
         sign-ups. Should you want to sign up yourself one day, ask the site's operator to lift this first.",
    )
}

/// `GET /static/bot-check.js`: the sign-up form's bot check (starts the
/// worker, fills in `altcha`).
pub async fn bot_check_js() -> HttpResponse {
    script(include_str!("../static/bot-check.js"))
}

/// `GET /static/altcha-worker.js`: the Web Worker that solves a challenge
/// with WebCrypto.
pub async fn altcha_worker_js() -> HttpResponse {
    script(include_str!("../static/altcha-worker.js"))
}

fn script(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

/// `GET /static/thanks.js`: the thank-you page's status updater.
pub async fn thanks_js() -> HttpResponse {
    script(include_str!("../static/thanks.js"))
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
