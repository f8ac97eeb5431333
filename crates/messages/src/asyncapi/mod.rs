//! The AsyncAPI 3.0 document of the contract, generated from the types of
//! this crate: a channel per event subject (`events.prospect.{prospectId}.<kind>`)
//! with its CloudEvents headers and payload schema, the dead-letter channel
//! with its `x-dlq-*` headers, and the `prospects.*` request-reply
//! endpoints, each with its reply.
//!
//! The document is checked in as `asyncapi.json` beside this crate's
//! `Cargo.toml` (`cargo test -p messages` fails when it drifts from the
//! types) and served by signup-web at `GET /api/asyncapi.json`.
//!
//! Payload schemas are JSON Schema draft 07 (what an AsyncAPI schema
//! extends), with every named type under `components/schemas`.

mod dead_letters;
mod endpoints;
mod events;

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::cloudevents as ce;
use crate::dlq;
use crate::events::{
    ManageLinkRequested, ProspectConfirmed, ProspectDeleted, ProspectEmailChangeRequested, ProspectSignedUp,
    ProspectSignedUpV1, ProspectUpdated,
};
use crate::service::{
    ExportProspect, FindByAddress, FindEachAddress, FindHolders, GetProspect, ReferenceCountries, ReferenceRoles,
    StatusOf,
};

/// The version of the document (the contract's, not the crate's).
pub const VERSION: &str = "2.1.0";

/// The NATS binding's version this document uses.
const NATS_BINDING: &str = "0.1.0";

/// The document as JSON.
pub fn document() -> Value {
    let mut doc = Document::new();
    doc.event::<ProspectSignedUp>("signup-web");
    doc.older_version::<ProspectSignedUpV1, ProspectSignedUp>();
    doc.event::<ProspectUpdated>("signup-web");
    doc.event::<ProspectDeleted>("signup-web, and save-prospect when a sign-up is not confirmed in time");
    doc.event::<ProspectConfirmed>("signup-web");
    doc.event::<ProspectEmailChangeRequested>("signup-web");
    doc.event::<ManageLinkRequested>("signup-web");
    doc.dead_letters();
    doc.endpoint::<ReferenceCountries>();
    doc.endpoint::<ReferenceRoles>();
    doc.endpoint::<StatusOf>();
    doc.endpoint::<GetProspect>();
    doc.endpoint::<FindByAddress>();
    doc.endpoint::<FindEachAddress>();
    doc.endpoint::<FindHolders>();
    doc.endpoint::<ExportProspect>();
    doc.finish()
}

/// The document as it is built.
struct Document {
    generator: SchemaGenerator,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    /// The events' `ce-type`s, for the dead letters' headers.
    event_types: Vec<&'static str>,
}

impl Document {
    fn new() -> Self {
        let settings = SchemaSettings::draft07().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Self {
            generator: settings.into_generator(),
            channels: Map::new(),
            operations: Map::new(),
            messages: Map::new(),
            event_types: Vec::new(),
        }
    }

    /// A `$ref` (or an inline schema) for `T`, its named parts collected.
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn finish(mut self) -> Value {
        let schemas = self.generator.take_definitions(true);
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": "Signup events",
                "version": VERSION,
                "description": "The events a sign-up becomes on NATS JetStream (CloudEvents 1.0, NATS binding, binary \
                                content mode: the attributes are ce- headers, the payload is the event's JSON), the \
                                dead letters of the handlers, and the `prospects` request-reply service. Generated from \
                                the `messages` crate.",
                "license": { "name": "MIT OR Apache-2.0" },
            },
            "defaultContentType": ce::JSON_CONTENT_TYPE,
            "servers": {
                "local": {
                    "host": "127.0.0.1:4222",
                    "protocol": "nats",
                    "description": "A nats-server with JetStream (2.10 or later), as scripts/run starts it.",
                },
            },
            "channels": self.channels,
            "operations": self.operations,
            "components": { "messages": self.messages, "schemas": schemas },
        })
    }
}

/// The CloudEvents headers of an event of `ce_type` (any type when `None`).
fn event_headers(ce_type: Option<&str>) -> Value {
    let ce_type = match ce_type {
        Some(t) => json!({ "const": t, "description": "The versioned event type." }),
        None => json!({ "type": "string", "description": "The versioned event type." }),
    };
    json!({
        "type": "object",
        "required": [ce::SPECVERSION, ce::ID, ce::SOURCE, ce::TYPE, ce::TIME, ce::CONTENT_TYPE, ce::NATS_MSG_ID],
        "properties": {
            ce::SPECVERSION: { "const": ce::SPEC_VERSION },
            ce::ID: { "type": "string", "format": "uuid", "description": "The event's unique id: the idempotency key." },
            ce::SOURCE: { "type": "string", "format": "uri-reference", "description": "The publishing service, e.g. /signup-web." },
            ce::TYPE: ce_type,
            ce::TIME: { "type": "string", "format": "date-time", "description": "When the event happened (RFC 3339, UTC)." },
            ce::DATASCHEMA: {
                "type": "string",
                "format": "uri",
                "description": "The payload's JSON Schema, as signup-web serves it: <public URL>/api/schemas/<ce-type>.json.",
            },
            ce::CONTENT_TYPE: { "const": ce::JSON_CONTENT_TYPE },
            ce::NATS_MSG_ID: {
                "type": "string",
                "description": "JetStream's de-duplication id: the same value as ce-id; on a replayed dead letter, \
                                replay:<dead-letter stream>:<letter sequence> (one replay per letter).",
            },
            ce::TRACEPARENT: {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context of the request that caused the event.",
            },
            dlq::REPLAY_OF_SEQ: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "On a replayed dead letter: the original's stream sequence, where handlers order it.",
            },
        },
    })
}

/// An operation on `channel` with its one `message`, bound to NATS.
fn operation(action: &str, title: String, summary: &str, channel: &str, message: &str) -> Value {
    json!({
        "action": action,
        "title": title,
        "summary": summary,
        "channel": channel_ref(channel),
        "messages": [channel_message_ref(channel, message)],
        "bindings": { "nats": { "bindingVersion": NATS_BINDING } },
    })
}

fn message_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/messages/{name}") })
}

fn channel_ref(channel: &str) -> Value {
    json!({ "$ref": format!("#/channels/{channel}") })
}

fn channel_message_ref(channel: &str, message: &str) -> Value {
    json!({ "$ref": format!("#/channels/{channel}/messages/{message}") })
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProspectEvent;
    use crate::{service, streams};

    #[test]
    fn every_event_type_has_a_channel_a_message_and_its_headers() {
        let doc = document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let messages = doc["components"]["messages"].as_object().expect("messages");
        let mut types: Vec<&str> =
            messages.values().filter_map(|m| m["headers"]["properties"]["ce-type"]["const"].as_str()).collect();
        types.sort_unstable();
        let mut decoded = [ProspectEvent::TYPES.as_slice(), ProspectEvent::OLDER_TYPES.as_slice()].concat();
        decoded.sort_unstable();
        assert_eq!(types, decoded, "one message per event type the decoder knows");
        let signed_up = doc["channels"]["ProspectSignedUp"]["messages"].as_object().expect("sign-up messages");
        assert_eq!(signed_up.len(), 2, "both versions on the sign-up channel");
        assert_eq!(doc["operations"]["consumeProspectSignedUp"]["messages"].as_array().map(Vec::len), Some(2));
        assert_eq!(doc["operations"]["publishProspectSignedUp"]["messages"].as_array().map(Vec::len), Some(1));
        for kind in streams::KINDS {
            let address = format!("events.prospect.{{prospectId}}.{kind}");
            assert!(
                doc["channels"].as_object().expect("channels").values().any(|c| c["address"] == address),
                "a channel for {kind}"
            );
        }
        assert_eq!(doc["channels"]["DeadLetters"]["address"], "dlq.prospect.{consumer}.{prospectId}.{kind}");
        let status = &doc["operations"]["answerStatus"];
        assert_eq!(status["bindings"]["nats"]["queue"], service::QUEUE_GROUP);
        assert_eq!(doc["channels"]["StatusRequest"]["address"], service::STATUS);
        // Every reference points at something in the document.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1).map(|rest| &rest[..rest.find('"').expect("closed")]) {
            let pointer = reference.strip_prefix('#').expect("local reference");
            let pointer = pointer.replace("~1", "/");
            assert!(doc.pointer(&pointer).is_some(), "{reference} resolves");
        }
    }
}
