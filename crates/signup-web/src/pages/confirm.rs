//! The pages a confirmation mail's links open (confirm, "it wasn't me"),
//! and the link mailed to a new address; each only shows what it is for,
//! and one button does it (a mail scanner that follows links changes
//! nothing).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use links::{Claims, Purpose};
use messages::ProspectDetails;
use messages::service::{ProspectView, Status};

use super::{PageError, html, linked, message, see_other};
use crate::state::AppState;
use crate::submit::{self};

/// A confirmation mail's links, a new address's, and the pages after them.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(Purpose::Confirm.route(), web::get().to(confirm_page))
        .route(Purpose::Confirm.route(), web::post().to(confirm))
        .route(Purpose::NotMe.route(), web::get().to(not_me_page))
        .route(Purpose::NotMe.route(), web::post().to(not_me))
        .route("/prospects/disowned", web::get().to(disowned))
        .route(Purpose::ConfirmEmail.route(), web::get().to(confirm_email_page))
        .route(Purpose::ConfirmEmail.route(), web::post().to(confirm_email))
        .route("/prospects/confirmed", web::get().to(confirmed));
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
            crate::request::traceparent(&request),
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
    submit::disown(&state.publisher, view.prospect_id, crate::request::traceparent(&request))
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
    let moved_at =
        submit::apply(&state.publisher, view.prospect_id, change.details, crate::request::traceparent(&request))
            .await
            .map_err(|_| PageError::Unavailable)?;
    // Following the link proved the new address: its owner may manage the
    // record, with a link issued by the move itself.
    let manage = state.links.manage_token(view.prospect_id, moved_at);
    Ok(see_other(format!("{}?moved=1", Purpose::Manage.path(&manage))))
}

/// `GET /prospects/confirmed`
pub async fn confirmed() -> HttpResponse {
    message(
        StatusCode::OK,
        "Your sign-up is confirmed",
        "Thank you! To change or erase your details later, use the manage link in the same mail.",
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
