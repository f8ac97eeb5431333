//! Each event's JSON Schema by its `ce-type`: the files checked in under
//! `schemas/` (a contract test keeps them equal to the types), as signup-web
//! serves them at `/api/schemas/<ce-type>.json`, the events' `ce-dataschema`.

use crate::ProspectEvent;

/// The JSON Schema of events of `ce_type`, or `None` for a type the
/// contract does not have.
pub fn of(ce_type: &str) -> Option<&'static str> {
    ALL.iter().find(|(t, _)| *t == ce_type).map(|(_, schema)| *schema)
}

/// Every event type with its schema: the current versions in
/// [`ProspectEvent::TYPES`] order, then the older ones still read
/// ([`ProspectEvent::OLDER_TYPES`]).
pub const ALL: [(&str, &str); 7] = [
    (ProspectEvent::TYPES[0], include_str!("../schemas/io.signup.prospect.signedup.v2.json")),
    (ProspectEvent::TYPES[1], include_str!("../schemas/io.signup.prospect.updated.v1.json")),
    (ProspectEvent::TYPES[2], include_str!("../schemas/io.signup.prospect.deleted.v1.json")),
    (ProspectEvent::TYPES[3], include_str!("../schemas/io.signup.prospect.confirmed.v1.json")),
    (ProspectEvent::TYPES[4], include_str!("../schemas/io.signup.prospect.emailchange.v1.json")),
    (ProspectEvent::TYPES[5], include_str!("../schemas/io.signup.prospect.linkrequested.v1.json")),
    (ProspectEvent::OLDER_TYPES[0], include_str!("../schemas/io.signup.prospect.signedup.v1.json")),
];

#[cfg(test)]
mod tests {
    #[test]
    fn each_type_is_paired_with_its_own_schema() {
        let doc = crate::asyncapi::document();
        let messages = doc["components"]["messages"].as_object().expect("messages");
        for (ce_type, schema) in super::ALL {
            let schema: serde_json::Value = serde_json::from_str(schema).expect("a schema is JSON");
            let message = messages.values().find(|m| m["name"] == ce_type).expect("a message of the type");
            assert_eq!(schema["title"], message["title"], "the schema served for {ce_type} is its struct's");
        }
        assert_eq!(super::of(<crate::ProspectDeleted as crate::Event>::TYPE), Some(super::ALL[2].1));
        assert_eq!(super::of("io.signup.prospect.unknown.v1"), None);
        assert_eq!(super::of(<crate::ProspectSignedUpV1 as crate::Event>::TYPE), Some(super::ALL[6].1));
    }
}
