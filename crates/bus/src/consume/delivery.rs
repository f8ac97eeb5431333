//! A fetched message to a typed [`Delivery`]: the CloudEvents headers, the
//! payload, the stream position (a replayed letter keeps its first one).

use chrono::DateTime;
use messages::{EventSet, cloudevents as ce, dlq};
use uuid::Uuid;

use super::{Delivery, EventMeta};

/// A message's headers as the contract's decoders read them.
struct NatsHeaders<'a>(Option<&'a async_nats::HeaderMap>);

impl messages::Headers for NatsHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0?.get(name).map(|v| v.as_str())
    }
}

pub(super) fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Why a fetched message is not handed to the handler. Both are kept as dead
/// letters, never silently dropped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not an event of the contract (headers missing, not JSON, wrong shape,
    /// unknown type): poison.
    Undecodable(String),
    /// A well-formed event on a subject that is not its own: its subject's
    /// kind or prospect id disagree with its `ce-type` or payload. Someone
    /// allowed to publish on one subject sent another kind of event there.
    Forged(String),
}

impl Refused {
    /// The dead letter's reason.
    pub(super) fn reason(&self) -> String {
        match self {
            Self::Undecodable(why) => format!("cannot be decoded: {why}"),
            Self::Forged(why) => format!("forged: {why}"),
        }
    }
}

pub(super) fn decode<E: EventSet>(
    message: &async_nats::Message,
    stream_sequence: u64,
    delivered: i64,
) -> Result<Delivery<E>, Refused> {
    let poison = |why: String| Refused::Undecodable(why);
    let ce_type = header(message, ce::TYPE).ok_or_else(|| poison("missing ce-type header".into()))?;
    let event_id = header(message, ce::ID)
        .ok_or_else(|| poison("missing ce-id header".into()))?
        .parse::<Uuid>()
        .map_err(|e| poison(format!("ce-id is not a UUID: {e}")))?;
    let headers = NatsHeaders(message.headers.as_ref());
    let event = E::decode_message(ce_type, &message.payload, &headers).map_err(|e| poison(e.to_string()))?;
    if let Some(own) = event.subject()
        && own != message.subject.as_str()
    {
        // Both subjects hold ids and kinds only, no personal data.
        return Err(Refused::Forged(format!(
            "a {ce_type} event (ce-id {event_id}) arrived on {}, not on its own subject {own}",
            message.subject
        )));
    }
    Ok(Delivery {
        meta: EventMeta {
            event_id,
            ce_type: ce_type.to_owned(),
            source: header(message, ce::SOURCE).unwrap_or_default().to_owned(),
            time: header(message, ce::TIME).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc()),
            traceparent: header(message, ce::TRACEPARENT).map(str::to_owned),
            // A replayed dead letter keeps its original place in the order.
            stream_sequence: header(message, dlq::REPLAY_OF_SEQ)
                .and_then(|s| s.parse().ok())
                .unwrap_or(stream_sequence),
            delivered,
        },
        event,
    })
}

#[cfg(test)]
mod tests {
    use async_nats::HeaderMap;
    use messages::ProspectDeleted;

    use super::*;

    /// The erasure of this prospect is what the tests' messages carry.
    static PROSPECT: std::sync::LazyLock<Uuid> = std::sync::LazyLock::new(Uuid::now_v7);

    fn message(headers: &[(&str, &str)], payload: &[u8]) -> async_nats::Message {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        async_nats::Message {
            subject: messages::streams::event_subject(*PROSPECT, "deleted").into(),
            reply: None,
            payload: payload.to_vec().into(),
            headers: Some(map),
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    fn deleted() -> Vec<u8> {
        let event = ProspectDeleted { prospect_id: *PROSPECT, deleted_at: chrono::Utc::now(), disowned: false };
        serde_json::to_vec(&event).expect("json")
    }

    #[test]
    fn a_message_with_its_headers_becomes_a_typed_delivery() {
        let id = Uuid::now_v7();
        let id_text = id.to_string();
        let headers = [
            (ce::TYPE, <ProspectDeleted as messages::Event>::TYPE),
            (ce::ID, id_text.as_str()),
            (ce::SOURCE, "/signup-web"),
            (ce::TIME, "2026-11-30T10:00:00Z"),
            (ce::TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ];
        let delivery: Delivery<ProspectDeleted> = decode(&message(&headers, &deleted()), 42, 3).expect("decoded");
        assert_eq!(delivery.meta.event_id, id);
        assert_eq!(delivery.meta.source, "/signup-web");
        assert_eq!(delivery.meta.stream_sequence, 42);
        assert_eq!(delivery.meta.delivered, 3);
        assert_eq!(delivery.meta.time.map(|t| t.to_rfc3339()), Some("2026-11-30T10:00:00+00:00".to_owned()));
        assert!(delivery.meta.traceparent.is_some());
    }

    #[test]
    fn a_replayed_letter_keeps_its_first_position() {
        let id = Uuid::now_v7().to_string();
        let headers =
            [(ce::TYPE, <ProspectDeleted as messages::Event>::TYPE), (ce::ID, id.as_str()), (dlq::REPLAY_OF_SEQ, "7")];
        let delivery: Delivery<ProspectDeleted> = decode(&message(&headers, &deleted()), 900, 1).expect("decoded");
        assert_eq!(delivery.meta.stream_sequence, 7);
    }

    #[test]
    fn what_cannot_be_decoded_says_why() {
        let id = Uuid::now_v7().to_string();
        let kind = <ProspectDeleted as messages::Event>::TYPE;
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], &'a str);
        let cases: [Case; 4] = [
            (&[(ce::ID, id.as_str())], b"{}", "missing ce-type"),
            (&[(ce::TYPE, kind)], b"{}", "missing ce-id"),
            (&[(ce::TYPE, kind), (ce::ID, "not-a-uuid")], b"{}", "ce-id is not a UUID"),
            (&[(ce::TYPE, kind), (ce::ID, id.as_str())], b"{\"nope\":1}", kind),
        ];
        for (headers, payload, reason) in cases {
            let error = decode::<ProspectDeleted>(&message(headers, payload), 1, 1).expect_err("refused");
            assert!(
                matches!(&error, Refused::Undecodable(why) if why.contains(reason)),
                "{error:?} should say {reason:?}"
            );
        }
    }

    #[test]
    fn an_event_on_another_subject_than_its_own_is_forged() {
        use messages::{ManageLinkRequested, ProspectEvent};
        let victim = Uuid::now_v7();
        let id = Uuid::now_v7().to_string();
        let link = ManageLinkRequested {
            prospect_id: victim,
            email: "a@b.co".into(),
            requested_at: chrono::Utc::now(),
            by_owner: false,
        };
        let payload = serde_json::to_vec(&link).expect("json");
        let headers = [(ce::TYPE, <ManageLinkRequested as messages::Event>::TYPE), (ce::ID, id.as_str())];
        let on = |subject: String| {
            let mut message = message(&headers, &payload);
            message.subject = subject.into();
            message
        };
        // Its own subject: fine, whether read alone or among every event.
        let own = messages::streams::event_subject(victim, "linkrequested");
        assert!(decode::<ManageLinkRequested>(&on(own.clone()), 1, 1).is_ok());
        assert!(decode::<ProspectEvent>(&on(own), 1, 1).is_ok());
        // Another kind's subject, another prospect's, or no prospect's.
        for subject in [
            messages::streams::event_subject(victim, "deleted"),
            messages::streams::event_subject(Uuid::now_v7(), "linkrequested"),
            "events.prospect.linkrequested".to_owned(),
        ] {
            let refused = decode::<ProspectEvent>(&on(subject.clone()), 1, 1).expect_err("refused");
            let Refused::Forged(why) = &refused else { panic!("{subject}: {refused:?}") };
            assert!(why.contains(&subject) && why.contains(&id), "{why}");
            assert!(!why.contains("a@b.co"), "no personal data in the reason: {why}");
            assert!(refused.reason().starts_with("forged: "));
        }
    }
}
