//! The events' channels, messages and operations, and the older versions
//! still read.

use schemars::JsonSchema;
use serde_json::{Value, json};

use super::{Document, channel_message_ref, event_headers, message_ref, operation};
use crate::cloudevents as ce;
use crate::events::Event;
use crate::streams;

impl Document {
    /// The channel of event `E`, its message, and the two operations on it.
    pub(super) fn event<E: Event + JsonSchema>(&mut self, publishers: &str) {
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
    pub(super) fn older_version<Old: Event + JsonSchema, E: Event + JsonSchema>(&mut self) {
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
}
