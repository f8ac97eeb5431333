//! The end-to-end tests: one test binary (it links the whole stack once),
//! one module per subject. Each test starts its own servers (NATS,
//! Postgres database, SMTP server, Chromium) and its own
//! services, in-process or as the built binaries.
//!
//! Only one subject: `scripts/test -p e2e-tests --test e2e browser::`.

mod architecture;
mod browser;
mod cluster;
mod consent;
mod contracts;
mod deploy_files;
mod deployment;
mod faults;
mod lifecycle;
mod ownership;
mod privacy;
mod public_edge;
mod run_script;
mod scaffold;
mod signup_flow;
mod tracing;

/// The scaffold test's build takes both cores for minutes, and the tests
/// that drive a burst against the services' timeouts (faults, cluster)
/// would meet it in this one binary: those take this for reading (side by
/// side among themselves), the build for writing (alone).
static BUILD_OR_BURST: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
