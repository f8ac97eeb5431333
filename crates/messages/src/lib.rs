//! The Signup event contract.
//!
//! Every service that publishes or consumes prospect events depends on this
//! crate and on nothing else to agree on the shape of a message. It holds plain
//! data only: no transport, no I/O. The `bus` crate maps these types onto NATS
//! JetStream; handlers receive them already decoded.
//!
//! # Layout
//! - [`events`]: the [`Event`] trait and the prospect events, each with its
//!   subject and CloudEvents type as associated constants: what changes a
//!   prospect ([`ProspectSignedUp`], [`ProspectConfirmed`],
//!   [`ProspectUpdated`], [`ProspectDeleted`]) and what only asks for a mail
//!   ([`ProspectEmailChangeRequested`], [`ManageLinkRequested`]); the
//!   sign-up's [`Consent`]; the older versions still read
//!   ([`ProspectSignedUpV1`]) and their one upcaster (`From` the old version).
//! - [`email`]: [`EmailAddress`], an address as typed with its
//!   case-insensitive key: every comparison of addresses goes through it.
//! - [`reference`](mod@reference): reference-data value types ([`Country`], [`Role`]) and the
//!   built-in lists the services fall back on.
//! - [`decode`]: [`EventSet`] and [`ProspectEvent`], turning a `ce-type` and
//!   JSON data back into a typed event of the current version (older ones
//!   upcast, unknown versions refused by name); [`payload`]: one payload
//!   as one event type, and [`DecodeError`].
//! - [`service`]: subjects and payloads of the `prospects` request-reply
//!   service.
//! - [`cloudevents`]: header names of the CloudEvents 1.0 NATS binding.
//! - [`streams`]: stream and subject names.
//! - [`dlq`]: dead-letter headers and subjects.
//! - [`asyncapi`]: the AsyncAPI 3.0 document of all the above (events,
//!   dead letters, request-reply), generated from these types.
//! - [`schemas`]: each event's JSON Schema by `ce-type`, as served at the
//!   events' `ce-dataschema`.
//!
//! The JSON Schema of each event is checked in under `schemas/` and the exact
//! JSON of an example of each under `tests/golden/`; `cargo test -p messages`
//! fails when the structs drift from either, or from the AsyncAPI
//! document checked in as `asyncapi.json` (`UPDATE_CONTRACT=1` rewrites them
//! after a deliberate, compatible change).

pub mod asyncapi;
pub mod cloudevents;
pub mod decode;
pub mod dlq;
pub mod email;
pub mod events;
pub mod payload;
pub mod reference;
pub mod schemas;
pub mod service;
pub mod streams;

pub use decode::{EventSet, Headers, ProspectEvent};
pub use email::EmailAddress;
pub use events::{
    ClientContext, Consent, ConsentRecord, Event, ManageLinkRequested, ProspectConfirmed, ProspectDeleted,
    ProspectDetails, ProspectEmailChangeRequested, ProspectSignedUp, ProspectSignedUpV1, ProspectUpdated,
};
pub use payload::DecodeError;
pub use reference::{Country, Role};
