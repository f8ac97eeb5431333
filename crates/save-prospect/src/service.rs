//! The `prospects` NATS micro-service: reference data, status and details,
//! answered from the database so that the web tier never reads it.
//!
//! Every instance joins the same queue group, so each request is answered by
//! one of them; `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` reach all of them.

use async_nats::service::{self, Service, ServiceExt};
use bus::async_nats;
use bus::request::{parse, respond, service_error};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use messages::service::{self as contract, ProspectRef, ProspectView, Status, StatusReply};
use messages::{Country, ProspectDetails, Role};
use uuid::Uuid;

use crate::db::Pool;
use crate::schema::{countries, prospect_aliases, prospects, roles};

/// Requests one instance works on at once, per endpoint.
const CONCURRENCY: usize = 32;

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Countries,
    Roles,
    Status,
    Get,
}

/// Registers the service and starts answering; stop it with
/// [`Service::stop`].
pub async fn start(client: &async_nats::Client, pool: Pool) -> anyhow::Result<Service> {
    let service = client
        .service_builder()
        .description("Signup prospects: reference data, sign-up status and details")
        .queue_group(contract::QUEUE_GROUP)
        .start(contract::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!(e).context("registering the prospects service"))?;
    for (subject, kind) in [
        (contract::REFERENCE_COUNTRIES, Endpoint::Countries),
        (contract::REFERENCE_ROLES, Endpoint::Roles),
        (contract::STATUS, Endpoint::Status),
        (contract::GET, Endpoint::Get),
    ] {
        let endpoint = service
            .endpoint_builder()
            .name(subject.trim_start_matches("prospects.").replace('.', "-"))
            .add(subject)
            .await
            .map_err(|e| anyhow::anyhow!(e).context(format!("adding endpoint {subject}")))?;
        let pool = pool.clone();
        tokio::spawn(endpoint.for_each_concurrent(CONCURRENCY, move |request| {
            let pool = pool.clone();
            async move { answer(kind, &pool, &request).await }
        }));
    }
    tracing::info!(service = contract::SERVICE_NAME, "request-reply service started");
    Ok(service)
}

async fn answer(kind: Endpoint, pool: &Pool, request: &service::Request) {
    match kind {
        Endpoint::Countries => respond(request, countries(pool).await).await,
        Endpoint::Roles => respond(request, roles(pool).await).await,
        Endpoint::Status => {
            let result = match parse::<ProspectRef>(request) {
                Ok(r) => status(pool, r.prospect_id).await,
                Err(e) => Err(e),
            };
            respond(request, result).await;
        }
        Endpoint::Get => {
            let result = match parse::<ProspectRef>(request) {
                Ok(r) => get(pool, r.prospect_id).await,
                Err(e) => Err(e),
            };
            respond(request, result).await;
        }
    }
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

async fn countries(pool: &Pool) -> Reply<Vec<Country>> {
    let mut conn = connection(pool).await?;
    let rows: Vec<(String, String)> =
        countries::table.select((countries::code, countries::name)).load(&mut conn).await.map_err(unavailable)?;
    let mut list: Vec<Country> = rows.into_iter().map(|(code, name)| Country { code, name }).collect();
    messages::reference::form_order(&mut list, |c| &c.code, |c| &c.name);
    Ok(list)
}

async fn roles(pool: &Pool) -> Reply<Vec<Role>> {
    let mut conn = connection(pool).await?;
    let rows: Vec<(String, String)> =
        roles::table.select((roles::code, roles::name)).load(&mut conn).await.map_err(unavailable)?;
    let mut list: Vec<Role> = rows.into_iter().map(|(code, name)| Role { code, name }).collect();
    messages::reference::form_order(&mut list, |r| &r.code, |r| &r.name);
    Ok(list)
}

/// The id whose row holds the prospect: itself, or the prospect its sign-up
/// was merged into.
async fn resolve(conn: &mut diesel_async::AsyncPgConnection, id: Uuid) -> Reply<Uuid> {
    let target: Option<Uuid> = prospect_aliases::table
        .find(id)
        .select(prospect_aliases::prospect_id)
        .first(conn)
        .await
        .optional()
        .map_err(unavailable)?;
    Ok(target.unwrap_or(id))
}

async fn status(pool: &Pool, id: Uuid) -> Reply<StatusReply> {
    let mut conn = connection(pool).await?;
    let id = resolve(&mut conn, id).await?;
    let deleted_at: Option<Option<chrono::DateTime<chrono::Utc>>> = prospects::table
        .find(id)
        .select(prospects::deleted_at)
        .first(&mut conn)
        .await
        .optional()
        .map_err(unavailable)?;
    let status = match deleted_at {
        None => Status::Pending,
        Some(None) => Status::Saved,
        Some(Some(_)) => Status::Deleted,
    };
    Ok(StatusReply { status })
}

type DetailsRow = (
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

async fn get(pool: &Pool, id: Uuid) -> Reply<ProspectView> {
    let mut conn = connection(pool).await?;
    let id = resolve(&mut conn, id).await?;
    let row: Option<DetailsRow> = prospects::table
        .find(id)
        .filter(prospects::deleted_at.is_null())
        .select((
            prospects::id,
            prospects::email,
            prospects::first_name,
            prospects::last_name,
            prospects::company_name,
            prospects::country_code,
            prospects::role_code,
            prospects::signed_up_at,
            prospects::updated_at,
        ))
        .first(&mut conn)
        .await
        .optional()
        .map_err(unavailable)?;
    let not_found = || service_error(contract::NOT_FOUND, "no such prospect");
    let (prospect_id, email, first_name, last_name, company_name, country, role, signed_up_at, updated_at) =
        row.ok_or_else(not_found)?;
    let country_code = country.unwrap_or_default();
    let role_code = role.unwrap_or_default();
    let country_name: Option<String> = countries::table
        .find(&country_code)
        .select(countries::name)
        .first(&mut conn)
        .await
        .optional()
        .map_err(unavailable)?;
    let role_name: Option<String> =
        roles::table.find(&role_code).select(roles::name).first(&mut conn).await.optional().map_err(unavailable)?;
    Ok(ProspectView {
        prospect_id,
        details: ProspectDetails {
            first_name: first_name.unwrap_or_default(),
            last_name: last_name.unwrap_or_default(),
            email: email.unwrap_or_default(),
            company_name,
            country: Country { name: country_name.unwrap_or_else(|| country_code.clone()), code: country_code },
            role: Role { name: role_name.unwrap_or_else(|| role_code.clone()), code: role_code },
        },
        signed_up_at,
        updated_at,
    })
}
