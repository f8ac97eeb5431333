//! Header names of the CloudEvents 1.0 NATS protocol binding (binary content
//! mode): the event's attributes travel as `ce-` headers and the payload is the
//! event's JSON.

/// CloudEvents specification version; always [`SPEC_VERSION`].
pub const SPECVERSION: &str = "ce-specversion";
/// Unique event id (a UUID); also sent as [`NATS_MSG_ID`] for de-duplication.
pub const ID: &str = "ce-id";
/// Where the event comes from, e.g. `/signup-web`.
pub const SOURCE: &str = "ce-source";
/// The versioned event type, e.g. `io.signup.prospect.signedup.v1`.
pub const TYPE: &str = "ce-type";
/// When the event happened, RFC 3339.
pub const TIME: &str = "ce-time";
/// The URI of the payload's JSON Schema ([`dataschema_url`]).
pub const DATASCHEMA: &str = "ce-dataschema";
/// Payload media type; always [`JSON_CONTENT_TYPE`].
pub const CONTENT_TYPE: &str = "Content-Type";
/// W3C trace context, when the event was caused by a traced request.
pub const TRACEPARENT: &str = "traceparent";
/// JetStream's de-duplication header; carries the same value as [`ID`].
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// The only CloudEvents version this contract speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The payload's media type.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Where signup-web, answering at `base_url` (its public URL), serves the
/// JSON Schema of events of `ce_type`: the events' `ce-dataschema`.
pub fn dataschema_url(base_url: &str, ce_type: &str) -> String {
    format!("{}/api/schemas/{ce_type}.json", base_url.trim_end_matches('/'))
}
