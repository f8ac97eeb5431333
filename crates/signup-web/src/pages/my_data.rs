//! "Download my data" (GDPR art. 15 and 20), as a page and as JSON, behind
//! the manage link; and the consent record as the pages show it.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Utc;
use links::Purpose;
use messages::service::{ExportedProspect, ProspectExport, ProspectView};
use messages::{ClientContext, Consent};

use super::{PageError, html, linked};
use crate::state::AppState;

/// `…/data` and `…/data.json` under a manage link.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/prospects/manage/{token}/data", web::get().to(my_data_page))
        .route("/prospects/manage/{token}/data.json", web::get().to(my_data_json));
}

/// What a person agreed to, as their pages show it.
pub(super) struct ConsentShown<'a> {
    /// `None`: signed up before consent was recorded (or a service too old
    /// to say).
    pub(super) version: Option<&'a str>,
    /// When, as text.
    pub(super) agreed_at: String,
    /// The text agreed to, when it is the notice the form shows now (an
    /// older one is in the operator's start-up logs, by its version).
    pub(super) text: Option<&'a str>,
    /// The policy link beside that text.
    pub(super) policy_url: Option<&'a str>,
    /// Where from, when recorded.
    pub(super) client: Option<&'a ClientContext>,
    /// When the sign-up was confirmed, as text.
    pub(super) confirmed_at: Option<String>,
    /// Where the confirmation came from, when recorded.
    pub(super) confirmed_from: Option<&'a ClientContext>,
}

impl<'a> ConsentShown<'a> {
    pub(super) fn of(view: &'a ProspectView, notice: &'a crate::privacy::PrivacyNotice) -> Self {
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
