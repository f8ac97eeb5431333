//! Traces across every hop: the W3C `traceparent` a sign-up carries from the
//! visitor's request, through its events, to every handler that applies
//! them.
//!
//! Every HTTP request gets a trace context: the caller's, continued, or a
//! new one ([`TraceParent::for_request`]); the events it publishes carry it
//! in their `traceparent` header, so a handler's logs name the sign-up's
//! `trace_id` whether or not traces are exported. When they are
//! (`runtime::telemetry`), the spans are OpenTelemetry spans: the request's
//! (`server`), the publish's (`producer`, a child of the request's, whose
//! context is what the event carries), the fetched batch's (`consumer`,
//! linked to each of its events' contexts) and each event's application
//! (`consumer`, a child of the publish, so the trace shows every handler
//! under the sign-up). They carry the messaging attributes of the
//! OpenTelemetry semantic conventions (`messaging.system` = `nats`, the
//! destination, the message id = `ce-id`, the consumer group).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans are exported: the service runtime's telemetry says so
/// once it has installed its OpenTelemetry layer ([`set_exporting`]). Until
/// then, and without one, no span context is made or carried.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Records that spans are exported (the runtime's telemetry, once).
pub fn set_exporting() {
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `messaging.system` for every messaging span.
pub const MESSAGING_SYSTEM: &str = "nats";

/// The destination template of the event subjects (the semantic
/// conventions want a low-cardinality name, not one per prospect).
pub const EVENT_DESTINATION_TEMPLATE: &str = "events.prospect.{prospect_id}.{kind}";

/// The span name of `operation` (`send`, `process`) on events of `kind`:
/// the destination template, not the subject with its prospect id.
pub fn event_span_name(operation: &str, kind: &str) -> String {
    format!("{operation} {}", EVENT_DESTINATION_TEMPLATE.replace("{kind}", kind))
}

/// A W3C trace context: which trace, which span is the parent, sampled or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(SpanContext);

impl TraceParent {
    /// A `traceparent` header value, when it is a valid one.
    pub fn parse(header: &str) -> Option<Self> {
        let carrier = HashMap::from([("traceparent".to_owned(), header.trim().to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let span = context.span().span_context().clone();
        span.is_valid().then_some(Self(span))
    }

    /// A new trace (random ids, sampled).
    pub fn new_root() -> Self {
        Self::in_trace(TraceId::from(fastrand::u128(1..)), TraceFlags::SAMPLED)
    }

    fn in_trace(trace_id: TraceId, flags: TraceFlags) -> Self {
        Self(SpanContext::new(trace_id, SpanId::from(fastrand::u64(1..)), flags, true, TraceState::NONE))
    }

    /// The same trace, under a new span id.
    #[must_use]
    pub fn child(&self) -> Self {
        Self::in_trace(self.0.trace_id(), self.0.trace_flags())
    }

    /// The 32 hex digits that name the trace (what log lines carry).
    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.0.trace_id(), self.0.span_id(), self.0.trace_flags().to_u8())
    }

    /// The trace context of `span` as exported, when traces are.
    pub fn of(span: &Span) -> Option<Self> {
        if !exporting() {
            return None;
        }
        let context = span.context();
        let span = context.span().span_context().clone();
        span.is_valid().then_some(Self(span))
    }

    /// Makes `span` (an HTTP request's, with an empty `trace_id` field) part
    /// of the caller's trace (`incoming`), or of a new one, and returns the
    /// context its events carry: with traces exported, the span's own; if
    /// not, a child of the caller's context or a new root.
    pub fn for_request(span: &Span, incoming: Option<Self>) -> Self {
        if exporting() {
            if let Some(parent) = &incoming {
                parent.adopt(span);
            }
            if let Some(own) = Self::of(span) {
                span.record("trace_id", own.trace_id());
                return own;
            }
        }
        let own = incoming.map_or_else(Self::new_root, |parent| parent.child());
        span.record("trace_id", own.trace_id());
        own
    }

    /// Makes `span` a child of this context (when traces are exported) and
    /// records the trace id in its `trace_id` field, for the logs.
    pub fn adopt(&self, span: &Span) {
        if exporting() {
            let parent = opentelemetry::Context::new().with_remote_span_context(self.0.clone());
            if let Err(error) = span.set_parent(parent) {
                tracing::debug!(%error, "could not continue the trace");
            }
        }
        span.record("trace_id", self.trace_id());
    }

    /// Renames `span` once it is known what it did (an HTTP request's route
    /// is known only after routing), when traces are exported.
    pub fn rename(span: &Span, name: String) {
        if exporting() {
            span.context().span().update_name(name);
        }
    }

    /// Links `span` to this context (when traces are exported): a batch's
    /// span to each of its events.
    pub fn link_from(&self, span: &Span) {
        if exporting() {
            span.add_link(self.0.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_written_as_w3c_says() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parent = TraceParent::parse(header).expect("valid");
        assert_eq!(parent.header(), header);
        assert_eq!(parent.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.header(), header, "a new span id");
        assert!(child.header().ends_with("-01"), "sampled stays sampled");
        for invalid in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid}");
        }
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&root.header()), Some(root.clone()));
        assert_ne!(root.trace_id(), TraceParent::new_root().trace_id());
    }
}
