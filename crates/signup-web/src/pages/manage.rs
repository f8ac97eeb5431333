//! The manage page (the link mailed to the address) and what it does:
//! change the details, confirm, ask for a new link, erase.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use links::Purpose;
use messages::service::ProspectView;
use messages::{Country, Role};
use serde::Deserialize;

use super::my_data::ConsentShown;
use super::{
    FormErrors, FormValues, NOT_SAVED, PageError, html, input_of, linked, message, read_form, retry_later, see_other,
};
use crate::domain::{FieldError, SignupInput};
use crate::state::AppState;
use crate::submit::{self, Change, SubmitError};

/// The manage page, its actions and the pages after them.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(Purpose::Manage.route(), web::get().to(manage_page))
        .route(Purpose::Manage.route(), web::post().to(manage_update))
        .route("/prospects/manage/{token}/confirm", web::post().to(manage_confirm))
        .route("/prospects/manage/{token}/erase", web::post().to(manage_erase))
        .route("/prospects/manage/{token}/new-link", web::post().to(manage_new_link))
        .route("/prospects/link-renewed", web::get().to(link_renewed))
        .route("/prospects/erased", web::get().to(erased));
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
    let traceparent = crate::request::traceparent(&request);
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
            crate::request::traceparent(&request),
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
    submit::renew_link(&state.publisher, view.prospect_id, view.details.email, crate::request::traceparent(&request))
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
    submit::erase(&state.publisher, view.prospect_id, crate::request::traceparent(&request))
        .await
        .map_err(|_| PageError::Unavailable)?;
    Ok(see_other("/prospects/erased".to_owned()))
}

/// `GET /prospects/link-renewed`
pub async fn link_renewed() -> HttpResponse {
    message(
        StatusCode::OK,
        "Check your inbox",
        "We are sending a new link to your address. Once it is on its way, the links you had before no longer work.",
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
