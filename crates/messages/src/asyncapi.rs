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

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::cloudevents as ce;
use crate::events::{
    Event, ManageLinkRequested, ProspectConfirmed, ProspectDeleted, ProspectEmailChangeRequested, ProspectSignedUp,
    ProspectSignedUpV1, ProspectUpdated,
};
use crate::service::{
    self, Endpoint, ExportProspect, FindByAddress, FindEachAddress, FindHolders, GetProspect, ReferenceCountries,
    ReferenceRoles, StatusOf,
};
use crate::{dlq, streams};

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

    /// The channel of event `E`, its message, and the two operations on it.
    fn event<E: Event + JsonSchema>(&mut self, publishers: &str) {
        let name = E::schema_name().into_owned();
        let payload = self.schema::<E>();
        let description = self.generator.definitions().get(name.as_str()).and_then(|s| s.get("description")).cloned();
        self.messages.insert(
            name.clone(),
            json!({
                "name": E::TYPE,
                "title": name,
                "summary": description.unwrap_or(Value::Null),
                "contentType": ce::JSON_CONTENT_TYPE,
                "headers": event_headers(Some(E::TYPE)),
                "payload": payload,
            }),
        );
        self.event_types.push(E::TYPE);
        self.channels.insert(
            name.clone(),
            json!({
                "address": format!("events.prospect.{{prospectId}}.{}", E::KIND),
                "title": format!("{} events", E::KIND),
                "description": format!(
                    "Every {} event, on a subject of its prospect's own, in the {} stream (subjects {}). \
                     A handler of this event alone filters on {}.",
                    E::TYPE, streams::PROSPECTS_STREAM, streams::PROSPECTS_SUBJECTS, E::SUBJECTS
                ),
                "parameters": { "prospectId": { "description": "The prospect the event is about (a UUID)." } },
                "messages": { name.clone(): message_ref(&name) },
                "bindings": { "nats": {} },
            }),
        );
        self.operations.insert(
            format!("publish{name}"),
            operation(
                "send",
                format!("Publish {}", E::TYPE),
                &format!(
                    "Published by {publishers} with an awaited PubAck; the stream de-duplicates by Nats-Msg-Id (= ce-id)."
                ),
                &name,
                &name,
            ),
        );
        self.operations.insert(
            format!("consume{name}"),
            operation(
                "receive",
                format!("Consume {}", E::TYPE),
                "Each handler reads through a durable JetStream pull consumer of its own, named after it, acks after \
                 its effect is durable, and may see an event more than once (idempotency key: ce-id).",
                &name,
                &name,
            ),
        );
    }

    /// An older version of event `E`, still in the stream and still read:
    /// its message, on `E`'s channel, received but no longer sent.
    fn older_version<Old: Event + JsonSchema, E: Event + JsonSchema>(&mut self) {
        let (name, current) = (Old::schema_name().into_owned(), E::schema_name().into_owned());
        let payload = self.schema::<Old>();
        self.messages.insert(
            name.clone(),
            json!({
                "name": Old::TYPE,
                "title": name,
                "summary": format!(
                    "An older version of {}, no longer published: the stream keeps those already written, and \
                     handlers read them as {} (the messages crate upcasts them).",
                    E::TYPE, E::TYPE
                ),
                "contentType": ce::JSON_CONTENT_TYPE,
                "headers": event_headers(Some(Old::TYPE)),
                "payload": payload,
            }),
        );
        self.event_types.push(Old::TYPE);
        let channel = &mut self.channels[current.as_str()];
        channel["messages"][name.as_str()] = message_ref(&name);
        let consume = &mut self.operations[format!("consume{current}").as_str()];
        if let Some(messages) = consume["messages"].as_array_mut() {
            messages.push(channel_message_ref(&current, &name));
        }
    }

    /// The dead-letter channel: an event a handler gave up on, with why.
    fn dead_letters(&mut self) {
        let name = "DeadLetter";
        // The original message's headers as they were: an event that could
        // not be decoded (no ce-type, an unknown one, a bad id) is
        // dead-lettered too, so only the letter's own headers are required.
        let mut headers = event_headers(None);
        headers["required"] =
            json!([ce::NATS_MSG_ID, dlq::REASON, dlq::CONSUMER, dlq::DELIVERIES, dlq::STREAM_SEQ, dlq::SUBJECT]);
        let properties = headers["properties"].as_object_mut().unwrap_or_else(|| unreachable!("built above"));
        properties["ce-type"] = json!({
            "type": "string",
            "description": format!("The original event's type, as it was (normally one of: {}).", self.event_types.join(", ")),
        });
        properties[ce::NATS_MSG_ID] = json!({
            "type": "string",
            "description": "<consumer>:<stream sequence>: one letter per event and handler.",
            "pattern": "^[^:]+:[0-9]+$",
        });
        for (header, description, pattern) in [
            (dlq::REASON, "Why the handler gave up (its last error, or why the event could not be decoded).", None),
            (dlq::CONSUMER, "The durable consumer (handler) that gave up.", None),
            (dlq::DELIVERIES, "How many times the event had been delivered.", Some("^[0-9]+$")),
            (dlq::STREAM_SEQ, "The event's sequence in the event stream.", Some("^[0-9]+$")),
            (dlq::SUBJECT, "The subject the event was published on (where a replay puts it again).", None),
        ] {
            let mut schema = json!({ "type": "string", "description": description });
            if let Some(pattern) = pattern {
                schema["pattern"] = json!(pattern);
            }
            properties.insert(header.to_owned(), schema);
        }
        self.messages.insert(
            name.to_owned(),
            json!({
                "name": "dead-letter",
                "title": name,
                "summary": "An event a handler could not apply: the original headers and payload, plus why.",
                "contentType": ce::JSON_CONTENT_TYPE,
                "headers": headers,
                "payload": {
                    "description": "The original event's payload, byte for byte: normally the payload of its ce-type \
                                    (see the events' messages); an event that could not be decoded is kept as it was, \
                                    whatever it holds.",
                },
            }),
        );
        self.channels.insert(
            "DeadLetters".to_owned(),
            json!({
                "address": "dlq.prospect.{consumer}.{prospectId}.{kind}",
                "title": "Dead letters",
                "description": format!(
                    "The {} stream (subjects {}): what a handler gave up on after its deliveries ran out, or at once \
                     for a permanent failure. `signup dlq` lists, replays and purges them; an erasure purges the \
                     prospect's letters of the kinds that hold personal data ({}). A message whose subject names no \
                     prospect is dead-lettered on dlq.prospect.{{consumer}}.{{kind}} (four tokens).",
                    streams::DLQ_STREAM, streams::DLQ_SUBJECTS, streams::PERSONAL_KINDS.join(", ")
                ),
                "parameters": {
                    "consumer": { "description": "The handler (durable consumer) that gave up." },
                    "prospectId": { "description": "The prospect the event is about." },
                    "kind": { "description": "The event's kind.", "enum": streams::KINDS },
                },
                "messages": { name: message_ref(name) },
                "bindings": { "nats": {} },
            }),
        );
        self.operations.insert(
            "deadLetter".to_owned(),
            operation(
                "send",
                "Dead-letter an event".to_owned(),
                "The consumer runner of any handler, before it acks the event it gives up on.",
                "DeadLetters",
                name,
            ),
        );
        self.operations.insert(
            "notifyDeadLetter".to_owned(),
            operation(
                "receive",
                "Report dead letters".to_owned(),
                "dead-letter-notifier reads the stream through its own durable consumer and reports each letter.",
                "DeadLetters",
                name,
            ),
        );
    }

    /// A `prospects` endpoint: its request channel, its reply channel (the
    /// requester's inbox) and the operation answering it.
    fn endpoint<E: Endpoint>(&mut self) {
        let words: String = E::NAME.split('-').map(capitalized).collect();
        let (request, reply) = (format!("{words}Request"), format!("{words}Reply"));
        let request_payload = self.schema::<E::Request>();
        let reply_payload = self.schema::<E::Reply>();
        let error_codes =
            [service::BAD_REQUEST, service::NOT_FOUND, service::INTERNAL, service::UNAVAILABLE].map(|c| c.to_string());
        self.messages.insert(
            request.clone(),
            json!({
                "name": format!("{}.request", E::SUBJECT),
                "title": request,
                "contentType": ce::JSON_CONTENT_TYPE,
                "payload": request_payload,
            }),
        );
        self.messages.insert(
            reply.clone(),
            json!({
                "name": format!("{}.reply", E::SUBJECT),
                "title": reply,
                "summary": "The answer; on an error the two Nats-Service-Error headers are set and the payload is empty.",
                "contentType": ce::JSON_CONTENT_TYPE,
                "headers": {
                    "type": "object",
                    "properties": {
                        "Nats-Service-Error-Code": {
                            "type": "string",
                            "description": "Set on an error: 400 (not a request of this shape), 404 (no such live prospect), \
                                            500 (the reply could not be encoded), 503 (cannot answer now).",
                            "enum": error_codes,
                        },
                        "Nats-Service-Error": { "type": "string", "description": "Set on an error: what went wrong." },
                    },
                },
                "payload": reply_payload,
            }),
        );
        self.channels.insert(
            request.clone(),
            json!({
                "address": E::SUBJECT,
                "title": format!("{} requests", E::SUBJECT),
                "description": format!(
                    "Endpoint `{}` of the NATS micro-service `{}` (queue group `{}`): each request is answered once.",
                    E::NAME, service::SERVICE_NAME, service::QUEUE_GROUP
                ),
                "messages": { request.clone(): message_ref(&request) },
                "bindings": { "nats": {} },
            }),
        );
        self.channels.insert(
            reply.clone(),
            json!({
                "address": null,
                "title": format!("{} replies", E::SUBJECT),
                "description": "The requester's inbox: the reply subject its request named.",
                "messages": { reply.clone(): message_ref(&reply) },
            }),
        );
        self.operations.insert(
            format!("answer{words}"),
            json!({
                "action": "receive",
                "title": format!("Answer {}", E::SUBJECT),
                "summary": E::SUMMARY,
                "description": "save-prospect answers; the web tier and the mailer ask.",
                "channel": channel_ref(&request),
                "messages": [channel_message_ref(&request, &request)],
                "reply": {
                    "channel": channel_ref(&reply),
                    "messages": [channel_message_ref(&reply, &reply)],
                },
                "bindings": { "nats": { "queue": service::QUEUE_GROUP, "bindingVersion": NATS_BINDING } },
            }),
        );
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
