//! save-prospect's tests against real Postgres (and, where the stream is
//! part of it, a private nats-server): one test binary, one module per
//! subject.

mod batches;
mod common;
mod confirmation;
mod consent;
mod database;
mod ordering;
mod stream_origin;
