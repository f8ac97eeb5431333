//! The `prospects` request-reply endpoints: each request, its reply, and
//! the operation answering it.

use serde_json::json;

use super::{Document, NATS_BINDING, capitalized, channel_message_ref, channel_ref, message_ref};
use crate::cloudevents as ce;
use crate::service::{self, Endpoint};

impl Document {
    /// A `prospects` endpoint: its request channel, its reply channel (the
    /// requester's inbox) and the operation answering it.
    pub(super) fn endpoint<E: Endpoint>(&mut self) {
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
}
