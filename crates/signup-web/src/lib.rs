//! signup-web: the sign-up form and JSON API.
//!
//! A submission is parsed into a [`domain::NewProspect`] (invalid input never
//! gets further), becomes a `ProspectSignedUp` event, and is published to
//! NATS JetStream; the visitor is redirected to the thank-you page only after
//! JetStream acknowledged storing the event. No PubAck in time means a 503
//! with the visitor's input kept. Whatever it needs to know from the database
//! (reference data, a sign-up's status, a prospect's details) it asks the
//! `prospects` service over NATS: this crate never touches a database and
//! knows nothing of the handlers that consume its events.
//!
//! # Layout
//! - [`settings`]: configuration (`[web]`, `[nats]`, `[links]`, `[log]`, `[shutdown]`).
//! - [`domain`]: input parsing into valid newtypes.
//! - [`catalog`]: countries and roles offered; [`reference_data`] keeps them fresh
//!   from the `prospects` service (request-reply), falling back on the last
//!   known or built-in lists.
//! - [`submit`]: parse, check, publish, shared by the form and the API.
//! - [`privacy`]: the privacy notice the form shows, its version, and the
//!   consent every sign-up records.
//! - [`bot_check`]: the proof (ALTCHA's proof of work, or the form's token
//!   without JavaScript) every sign-up brings, each accepted once.
//! - [`pages`] (one module per flow, each with its routes), [`api`],
//!   [`health`]: the HTTP handlers; `/metrics` and
//!   request metrics come from `runtime::ops`; [`problem`]: the API's errors
//!   as problem bodies (the rate limiter's 429 too).
//! - [`openapi`]: the JSON API's OpenAPI 3.1 document (`/api/openapi.json`),
//!   generated from the handlers' annotations and built from the same
//!   route list the app serves; the contract documents' routes (the events'
//!   AsyncAPI document, each event's JSON Schema); [`schema`]: the shapes
//!   only the document describes (the sign-up's fields, a challenge; the problem
//!   body is `runtime::ops::Problem`, every service's).
//! - [`request`]: what every handler reads off a request (its media type, a
//!   body over the limit, the trace context).
//! - [`limits`]: security headers on every answer, per-client rate limit on POSTs.
//! - [`state`]: what every handler shares (the publisher, the reference
//!   data, the prospects service, the bot check, the links).
//! - [`startup`]: [`Application`], which binds, runs and stops the server;
//!   its `Service` is the binary (`run`, alias `serve`, `check`, and
//!   `buckets`, the deployment's set-up step for the bot check's bucket).

pub mod api;
pub mod bot_check;
pub mod catalog;
pub mod domain;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod pages;
pub mod privacy;
pub mod problem;
pub mod reference_data;
pub mod request;
pub mod schema;
pub mod settings;
pub mod startup;
pub mod state;
pub mod submit;

pub use settings::Settings;
pub use startup::Application;
