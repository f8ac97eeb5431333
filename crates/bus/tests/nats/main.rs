//! The NATS plumbing against a real nats-server (one per test): one test
//! binary, one module per subject.

mod failures;
mod jetstream;
