//! The database save-prospect owns, against the machine's real Postgres (a
//! database of the test's own).

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use save_prospect::db;
use save_prospect::schema::{countries, roles};
use test_support::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_database_and_migrates_it_once_even_when_raced() {
    let database = TestDatabase::new();
    let url = database.url();
    let plain = db::Connector::plain();
    let (a, b) =
        tokio::join!(db::create_database_if_missing(&url, &plain), db::create_database_if_missing(&url, &plain));
    a.expect("first create");
    b.expect("second create");

    let pool = db::pool(&url, 4, &plain).expect("pool");
    let (first, second) = tokio::join!(db::migrate(&pool), db::migrate(&pool));
    let mut ran = [first.expect("migrate"), second.expect("migrate")];
    ran.sort_by_key(Vec::len);
    assert!(ran[0].is_empty(), "the second runner found nothing to do");
    let all =
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&db::MIGRATIONS).expect("embedded").len();
    assert_eq!(ran[1].len(), all, "every migration ran once");
    assert!(db::migrate(&pool).await.expect("again").is_empty(), "migrating again is a no-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_reference_data_equals_the_built_in_lists() {
    let database = TestDatabase::new();
    db::create_database_if_missing(&database.url(), &db::Connector::plain()).await.expect("create");
    db::migrate(&db::pool(&database.url(), 1, &db::Connector::plain()).expect("pool")).await.expect("migrate");
    let mut conn = database.connect().await.expect("connect");

    let mut stored: Vec<(String, String)> =
        countries::table.select((countries::code, countries::name)).load(&mut conn).await.expect("countries");
    let mut builtin: Vec<(String, String)> =
        messages::reference::builtin_countries().iter().map(|c| (c.code.clone(), c.name.clone())).collect();
    stored.sort();
    builtin.sort();
    assert_eq!(stored.len(), 250);
    assert_eq!(stored, builtin, "migration seed and messages/data/countries.tsv differ");

    let mut stored: Vec<(String, String)> =
        roles::table.select((roles::code, roles::name)).load(&mut conn).await.expect("roles");
    let mut builtin: Vec<(String, String)> =
        messages::reference::builtin_roles().iter().map(|r| (r.code.clone(), r.name.clone())).collect();
    stored.sort();
    builtin.sort();
    assert_eq!(stored, builtin, "migration seed and messages/data/roles.tsv differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_is_given_up_on_in_time() {
    // Accepts connections and then says nothing, like a hung server.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("postgres://postgres@{}/signup", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let connector = db::Connector::plain().with_timeouts(Duration::from_millis(500), Duration::from_secs(15));
    let pool = db::pool(&url, 1, &connector).expect("pool");
    let attempt = tokio::time::timeout(Duration::from_secs(10), pool.get()).await;
    assert!(matches!(attempt, Ok(Err(_))), "an error within the connect timeout, not a wait without end");
    held.abort();
}

// `CREATE DATABASE` copies a template and may wait for a checkpoint: on a
// busy machine it outlasts any statement timeout meant for queries (CI once
// failed creating a test's database under the 300 ms one below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_database_is_not_bound_by_the_statement_timeout() {
    let database = TestDatabase::new();
    let connector = db::Connector::plain().with_timeouts(Duration::from_secs(5), Duration::from_millis(1));
    db::create_database_if_missing(&database.url(), &connector).await.expect("create");
    database.connect().await.expect("the database exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_runs_too_long_is_cancelled() {
    let database = TestDatabase::new();
    let connector = db::Connector::plain().with_timeouts(Duration::from_secs(5), Duration::from_millis(300));
    db::create_database_if_missing(&database.url(), &connector).await.expect("create");
    let pool = db::pool(&database.url(), 1, &connector).expect("pool");
    let mut conn = pool.get().await.expect("connection");
    let error = diesel::sql_query("SELECT pg_sleep(3)").execute(&mut conn).await.expect_err("cancelled");
    assert!(error.to_string().contains("statement timeout"), "{error}");
}
