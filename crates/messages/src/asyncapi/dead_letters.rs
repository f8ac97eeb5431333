//! The dead-letter channel: an event a handler gave up on, with why.

use serde_json::{Value, json};

use super::{Document, event_headers, message_ref, operation};
use crate::cloudevents as ce;
use crate::{dlq, streams};

impl Document {
    /// The dead-letter channel: an event a handler gave up on, with why.
    pub(super) fn dead_letters(&mut self) {
        let name = "DeadLetter";
        let headers = self.dead_letter_headers();
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

    /// The headers of a dead letter: the original message's as they were
    /// (an event that could not be decoded, with no ce-type, an unknown one
    /// or a bad id, is dead-lettered too, so only the letter's own headers
    /// are required) and the `x-dlq-*` ones.
    fn dead_letter_headers(&self) -> Value {
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
        headers
    }
}
