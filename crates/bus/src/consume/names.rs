//! The consumer runner's metric names, each labelled with the `consumer`:
//! one place for the sites that count and for the runner's start (`zero_metrics`),
//! which starts the counters at zero.

/// Events fetched.
pub const RECEIVED: &str = "signup_handler_events_received_total";
/// Events applied and acked.
pub const APPLIED: &str = "signup_handler_events_applied_total";
/// Events nak'ed to be tried again.
pub const RETRIED: &str = "signup_handler_events_retried_total";
/// Events held while a dependency was away.
pub const DEFERRED: &str = "signup_handler_events_deferred_total";
/// Events given up on, into the dead-letter stream.
pub const DEAD_LETTERED: &str = "signup_handler_events_dead_lettered_total";
/// Events whose subject and type disagree (refused as forged).
pub const FORGED: &str = "signup_handler_events_forged_total";
/// Dead letters dropped because the handler's share of the stream was full.
pub const DEAD_LETTER_CAP_REACHED: &str = "signup_handler_dead_letter_cap_reached_total";
/// 1 while the runner has paused the durable consumer.
pub const PAUSED: &str = "signup_consumer_paused";
/// Events not yet delivered (the consumer's lag).
pub const PENDING: &str = "signup_handler_pending";
/// Events per batch (histogram).
pub const BATCH_SIZE: &str = "signup_handler_batch_size";
/// Time to apply a batch (histogram).
pub const APPLY_SECONDS: &str = "signup_handler_apply_seconds";
/// From the event's time to applied and acked (histogram).
pub const CRITICAL_TIME: &str = "signup_handler_critical_time_seconds";

/// The counters, which start at zero.
pub const COUNTERS: [&str; 7] = [RECEIVED, APPLIED, RETRIED, DEFERRED, DEAD_LETTERED, FORGED, DEAD_LETTER_CAP_REACHED];
