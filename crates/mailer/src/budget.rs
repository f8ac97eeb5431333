//! The budget of mails to addresses nobody has confirmed: at most
//! `per_domain` per recipient domain and `total` in all per window (an hour
//! by default), whoever asks for them, so that no flood of sign-ups — from
//! one address, a botnet, or an IPv6 /48 — can make the system mail more
//! strangers than that.
//!
//! Each mail over it is given the time it may go, in arrival order, spread
//! evenly over the window (a generic cell rate: each mail reserves the next
//! slot of its domain, and at that slot the next one of the total, in the
//! mailer's key-value bucket, shared by every instance;
//! [`crate::records::Records::reserve`]). It waits until then
//! ([`bus::HandlerError::Deferred`]), never dropped. Since the total is
//! taken only at a mail's turn of its domain, a flood at one domain uses at
//! most its domain's share of the total: the mails to other domains go on
//! meanwhile. What waits is shown by `signup_mails_waiting_for_budget` and
//! `signup_mail_budget_wait_seconds`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

/// `[mailer.budget]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BudgetSettings {
    /// Most mails to unconfirmed addresses of one domain per window; 0: no
    /// limit per domain.
    pub per_domain: u32,
    /// Most mails to unconfirmed addresses in all per window; 0: no limit.
    pub total: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self { per_domain: 200, total: 1_000, window_secs: 3_600 }
    }
}

impl BudgetSettings {
    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.max(1))
    }
}

/// The recipient domain of `address`, as budgets count it: what follows the
/// last `@`, lower-cased.
pub fn domain_of(address: &str) -> String {
    address.trim().rsplit_once('@').map(|(_, domain)| domain).unwrap_or_default().to_lowercase()
}

/// The mails this instance has seen waiting for the budget, by sent-record
/// key, with the time each may go (unix milliseconds): the gauges.
#[derive(Default)]
pub struct Waiting {
    due: Mutex<HashMap<String, i64>>,
}

impl Waiting {
    /// The mail `key` waits until `due`.
    pub fn until(&self, key: &str, due: i64, now: i64) {
        let mut waiting = self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.insert(key.to_owned(), due);
        Self::show(&mut waiting, now);
    }

    /// The mail `key` waits no more (sent, or settled otherwise).
    pub fn over(&self, key: &str, now: i64) {
        let mut waiting = self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting.remove(key).is_some() {
            Self::show(&mut waiting, now);
        }
    }

    /// Forgets the mails whose time has come, and shows the rest.
    pub fn refresh(&self, now: i64) {
        Self::show(&mut self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner), now);
    }

    /// Keeps the gauges current (the time of mails held back passes), until
    /// `shutdown`.
    pub async fn keep_shown(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => self.refresh(chrono::Utc::now().timestamp_millis()),
            }
        }
    }

    /// How many mails wait now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.due.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    fn show(waiting: &mut HashMap<String, i64>, now: i64) {
        waiting.retain(|_, due| *due > now);
        let longest = waiting.values().max().map_or(0, |due| due - now);
        bus::metrics::gauge!("signup_mails_waiting_for_budget").set(waiting.len() as f64);
        bus::metrics::gauge!("signup_mail_budget_wait_seconds").set(longest as f64 / 1_000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_what_follows_the_last_at() {
        assert_eq!(domain_of(" Ada@Example.COM "), "example.com");
        assert_eq!(domain_of("\"a@b\"@mail.example"), "mail.example");
        assert_eq!(domain_of("nobody"), "");
    }

    #[test]
    fn waiting_mails_are_counted_until_their_time() {
        let waiting = Waiting::default();
        waiting.until("a", 2_000, 1_000);
        waiting.until("b", 3_000, 1_000);
        waiting.until("a", 2_000, 1_000);
        assert_eq!(waiting.count(), 2, "one entry per mail");
        waiting.over("b", 1_500);
        assert_eq!(waiting.count(), 1);
        waiting.refresh(2_000);
        assert_eq!(waiting.count(), 0, "its time came");
    }
}
