//! The design Signup replaces, built for the benchmark only: a web tier that
//! validates a sign-up exactly as signup-web does and then inserts the row
//! into Postgres inside the request — one transaction per sign-up, through a
//! connection pool — before answering. `scripts/bench` measures it side by
//! side with signup-web.
//!
//! Usage: `sync-baseline --port 8090 --database-url postgres://…/db` (the
//! database must exist and be migrated; the bench does both).

// The services' allocator (the runtime's mimalloc), for like-for-like figures.
use runtime as _;

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use clap::Parser;
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use save_prospect::db::{self, Pool};
use signup_web::catalog::Catalog;
use signup_web::domain::{NewProspect, SignupInput};
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Synchronous sign-up baseline for the benchmark")]
struct Cli {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// The migrated database to insert into.
    #[arg(long)]
    database_url: String,
    /// Connections in the pool.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
}

struct State {
    pool: Pool,
    catalog: Catalog,
}

/// One sign-up, one transaction, as the old design did it.
const INSERT: &str = "\
    INSERT INTO prospects (id, email, first_name, last_name, company_name, country_code, role_code, \
                           signed_up_at, updated_at, last_event_seq) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 0) \
    ON CONFLICT (email_key) DO UPDATE SET first_name = excluded.first_name, last_name = excluded.last_name, \
        company_name = excluded.company_name, country_code = excluded.country_code, role_code = excluded.role_code, \
        updated_at = excluded.updated_at";

async fn sign_up(state: web::Data<State>, form: web::Form<SignupInput>) -> HttpResponse {
    let details = match NewProspect::parse(&form, &state.catalog) {
        Ok(prospect) => prospect.into_details(),
        Err(errors) => return HttpResponse::UnprocessableEntity().body(format!("{} invalid fields", errors.len())),
    };
    let id = Uuid::now_v7();
    let saved = async {
        let mut conn = state.pool.get().await.map_err(|e| anyhow::anyhow!(e))?;
        diesel::sql_query(INSERT)
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(details.email.as_str())
            .bind::<Text, _>(&details.first_name)
            .bind::<Text, _>(&details.last_name)
            .bind::<Nullable<Text>, _>(details.company_name.as_deref())
            .bind::<Text, _>(&details.country.code)
            .bind::<Text, _>(&details.role.code)
            .bind::<Timestamptz, _>(chrono::Utc::now())
            .execute(&mut conn)
            .await?;
        anyhow::Ok(())
    };
    match saved.await {
        Ok(()) => HttpResponse::SeeOther().insert_header(("Location", format!("/signup/thanks/{id}"))).finish(),
        Err(error) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pool = db::pool(&cli.database_url, cli.pool_size, &db::Connector::plain())?;
    let state = web::Data::new(State { pool, catalog: Catalog::builtin() });
    let listener = TcpListener::bind(("127.0.0.1", cli.port)).context("binding the port")?;
    HttpServer::new(move || App::new().app_data(state.clone()).route("/signup", web::post().to(sign_up)))
        .listen(listener)?
        .run()
        .await
        .context("serving")
}
