//! Turning a CloudEvent (its `ce-type` and JSON data) back into a typed event.

use chrono::{DateTime, Utc};

use crate::events::{
    Event, ManageLinkRequested, ProspectConfirmed, ProspectDeleted, ProspectDetails, ProspectEmailChangeRequested,
    ProspectSignedUp, ProspectSignedUpV1, ProspectUpdated,
};
use crate::payload::{DecodeError, decode_as};

/// A set of events a consumer can receive: one event type, or an enum of
/// several.
pub trait EventSet: Sized + Send + Sync + 'static {
    /// The subject filter that selects exactly these events in the stream.
    const FILTER_SUBJECT: &'static str;
    /// Whether these are dead letters, kept in the dead-letter stream
    /// ([`DLQ_STREAM`](crate::streams::DLQ_STREAM)) rather than the event stream.
    const DEAD_LETTERS: bool = false;
    /// Decodes one message given its CloudEvents type and JSON data.
    fn decode(ce_type: &str, data: &[u8]) -> Result<Self, DecodeError>;
    /// The subject a genuine message of this content was published on, or
    /// `None` for messages that are not bound to one (dead letters). The
    /// consumer runner refuses, as forged, an event that arrived on another
    /// subject: the subject is what the broker's permissions check and what
    /// erasure purges by, so its kind and prospect id must be the event's.
    fn subject(&self) -> Option<String>;
    /// Decodes one message with its headers at hand; by default from its
    /// `ce-type` and data alone ([`decode`](Self::decode)).
    fn decode_message(ce_type: &str, data: &[u8], headers: &dyn Headers) -> Result<Self, DecodeError> {
        let _ = headers;
        Self::decode(ce_type, data)
    }
}

/// A message's headers, as [`EventSet::decode_message`] reads them.
pub trait Headers {
    /// The value of header `name`, if the message has it.
    fn get(&self, name: &str) -> Option<&str>;
}

/// A `ce-type` without its version (`io.signup.prospect.signedup`).
fn unversioned(ce_type: &str) -> &str {
    ce_type.rsplit_once('.').map_or(ce_type, |(name, _)| name)
}

/// An event of type `ce_type` as `E`: its current version as it is, an
/// older one upcast ([`Event::upcast`]), another version of the same event
/// refused as such, anything else as unknown.
fn decode_versioned<E: Event>(ce_type: &str, data: &[u8]) -> Result<E, DecodeError> {
    if ce_type == E::TYPE {
        return decode_as(ce_type, data);
    }
    if let Some(upcast) = E::upcast(ce_type, data) {
        return upcast;
    }
    // A version is `v` and a number without leading zeros: `…v01`, `…v`,
    // `…vX` are no versions of anything, just unknown types.
    let is_version = |v: &str| {
        v.strip_prefix('v').is_some_and(|n| {
            n.bytes().all(|b| b.is_ascii_digit()) && n.bytes().next().is_some_and(|first| first != b'0')
        })
    };
    match ce_type.rsplit_once('.') {
        Some((name, version)) if name == unversioned(E::TYPE) && is_version(version) => {
            let reads = std::iter::once(E::TYPE).chain(E::OLDER_TYPES.iter().copied()).collect::<Vec<_>>().join(", ");
            Err(DecodeError::UnsupportedVersion { ce_type: ce_type.to_owned(), reads })
        }
        _ => Err(DecodeError::UnknownType(ce_type.to_owned())),
    }
}

impl<E: Event> EventSet for E {
    const FILTER_SUBJECT: &'static str = E::SUBJECTS;
    fn decode(ce_type: &str, data: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(ce_type, data)
    }
    fn subject(&self) -> Option<String> {
        Some(Event::subject(self))
    }
}

/// Any prospect event: what a handler of the whole lifecycle receives. Not
/// itself a wire format: each variant travels as its own event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProspectEvent {
    /// A visitor signed up.
    SignedUp(ProspectSignedUp),
    /// A prospect changed their details.
    Updated(ProspectUpdated),
    /// A prospect asked to be forgotten (or never confirmed in time).
    Deleted(ProspectDeleted),
    /// The owner of the address confirmed a sign-up.
    Confirmed(ProspectConfirmed),
    /// A prospect asked to move to another address (not in effect yet).
    EmailChangeRequested(ProspectEmailChangeRequested),
    /// A new manage link was asked for.
    ManageLinkRequested(ManageLinkRequested),
}

impl ProspectEvent {
    /// The `ce-type` of each event's current version: what is published.
    pub const TYPES: [&'static str; 6] = [
        ProspectSignedUp::TYPE,
        ProspectUpdated::TYPE,
        ProspectDeleted::TYPE,
        ProspectConfirmed::TYPE,
        ProspectEmailChangeRequested::TYPE,
        ManageLinkRequested::TYPE,
    ];

    /// The earlier versions this set still reads, each upcast to its
    /// current version ([`Event::upcast`]).
    pub const OLDER_TYPES: [&'static str; 1] = [ProspectSignedUpV1::TYPE];

    /// The prospect the event is about.
    pub fn prospect_id(&self) -> uuid::Uuid {
        match self {
            Self::SignedUp(e) => e.prospect_id(),
            Self::Updated(e) => e.prospect_id(),
            Self::Deleted(e) => e.prospect_id(),
            Self::Confirmed(e) => e.prospect_id(),
            Self::EmailChangeRequested(e) => e.prospect_id(),
            Self::ManageLinkRequested(e) => e.prospect_id(),
        }
    }

    /// The event's CloudEvents type.
    pub fn ce_type(&self) -> &'static str {
        match self {
            Self::SignedUp(_) => ProspectSignedUp::TYPE,
            Self::Updated(_) => ProspectUpdated::TYPE,
            Self::Deleted(_) => ProspectDeleted::TYPE,
            Self::Confirmed(_) => ProspectConfirmed::TYPE,
            Self::EmailChangeRequested(_) => ProspectEmailChangeRequested::TYPE,
            Self::ManageLinkRequested(_) => ManageLinkRequested::TYPE,
        }
    }

    /// The details the event puts in effect: those of a sign-up or an
    /// update. A requested e-mail change is not in effect yet, so it has none
    /// here.
    pub fn details(&self) -> Option<&ProspectDetails> {
        match self {
            Self::SignedUp(e) => Some(&e.details),
            Self::Updated(e) => Some(&e.details),
            _ => None,
        }
    }

    /// When it happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::SignedUp(e) => e.signed_up_at,
            Self::Updated(e) => e.updated_at,
            Self::Deleted(e) => e.deleted_at,
            Self::Confirmed(e) => e.confirmed_at,
            Self::EmailChangeRequested(e) => e.requested_at,
            Self::ManageLinkRequested(e) => e.requested_at,
        }
    }
}

impl ProspectEvent {
    /// The last token of the event's subjects (`signedup`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SignedUp(_) => ProspectSignedUp::KIND,
            Self::Updated(_) => ProspectUpdated::KIND,
            Self::Deleted(_) => ProspectDeleted::KIND,
            Self::Confirmed(_) => ProspectConfirmed::KIND,
            Self::EmailChangeRequested(_) => ProspectEmailChangeRequested::KIND,
            Self::ManageLinkRequested(_) => ManageLinkRequested::KIND,
        }
    }
}

impl EventSet for ProspectEvent {
    const FILTER_SUBJECT: &'static str = crate::streams::PROSPECTS_SUBJECTS;
    fn subject(&self) -> Option<String> {
        Some(crate::streams::event_subject(self.prospect_id(), self.kind()))
    }
    fn decode(ce_type: &str, data: &[u8]) -> Result<Self, DecodeError> {
        // By the event's name, whatever its version: each event's own
        // decoding reads its older versions and refuses unknown ones.
        let named = |t: &str| unversioned(ce_type) == unversioned(t);
        match ce_type {
            t if named(ProspectSignedUp::TYPE) => decode_versioned(t, data).map(Self::SignedUp),
            t if named(ProspectUpdated::TYPE) => decode_versioned(t, data).map(Self::Updated),
            t if named(ProspectDeleted::TYPE) => decode_versioned(t, data).map(Self::Deleted),
            t if named(ProspectConfirmed::TYPE) => decode_versioned(t, data).map(Self::Confirmed),
            t if named(ProspectEmailChangeRequested::TYPE) => decode_versioned(t, data).map(Self::EmailChangeRequested),
            t if named(ManageLinkRequested::TYPE) => decode_versioned(t, data).map(Self::ManageLinkRequested),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TYPES` is what the AsyncAPI document, the served schemas and the
    /// CloudEvents test go by: a new variant must be in it. The match below
    /// stops compiling when a variant is added, and the loop checks the
    /// positions against the list.
    #[test]
    fn types_lists_every_variant() {
        let position = |event: &ProspectEvent| match event {
            ProspectEvent::SignedUp(_) => 0,
            ProspectEvent::Updated(_) => 1,
            ProspectEvent::Deleted(_) => 2,
            ProspectEvent::Confirmed(_) => 3,
            ProspectEvent::EmailChangeRequested(_) => 4,
            ProspectEvent::ManageLinkRequested(_) => 5,
        };
        let id = uuid::Uuid::now_v7();
        let at = Utc::now();
        let details = ProspectDetails {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            company_name: None,
            country: crate::Country { code: "GB".into(), name: "United Kingdom".into() },
            role: crate::Role { code: "EN".into(), name: "Engineer".into() },
        };
        let every = [
            ProspectEvent::SignedUp(ProspectSignedUp {
                prospect_id: id,
                details: details.clone(),
                signed_up_at: at,
                consent: crate::Consent::NotRecorded,
            }),
            ProspectEvent::Updated(ProspectUpdated { prospect_id: id, details: details.clone(), updated_at: at }),
            ProspectEvent::Deleted(ProspectDeleted { prospect_id: id, deleted_at: at, disowned: false }),
            ProspectEvent::Confirmed(ProspectConfirmed {
                prospect_id: id,
                confirmed_at: at,
                client: Default::default(),
            }),
            ProspectEvent::EmailChangeRequested(ProspectEmailChangeRequested {
                prospect_id: id,
                details,
                previous_email: "old@example.com".into(),
                requested_at: at,
            }),
            ProspectEvent::ManageLinkRequested(ManageLinkRequested {
                prospect_id: id,
                email: "a@b.co".into(),
                requested_at: at,
                by_owner: false,
            }),
        ];
        assert_eq!(every.len(), ProspectEvent::TYPES.len());
        for event in &every {
            assert_eq!(ProspectEvent::TYPES[position(event)], event.ce_type());
        }
    }

    #[test]
    fn an_event_names_the_one_subject_it_may_arrive_on() {
        let id = uuid::Uuid::now_v7();
        let json = serde_json::json!({"prospectId": id, "email": "a@b.co", "requestedAt": "2026-12-01T10:00:00Z"});
        let data = serde_json::to_vec(&json).expect("json");
        let event = ProspectEvent::decode(ManageLinkRequested::TYPE, &data).expect("a link request");
        let expected = format!("events.prospect.{id}.linkrequested");
        assert_eq!(EventSet::subject(&event), Some(expected.clone()));
        let alone = ManageLinkRequested::decode(ManageLinkRequested::TYPE, &data).expect("a link request");
        assert_eq!(EventSet::subject(&alone), Some(expected));
        let deleted =
            ProspectEvent::Deleted(ProspectDeleted { prospect_id: id, deleted_at: Utc::now(), disowned: false });
        assert_eq!(EventSet::subject(&deleted), Some(format!("events.prospect.{id}.deleted")));
    }

    #[test]
    fn decodes_by_type_and_rejects_the_rest() {
        let json = br#"{"prospectId":"0192f0c1-7a3b-7cde-8f01-23456789abcd","deletedAt":"2026-11-21T12:00:00Z"}"#;
        let event = ProspectEvent::decode(ProspectDeleted::TYPE, json).expect("a deleted event");
        assert!(matches!(event, ProspectEvent::Deleted(_)));
        assert_eq!(event.ce_type(), ProspectDeleted::TYPE);

        assert!(matches!(
            ProspectEvent::decode("io.signup.prospect.deleted.v2", json),
            Err(DecodeError::UnsupportedVersion { ce_type, .. }) if ce_type.ends_with("v2")
        ));
        assert!(matches!(
            ProspectEvent::decode("io.signup.prospect.forgotten.v1", json),
            Err(DecodeError::UnknownType(t)) if t.ends_with("forgotten.v1")
        ));
        for malformed in ["v01", "v", "vX", "v1 ", "v0", "V2", "v1.x"] {
            let ce_type = format!("io.signup.prospect.deleted.{malformed}");
            assert!(
                matches!(ProspectEvent::decode(&ce_type, json), Err(DecodeError::UnknownType(_))),
                "{ce_type:?} is no version"
            );
        }
        assert!(matches!(ProspectEvent::decode(ProspectSignedUp::TYPE, json), Err(DecodeError::InvalidPayload { .. })));
        assert!(matches!(
            ProspectDeleted::decode(ProspectDeleted::TYPE, b"not json"),
            Err(DecodeError::InvalidPayload { .. })
        ));
        assert!(matches!(ProspectDeleted::decode(ProspectUpdated::TYPE, json), Err(DecodeError::UnknownType(_))));
    }

    #[test]
    fn a_version_1_sign_up_is_read_as_version_2_and_a_version_3_is_refused_by_name() {
        let json = br#"{"prospectId":"0192f0c1-7a3b-7cde-8f01-23456789abcd","firstName":"Ada","lastName":"Lovelace",
            "email":"ada@example.com","country":{"code":"GB","name":"United Kingdom"},
            "role":{"code":"EN","name":"Engineer"},"signedUpAt":"2026-11-21T10:00:00Z"}"#;
        for event in [
            ProspectEvent::decode(ProspectSignedUpV1::TYPE, json).expect("v1 in the lifecycle set"),
            ProspectEvent::SignedUp(ProspectSignedUp::decode(ProspectSignedUpV1::TYPE, json).expect("v1 alone")),
        ] {
            let ProspectEvent::SignedUp(signed_up) = event else { panic!("a sign-up") };
            assert_eq!(signed_up.consent, crate::Consent::NotRecorded);
            assert_eq!(signed_up.details.email.as_str(), "ada@example.com");
        }
        // A v2 payload is not a v1 one: without its consent it is refused.
        assert!(matches!(
            ProspectSignedUp::decode(ProspectSignedUp::TYPE, json),
            Err(DecodeError::InvalidPayload { source, .. }) if source.to_string().contains("consent")
        ));
        for set in [
            ProspectEvent::decode("io.signup.prospect.signedup.v3", json).map(|_| ()),
            ProspectSignedUp::decode("io.signup.prospect.signedup.v3", json).map(|_| ()),
        ] {
            let error = set.expect_err("a newer version is never misread");
            assert!(matches!(error, DecodeError::UnsupportedVersion { .. }), "{error}");
            let reason = error.to_string();
            assert!(
                reason.contains("signedup.v3") && reason.contains("signedup.v2, io.signup.prospect.signedup.v1"),
                "{reason}"
            );
        }
    }
}
