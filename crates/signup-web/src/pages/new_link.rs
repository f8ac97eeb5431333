//! "Lost your link?": a new manage link, mailed to the address only.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{NOT_SAVED, PageError, html, message, read_body, retry_later, see_other};
use crate::domain::ValidEmail;
use crate::state::AppState;

/// `/prospects/new-link` and the page after it.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/prospects/new-link", web::get().to(new_link_page))
        .route("/prospects/new-link", web::post().to(new_link))
        .route("/prospects/new-link/sent", web::get().to(new_link_sent));
}

#[derive(Template)]
#[template(path = "new_link.html")]
struct NewLinkPage<'a> {
    email: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
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
    let email = match ValidEmail::parse(form.email.as_deref()) {
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
    let holder = match state.holder(email.address()).await {
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
        state.request_link_later(holder.prospect_id, holder.email, crate::request::traceparent(&request));
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
