//! A Postgres database of its own per test.

use anyhow::Context as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// A Postgres database of its own for one test; dropped with the value.
pub struct TestDatabase {
    name: String,
    server: String,
}

impl TestDatabase {
    /// A fresh, unique database name on the test server. The database itself
    /// is created by whoever connects first (save-prospect creates missing
    /// databases), or by the test itself.
    pub fn new() -> Self {
        let server = std::env::var("SIGNUP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("signup_test_{}", uuid::Uuid::now_v7().simple());
        Self { name, server: server.trim_end_matches('/').to_owned() }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// Opens a connection to the database.
    pub async fn connect(&self) -> anyhow::Result<AsyncPgConnection> {
        AsyncPgConnection::establish(&self.url()).await.context("connecting to the test database")
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow, so the clean-up
        // gets a small runtime of its own on a plain thread.
        let admin = format!("{}/postgres", self.server);
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin).await.ok()?;
                diesel::sql_query(statement).execute(&mut conn).await.ok()
            })
        });
        let _ = cleanup.join();
    }
}
