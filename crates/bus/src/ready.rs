//! Whether one part of a service is up: the consumer runner sets its flag
//! once its consumer exists; the runtime's `/readyz` reads every part's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One part of a service that must be up before it is ready (the database,
/// the durable consumer). Cloned into whatever sets it.
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    /// Marks the part up or down.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    /// Whether the part is up.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
