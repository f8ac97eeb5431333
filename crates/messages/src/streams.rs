//! Stream and subject names shared by publishers and consumers.

/// The JetStream stream holding every prospect event.
pub const PROSPECTS_STREAM: &str = "PROSPECTS";

/// The subjects captured by [`PROSPECTS_STREAM`].
pub const PROSPECTS_SUBJECTS: &str = "events.prospect.>";

/// The stream holding dead letters (events a handler could not apply).
pub const DLQ_STREAM: &str = "PROSPECTS_DLQ";

/// The subjects captured by [`DLQ_STREAM`].
pub const DLQ_SUBJECTS: &str = "dlq.prospect.>";
