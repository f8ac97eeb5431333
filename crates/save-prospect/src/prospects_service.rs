//! The query side of save-prospect: the `prospects` NATS micro-service
//! (`prospects.*`, typed in `messages::service`) — reference data, status,
//! details and the holder of an address, answered from the database so that
//! the web tier and the mailer never read it.
//!
//! Every instance joins the same queue group, so each request is answered by
//! one of them; `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` reach all of them.
//!
//! Answers go only to the requester's inbox (`bus::request::serve` refuses
//! any other reply subject), and in a deployment the service speaks as a
//! NATS user of its own that may publish nowhere else
//! (`[save_prospect.service]`): the requester chooses the reply subject,
//! and `$SRV.*` answers are the client library's own.

use async_nats::service::{self, Service, ServiceExt as _};
use bus::async_nats;
use bus::request::{serve, service_error};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use messages::service::{
    self as contract, AddressRef, AddressesRef, ExportProspect, FindByAddress, FindEachAddress, FindHolders, FoundEach,
    FoundProspect, GetProspect, HeldBy, Holders, PendingChange, ProspectExport, ProspectRef, ProspectView,
    ReferenceCountries, ReferenceRoles, Status, StatusOf, StatusReply,
};
use messages::{ClientContext, Consent, ConsentRecord, Country, EmailAddress, ProspectDetails, Role};
use uuid::Uuid;

use crate::db::Pool;
use crate::schema::{countries, roles};

/// The name of the service's own NATS connection, when it has one
/// (`[save_prospect.service]`).
pub const CONNECTION_NAME: &str = "prospects";

/// Requests one instance works on at once, per endpoint.
const CONCURRENCY: usize = 32;

/// Where the export reads the streams: the service's main connection (its
/// NATS user may read the event stream and the mailer's sent records; the
/// service's own connection may only answer), and the event stream.
#[derive(Clone)]
pub struct StreamReader {
    /// JetStream on the main connection.
    pub js: async_nats::jetstream::Context,
    /// The event stream.
    pub stream: bus::StreamSettings,
}

impl StreamReader {
    /// Reading the event stream `stream` through `client`.
    pub fn new(client: &async_nats::Client, stream: &bus::StreamSettings) -> Self {
        Self { js: async_nats::jetstream::new(client.clone()), stream: stream.clone() }
    }
}

/// Registers the service and starts answering; stop it with
/// [`Service::stop`].
pub async fn start(client: &async_nats::Client, pool: Pool, streams: StreamReader) -> anyhow::Result<Service> {
    let service = client
        .service_builder()
        .description("Signup prospects: reference data, sign-up status and details")
        .queue_group(contract::QUEUE_GROUP)
        .start(contract::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!(e).context("registering the prospects service"))?;
    let p = pool.clone();
    serve::<ReferenceCountries, _, _>(&service, CONCURRENCY, move |()| countries(p.clone())).await?;
    let p = pool.clone();
    serve::<ReferenceRoles, _, _>(&service, CONCURRENCY, move |()| roles(p.clone())).await?;
    let p = pool.clone();
    serve::<StatusOf, _, _>(&service, CONCURRENCY, move |r: ProspectRef| status(p.clone(), r.prospect_id)).await?;
    let p = pool.clone();
    serve::<GetProspect, _, _>(&service, CONCURRENCY, move |r: ProspectRef| get(p.clone(), r.prospect_id)).await?;
    let p = pool.clone();
    serve::<FindByAddress, _, _>(&service, CONCURRENCY, move |r: AddressRef| find(p.clone(), r.email)).await?;
    let p = pool.clone();
    serve::<FindEachAddress, _, _>(&service, CONCURRENCY, move |r: AddressesRef| find_each(p.clone(), r.emails))
        .await?;
    let p = pool.clone();
    serve::<FindHolders, _, _>(&service, CONCURRENCY, move |r: AddressRef| holders(p.clone(), r.email)).await?;
    serve::<ExportProspect, _, _>(&service, CONCURRENCY, move |r: ProspectRef| {
        export(pool.clone(), streams.js.clone(), streams.stream.clone(), r.prospect_id)
    })
    .await?;
    tracing::info!(service = contract::SERVICE_NAME, "request-reply service started");
    Ok(service)
}

type Reply<T> = Result<T, service::error::Error>;

fn unavailable(error: impl std::fmt::Display) -> service::error::Error {
    tracing::warn!(%error, "service request failed on the database");
    service_error(contract::UNAVAILABLE, "the prospects database is unavailable")
}

async fn connection(
    pool: &Pool,
) -> Reply<diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>> {
    pool.get().await.map_err(unavailable)
}

async fn countries(pool: Pool) -> Reply<Vec<Country>> {
    let mut conn = connection(&pool).await?;
    let rows: Vec<(String, String)> =
        countries::table.select((countries::code, countries::name)).load(&mut conn).await.map_err(unavailable)?;
    let mut list: Vec<Country> = rows.into_iter().map(|(code, name)| Country { code, name }).collect();
    messages::reference::form_order(&mut list, |c| &c.code, |c| &c.name);
    Ok(list)
}

async fn roles(pool: Pool) -> Reply<Vec<Role>> {
    let mut conn = connection(&pool).await?;
    let rows: Vec<(String, String)> =
        roles::table.select((roles::code, roles::name)).load(&mut conn).await.map_err(unavailable)?;
    let mut list: Vec<Role> = rows.into_iter().map(|(code, name)| Role { code, name }).collect();
    messages::reference::form_order(&mut list, |r| &r.code, |r| &r.name);
    Ok(list)
}

/// The row that holds a prospect: its own, or that of the prospect its
/// sign-up was merged into (`$1` the id asked about).
const HOLDING_ROW: &str = "p.id = coalesce((SELECT a.prospect_id FROM prospect_aliases a WHERE a.alias_id = $1), $1)";

async fn status(pool: Pool, id: Uuid) -> Reply<StatusReply> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        deleted_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        confirmed_at: Option<DateTime<Utc>>,
    }
    let mut conn = connection(&pool).await?;
    let row: Option<Row> =
        diesel::sql_query(format!("SELECT p.deleted_at, p.confirmed_at FROM prospects p WHERE {HOLDING_ROW}"))
            .bind::<SqlUuid, _>(id)
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(unavailable)?;
    let status = match row {
        Some(Row { deleted_at: Some(_), .. }) => Status::Deleted,
        Some(Row { confirmed_at: Some(_), .. }) => Status::Confirmed,
        Some(_) | None => Status::Pending,
    };
    Ok(StatusReply { status })
}

/// A live prospect and its pending e-mail change, with the names of their
/// countries and roles, in one query.
#[derive(QueryableByName)]
struct ViewRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    first_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    company_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    country_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    country_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    role_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    role_name: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    signed_up_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    confirmed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    links_not_before: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    change_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    change_email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_first_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_last_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_company_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_country_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_country_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_role_code: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    change_role_name: Option<String>,
    #[diesel(sql_type = Bool)]
    change_taken: bool,
    #[diesel(sql_type = Nullable<Text>)]
    consent_notice_version: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    consent_agreed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    consent_client_address: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    consent_user_agent: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    confirmed_client_address: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    confirmed_user_agent: Option<String>,
}

const VIEW: &str = "\
    SELECT p.id, p.email, p.first_name, p.last_name, p.company_name, \
           p.country_code, c.name AS country_name, p.role_code, r.name AS role_name, \
           p.signed_up_at, p.updated_at, p.confirmed_at, p.links_not_before, \
           p.consent_notice_version, p.consent_agreed_at, p.consent_client_address, p.consent_user_agent, \
           p.confirmed_client_address, p.confirmed_user_agent, \
           pc.request_id AS change_id, pc.email AS change_email, pc.first_name AS change_first_name, \
           pc.last_name AS change_last_name, pc.company_name AS change_company_name, \
           pc.country_code AS change_country_code, cc.name AS change_country_name, \
           pc.role_code AS change_role_code, cr.name AS change_role_name, \
           EXISTS (SELECT 1 FROM prospects o WHERE o.email_key = lower(pc.email) AND o.id <> p.id \
                     AND o.confirmed_at IS NOT NULL AND o.deleted_at IS NULL) AS change_taken \
    FROM prospects p \
    LEFT JOIN countries c ON c.code = p.country_code \
    LEFT JOIN roles r ON r.code = p.role_code \
    LEFT JOIN pending_changes pc ON pc.prospect_id = p.id \
    LEFT JOIN countries cc ON cc.code = pc.country_code \
    LEFT JOIN roles cr ON cr.code = pc.role_code \
    WHERE {holding} AND p.deleted_at IS NULL";

fn details(
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    company_name: Option<String>,
    (country_code, country_name): (Option<String>, Option<String>),
    (role_code, role_name): (Option<String>, Option<String>),
) -> ProspectDetails {
    let country_code = country_code.unwrap_or_default();
    let role_code = role_code.unwrap_or_default();
    ProspectDetails {
        first_name: first_name.unwrap_or_default(),
        last_name: last_name.unwrap_or_default(),
        email: email.unwrap_or_default().into(),
        company_name,
        country: Country { name: country_name.unwrap_or_else(|| country_code.clone()), code: country_code },
        role: Role { name: role_name.unwrap_or_else(|| role_code.clone()), code: role_code },
    }
}

async fn get(pool: Pool, id: Uuid) -> Reply<ProspectView> {
    let mut conn = connection(&pool).await?;
    let row: Option<ViewRow> = diesel::sql_query(VIEW.replace("{holding}", HOLDING_ROW))
        .bind::<SqlUuid, _>(id)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(unavailable)?;
    let row = row.ok_or_else(|| service_error(contract::NOT_FOUND, "no such prospect"))?;
    let pending_change = row.change_id.map(|request_id| PendingChange {
        request_id,
        details: details(
            row.change_email,
            row.change_first_name,
            row.change_last_name,
            row.change_company_name,
            (row.change_country_code, row.change_country_name),
            (row.change_role_code, row.change_role_name),
        ),
        address_taken: row.change_taken,
    });
    Ok(ProspectView {
        prospect_id: row.id,
        details: details(
            row.email,
            row.first_name,
            row.last_name,
            row.company_name,
            (row.country_code, row.country_name),
            (row.role_code, row.role_name),
        ),
        signed_up_at: row.signed_up_at,
        updated_at: row.updated_at,
        confirmed_at: row.confirmed_at,
        pending_change,
        links_not_before: row.links_not_before,
        consent: Some(match (row.consent_notice_version, row.consent_agreed_at) {
            (Some(notice_version), Some(agreed_at)) => Consent::Recorded(ConsentRecord {
                notice_version,
                agreed_at,
                client: client(row.consent_client_address, row.consent_user_agent),
            }),
            _ => Consent::NotRecorded,
        }),
        confirmed_from: client(row.confirmed_client_address, row.confirmed_user_agent),
    })
}

fn client(client_address: Option<String>, user_agent: Option<String>) -> Option<ClientContext> {
    let client = ClientContext { client_address, user_agent };
    (!client.is_empty()).then_some(client)
}

/// Everything held about a live prospect: its record (as [`get`] answers),
/// the sign-ups merged into it, the kinds and times of their events in the
/// stream, and the mails the mailer recorded as sent for those.
async fn export(
    pool: Pool,
    js: async_nats::jetstream::Context,
    stream: bus::StreamSettings,
    id: Uuid,
) -> Reply<ProspectExport> {
    let prospect = get(pool.clone(), id).await?;
    let merged: Vec<Uuid> = {
        #[derive(QueryableByName)]
        struct Alias {
            #[diesel(sql_type = SqlUuid)]
            alias_id: Uuid,
        }
        let mut conn = connection(&pool).await?;
        diesel::sql_query("SELECT alias_id FROM prospect_aliases WHERE prospect_id = $1 ORDER BY alias_id")
            .bind::<SqlUuid, _>(prospect.prospect_id)
            .load::<Alias>(&mut conn)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|a| a.alias_id)
            .collect()
    };
    let streams_unavailable = |error: anyhow::Error| {
        tracing::warn!(error = %format!("{error:#}"), "export: the streams could not be read");
        service_error(contract::UNAVAILABLE, "the event stream cannot be read now")
    };
    let ids: Vec<Uuid> = std::iter::once(prospect.prospect_id).chain(merged.iter().copied()).collect();
    let (held, truncated) =
        bus::export::events_of(&js, &stream, &ids, contract::EXPORT_MAX_EVENTS).await.map_err(streams_unavailable)?;
    let unproven = prospect.pending_change.as_ref().map(|change| change.request_id);
    let mails = bus::export::mails_for(&js, &held, unproven).await.map_err(streams_unavailable)?;
    Ok(ProspectExport {
        exported_at: Utc::now(),
        prospect: prospect.into(),
        truncated,
        merged_sign_ups: merged,
        events: held.into_iter().map(|h| h.event).collect(),
        mails,
    })
}

/// The live prospect holding an address: the confirmed one, else the
/// earliest sign-up with it ([`find_each`]'s rule, for one address).
async fn find(pool: Pool, email: EmailAddress) -> Reply<FoundProspect> {
    let found = find_each(pool, vec![email]).await?.holders.pop().flatten();
    found.ok_or_else(|| service_error(contract::NOT_FOUND, "no prospect has this address"))
}

/// For each address (trimmed, compared case-insensitively), the live
/// prospect holding it: the confirmed one, else the earliest sign-up with
/// it (the lowest id among sign-ups of the same instant). One query for
/// them all: the mailer asks once per batch of events.
async fn find_each(pool: Pool, emails: Vec<EmailAddress>) -> Reply<FoundEach> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        asked: i64,
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = Bool)]
        confirmed: bool,
    }
    if emails.len() > contract::FIND_EACH_MAX {
        return Err(service_error(
            contract::BAD_REQUEST,
            format!("emails: at most {} addresses in one request", contract::FIND_EACH_MAX),
        ));
    }
    let keys: Vec<String> = emails.iter().map(|e| e.trim().to_owned()).collect();
    let mut conn = connection(&pool).await?;
    // For each address, by its place in the request, its holder's row.
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT DISTINCT ON (q.asked) q.asked, p.id, p.email, p.confirmed_at IS NOT NULL AS confirmed \
         FROM unnest($1::text[]) WITH ORDINALITY AS q(address, asked) \
         JOIN prospects p ON p.email_key = lower(q.address) AND p.deleted_at IS NULL \
         ORDER BY q.asked, p.confirmed_at IS NULL, p.signed_up_at, p.id",
    )
    .bind::<Array<Text>, _>(keys)
    .load(&mut conn)
    .await
    .map_err(unavailable)?;
    let mut holders = vec![None; emails.len()];
    for row in rows {
        let place = usize::try_from(row.asked - 1).ok().and_then(|i| holders.get_mut(i));
        if let Some(place) = place {
            *place = Some(FoundProspect { prospect_id: row.id, email: row.email.into(), confirmed: row.confirmed });
        }
    }
    Ok(FoundEach { holders })
}

/// Every sign-up holding an address: the live prospects with it (confirmed
/// first, then by sign-up time), each followed by the sign-ups merged into it.
async fn holders(pool: Pool, email: EmailAddress) -> Reply<Holders> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Bool)]
        confirmed: bool,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        merged_into: Option<Uuid>,
    }
    let mut conn = connection(&pool).await?;
    let rows: Vec<Row> = diesel::sql_query(
        "WITH live AS (SELECT id, confirmed_at, signed_up_at FROM prospects \
                       WHERE email_key = lower($1) AND deleted_at IS NULL) \
         SELECT id, confirmed_at IS NOT NULL AS confirmed, NULL::uuid AS merged_into, \
                confirmed_at IS NULL AS pending, signed_up_at, 0 AS alias FROM live \
         UNION ALL \
         SELECT a.alias_id, true, a.prospect_id, l.confirmed_at IS NULL, l.signed_up_at, 1 \
         FROM prospect_aliases a JOIN live l ON l.id = a.prospect_id \
         ORDER BY pending, signed_up_at, alias",
    )
    .bind::<Text, _>(email.trim())
    .load(&mut conn)
    .await
    .map_err(unavailable)?;
    let sign_ups = rows
        .into_iter()
        .map(|r| HeldBy { prospect_id: r.id, confirmed: r.confirmed, merged_into: r.merged_into })
        .collect();
    Ok(Holders { sign_ups })
}
