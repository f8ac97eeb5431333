//! Contract tests: the checked-in JSON Schemas and golden payloads must match
//! the structs exactly. After a deliberate, compatible change run
//! `UPDATE_CONTRACT=1 cargo test -p messages` and review the diff.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use messages::{
    ClientContext, Consent, ConsentRecord, Country, Event, EventSet as _, ManageLinkRequested, ProspectConfirmed,
    ProspectDeleted, ProspectDetails, ProspectEmailChangeRequested, ProspectEvent, ProspectSignedUp,
    ProspectSignedUpV1, ProspectUpdated, Role,
};
use uuid::Uuid;

fn crate_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Compares `actual` with the checked-in file, or rewrites the file when
/// `UPDATE_CONTRACT` is set.
fn assert_matches_file(relative: &str, actual: &str) {
    let path = crate_file(relative);
    if std::env::var_os("UPDATE_CONTRACT").is_some() {
        std::fs::write(&path, actual).expect("write contract file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run with UPDATE_CONTRACT=1", path.display()));
    assert_eq!(
        expected,
        actual,
        "{} drifted from the structs; if the change is deliberate and compatible, \
         run UPDATE_CONTRACT=1 cargo test -p messages and commit the diff",
        path.display()
    );
}

fn details() -> ProspectDetails {
    ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@example.com".into(),
        company_name: Some("Analytical Engines".into()),
        country: Country { code: "GB".into(), name: "United Kingdom".into() },
        role: Role { code: "EN".into(), name: "Engineer".into() },
    }
}

fn prospect_id() -> Uuid {
    Uuid::parse_str("0192f0c1-7a3b-7cde-8f01-23456789abcd").expect("valid uuid")
}

fn at(hour: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, hour, 0, 0).single().expect("valid time")
}

fn check<E: Event + schemars::JsonSchema + std::fmt::Debug + PartialEq>(name: &str, example: &E) {
    let schema = schemars::schema_for!(E);
    let schema = serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n";
    assert_matches_file(&format!("schemas/{}.json", E::TYPE), &schema);

    let json = serde_json::to_string(example).expect("event serialises") + "\n";
    assert_matches_file(&format!("tests/golden/{name}.json"), &json);

    let back: E = serde_json::from_str(&json).expect("golden JSON deserialises");
    assert_eq!(&back, example, "round trip through the golden JSON");
}

fn consent(client: Option<ClientContext>) -> Consent {
    Consent::Recorded(ConsentRecord { notice_version: "sha256:5d41402abc4b2a76".into(), agreed_at: at(10), client })
}

#[test]
fn prospect_signed_up_matches_schema_and_golden_json() {
    let signed_up =
        |consent| ProspectSignedUp { prospect_id: prospect_id(), details: details(), signed_up_at: at(10), consent };
    check("prospect-signed-up", &signed_up(consent(None)));
    check(
        "prospect-signed-up-client-recorded",
        &signed_up(consent(Some(ClientContext {
            client_address: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0".into()),
        }))),
    );
    check("prospect-signed-up-consent-not-recorded", &signed_up(Consent::NotRecorded));
}

#[test]
fn prospect_signed_up_v1_matches_schema_and_golden_json_and_reads_as_v2() {
    let v1 = ProspectSignedUpV1 { prospect_id: prospect_id(), details: details(), signed_up_at: at(10) };
    check("prospect-signed-up-v1", &v1);
    // The golden v1 payload, as the stream holds it, read the way handlers
    // read it: the current version, consent not recorded, nothing else lost.
    let golden = std::fs::read(crate_file("tests/golden/prospect-signed-up-v1.json")).expect("golden v1");
    let read = ProspectEvent::decode(ProspectSignedUpV1::TYPE, &golden).expect("v1 is read");
    let expected = ProspectSignedUp {
        prospect_id: prospect_id(),
        details: details(),
        signed_up_at: at(10),
        consent: Consent::NotRecorded,
    };
    assert_eq!(read, ProspectEvent::SignedUp(expected.clone()));
    assert_eq!(ProspectSignedUp::from(v1), expected, "the upcaster");
}

/// Every older type an event lists is read by its `upcast`, has its schema
/// served, and is in the lifecycle set's list: the steps of adding a version
/// that no compiler checks.
#[test]
fn every_older_version_listed_is_read_and_served() {
    let golden = std::fs::read(crate_file("tests/golden/prospect-signed-up-v1.json")).expect("golden v1");
    let listed: Vec<&str> = [
        ProspectSignedUp::OLDER_TYPES,
        ProspectUpdated::OLDER_TYPES,
        ProspectDeleted::OLDER_TYPES,
        ProspectConfirmed::OLDER_TYPES,
        ProspectEmailChangeRequested::OLDER_TYPES,
        ManageLinkRequested::OLDER_TYPES,
    ]
    .concat();
    assert_eq!(listed, ProspectEvent::OLDER_TYPES, "ProspectEvent::OLDER_TYPES lists every event's");
    for older in ProspectSignedUp::OLDER_TYPES {
        assert!(matches!(ProspectSignedUp::upcast(older, &golden), Some(Ok(_))), "{older} is upcast");
        assert!(messages::schemas::of(older).is_some(), "{older}'s schema is served");
    }
}

#[test]
fn a_consent_says_what_it_holds_and_nothing_else() {
    let with = |consent: &str| {
        format!(
            r#"{{"prospectId":"0192f0c1-7a3b-7cde-8f01-23456789abcd","firstName":"Ada","lastName":"Lovelace",
            "email":"ada@example.com","country":{{"code":"GB","name":"United Kingdom"}},
            "role":{{"code":"EN","name":"Engineer"}},"signedUpAt":"2026-11-21T10:00:00Z","consent":{consent}}}"#
        )
    };
    for refused in [
        r#"{"recorded":true}"#,
        r#"{"recorded":true,"noticeVersion":"sha256:5d41402abc4b2a76"}"#,
        r#"{"recorded":false,"noticeVersion":"sha256:5d41402abc4b2a76"}"#,
        r#"{"recorded":false,"clientAddress":"203.0.113.7"}"#,
        r#"{"noticeVersion":"sha256:5d41402abc4b2a76","agreedAt":"2026-11-21T10:00:00Z"}"#,
    ] {
        let error = serde_json::from_str::<ProspectSignedUp>(&with(refused)).expect_err(refused);
        assert!(error.to_string().contains("consent") || error.to_string().contains("recorded"), "{refused}: {error}");
    }
    let read: ProspectSignedUp = serde_json::from_str(&with(r#"{"recorded":false}"#)).expect("not recorded");
    assert_eq!(read.consent, Consent::NotRecorded);
}

#[test]
fn prospect_updated_matches_schema_and_golden_json() {
    let mut details = details();
    details.company_name = None;
    check("prospect-updated", &ProspectUpdated { prospect_id: prospect_id(), details, updated_at: at(11) });
}

#[test]
fn prospect_deleted_matches_schema_and_golden_json() {
    check("prospect-deleted", &ProspectDeleted { prospect_id: prospect_id(), deleted_at: at(12), disowned: false });
    // "It wasn't me": the optional field a v1 consumer may ignore.
    check(
        "prospect-deleted-disowned",
        &ProspectDeleted { prospect_id: prospect_id(), deleted_at: at(12), disowned: true },
    );
}

#[test]
fn prospect_confirmed_matches_schema_and_golden_json() {
    check(
        "prospect-confirmed",
        &ProspectConfirmed { prospect_id: prospect_id(), confirmed_at: at(13), client: Default::default() },
    );
    // Where the confirming request came from, when the operator records it:
    // optional fields a reader of the older shape may ignore.
    let client = ClientContext {
        client_address: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
    };
    check(
        "prospect-confirmed-client-recorded",
        &ProspectConfirmed { prospect_id: prospect_id(), confirmed_at: at(13), client },
    );
}

#[test]
fn prospect_email_change_requested_matches_schema_and_golden_json() {
    let mut details = details();
    details.email = "ada.lovelace@example.org".into();
    check(
        "prospect-email-change-requested",
        &ProspectEmailChangeRequested {
            prospect_id: prospect_id(),
            details,
            previous_email: "ada@example.com".into(),
            requested_at: at(14),
        },
    );
}

#[test]
fn manage_link_requested_matches_schema_and_golden_json() {
    check(
        "manage-link-requested",
        &ManageLinkRequested {
            prospect_id: prospect_id(),
            email: "ada@example.com".into(),
            requested_at: at(15),
            by_owner: false,
        },
    );
}

#[test]
fn subjects_are_under_the_stream_and_types_are_versioned() {
    let all = [
        (ProspectSignedUp::KIND, ProspectSignedUp::SUBJECTS, ProspectSignedUp::TYPE),
        (ProspectUpdated::KIND, ProspectUpdated::SUBJECTS, ProspectUpdated::TYPE),
        (ProspectDeleted::KIND, ProspectDeleted::SUBJECTS, ProspectDeleted::TYPE),
        (ProspectConfirmed::KIND, ProspectConfirmed::SUBJECTS, ProspectConfirmed::TYPE),
        (
            ProspectEmailChangeRequested::KIND,
            ProspectEmailChangeRequested::SUBJECTS,
            ProspectEmailChangeRequested::TYPE,
        ),
        (ManageLinkRequested::KIND, ManageLinkRequested::SUBJECTS, ManageLinkRequested::TYPE),
    ];
    let kinds: std::collections::BTreeSet<_> = all.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(kinds.len(), all.len(), "one kind per event");
    assert_eq!(kinds, messages::streams::KINDS.into_iter().collect(), "streams::KINDS lists every event");
    for (kind, subjects, ce_type) in all {
        assert_eq!(subjects, format!("events.prospect.*.{kind}"), "{kind}");
        assert!(!kind.contains('.') && !kind.is_empty(), "{kind}");
        let version = ce_type.strip_prefix(&format!("io.signup.prospect.{kind}.v")).expect(ce_type);
        assert!(version.parse::<u32>().is_ok_and(|v| v >= 1), "{ce_type}");
    }
    assert_eq!(ProspectSignedUp::TYPE, "io.signup.prospect.signedup.v2");
    assert_eq!(
        (ProspectSignedUpV1::KIND, ProspectSignedUpV1::SUBJECTS),
        (ProspectSignedUp::KIND, ProspectSignedUp::SUBJECTS)
    );
    assert_eq!(ProspectSignedUp::OLDER_TYPES, [ProspectSignedUpV1::TYPE]);
}

#[test]
fn each_event_is_published_on_its_prospects_own_subject() {
    let event = ProspectDeleted { prospect_id: prospect_id(), deleted_at: at(12), disowned: false };
    assert_eq!(Event::subject(&event), "events.prospect.0192f0c1-7a3b-7cde-8f01-23456789abcd.deleted");
    assert_eq!(messages::streams::prospect_of(&Event::subject(&event)), Some(prospect_id()));
}

#[test]
fn only_the_events_named_personal_hold_personal_data() {
    use messages::streams::PERSONAL_KINDS;
    let golden = std::fs::read_dir(crate_file("tests/golden")).expect("golden files");
    assert_eq!(
        golden.count(),
        11,
        "one golden file per event and version, one of the erasure's optional field, two of the consent's forms, \
         one of the confirmation's client"
    );
    for (kind, file) in [
        (ProspectSignedUp::KIND, "prospect-signed-up"),
        (ProspectSignedUp::KIND, "prospect-signed-up-v1"),
        (ProspectSignedUp::KIND, "prospect-signed-up-client-recorded"),
        (ProspectSignedUp::KIND, "prospect-signed-up-consent-not-recorded"),
        (ProspectUpdated::KIND, "prospect-updated"),
        (ProspectDeleted::KIND, "prospect-deleted"),
        (ProspectDeleted::KIND, "prospect-deleted-disowned"),
        (ProspectConfirmed::KIND, "prospect-confirmed"),
        (ProspectConfirmed::KIND, "prospect-confirmed-client-recorded"),
        (ProspectEmailChangeRequested::KIND, "prospect-email-change-requested"),
        (ManageLinkRequested::KIND, "manage-link-requested"),
    ] {
        let json = std::fs::read_to_string(crate_file(&format!("tests/golden/{file}.json"))).expect("golden");
        let personal = ["email", "firstName", "lastName", "companyName", "clientAddress", "userAgent"]
            .iter()
            .any(|f| json.contains(f));
        // A kind that can hold personal data is purged at an erasure, even
        // when one event of it holds none (a confirmation without a client).
        assert!(!personal || PERSONAL_KINDS.contains(&kind), "{kind} is not purged at an erasure: {json}");
        if kind != ProspectConfirmed::KIND {
            assert_eq!(personal, PERSONAL_KINDS.contains(&kind), "{kind}: {json}");
        }
    }
}

#[test]
fn unknown_fields_are_tolerated_for_forward_compatibility() {
    let json =
        r#"{"prospectId":"0192f0c1-7a3b-7cde-8f01-23456789abcd","deletedAt":"2026-11-21T12:00:00Z","reason":"asked"}"#;
    let event: ProspectDeleted = serde_json::from_str(json).expect("an added optional field is compatible");
    assert_eq!(event.prospect_id, prospect_id());
}

#[test]
fn a_missing_required_field_is_rejected() {
    let json = r#"{"prospectId":"0192f0c1-7a3b-7cde-8f01-23456789abcd","firstName":"Ada"}"#;
    let err = serde_json::from_str::<ProspectSignedUp>(json).expect_err("lastName and others are required");
    assert!(err.to_string().contains("missing field"), "{err}");
}

#[test]
fn the_asyncapi_document_matches_the_types() {
    let doc = serde_json::to_string_pretty(&messages::asyncapi::document()).expect("the document serialises") + "\n";
    assert_matches_file("asyncapi.json", &doc);
}
