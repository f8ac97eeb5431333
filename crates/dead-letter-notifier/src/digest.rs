//! The digest mail: a subject and a plain-text body describing the letters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use messages::dlq::DeadLetter;
use serde_json::Value;

/// Subject and body for these letters; the first `max_listed` are described
/// one by one, and all are counted by handler and reason.
pub fn compose(letters: &[&DeadLetter], max_listed: usize) -> (String, String) {
    let subject = format!("Signup: {} dead letter{}", letters.len(), if letters.len() == 1 { "" } else { "s" });
    let mut body = format!(
        "{} event(s) could not be applied and were moved to the dead-letter stream.\n\
         Nothing is lost: fix the cause, then replay them with `signup dlq replay --all`.\n\n",
        letters.len()
    );
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for letter in letters {
        *counts.entry((letter.consumer.clone(), letter.reason.clone())).or_default() += 1;
    }
    body.push_str("By handler and reason:\n");
    for ((consumer, reason), count) in &counts {
        let _ = writeln!(body, "  {count:>6}  {consumer}: {reason}");
    }
    body.push_str("\nLetters:\n");
    for letter in letters.iter().take(max_listed) {
        let _ = writeln!(
            body,
            "- event {} ({}), handler {}, {} deliveries, stream sequence {}\n  reason: {}\n  prospect: {}",
            letter.event_id,
            letter.ce_type,
            letter.consumer,
            letter.deliveries,
            letter.stream_sequence,
            letter.reason,
            prospect(&letter.payload),
        );
    }
    if letters.len() > max_listed {
        let _ = writeln!(body, "… and {} more (see `signup dlq list`).", letters.len() - max_listed);
    }
    (subject, body)
}

/// The prospect's details from an event payload, or why they cannot be read.
fn prospect(payload: &[u8]) -> String {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(payload) else {
        return format!("payload is not a JSON object ({} bytes)", payload.len());
    };
    let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let nested =
        |key: &str| event.get(key).and_then(|v| v.get("name")).and_then(Value::as_str).unwrap_or("").to_owned();
    format!(
        "{} {} <{}>, {}, {}, {} (id {})",
        text("firstName"),
        text("lastName"),
        text("email"),
        text("companyName"),
        nested("country"),
        nested("role"),
        text("prospectId"),
    )
}
