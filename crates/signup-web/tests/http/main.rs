//! signup-web's own HTTP tests: the service in-process against a private
//! nats-server (no database, no other service), one module per subject.

mod harness;
mod input;
