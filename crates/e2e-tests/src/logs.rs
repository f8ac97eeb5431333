//! The logs of the services a test runs, to check what never reaches them:
//! link tokens, the analytics token, secrets. Services running inside the
//! test process log through one subscriber that writes into memory
//! ([`capture`], [`captured`]); services running as processes write into
//! files ([`crate::processes::logs`]).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

static CAPTURED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("log buffer poisoned"))?.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this test process (the services' own at `info`,
/// and the access logs) into memory. Called by [`crate::System`]; harmless to
/// call again.
pub fn capture() {
    CAPTURED.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(Arc::clone(&buffer));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

/// Everything logged in this process since [`capture`].
pub fn captured() -> String {
    CAPTURED.get().map(|b| String::from_utf8_lossy(&b.lock().expect("log buffer")).into_owned()).unwrap_or_default()
}

/// Fails when `logs` (which must not be empty: the check would prove
/// nothing) contains any of `secrets`.
pub fn assert_free_of(logs: &str, secrets: &[&str], what: &str) {
    assert!(!logs.trim().is_empty(), "no {what} were captured: the check would prove nothing");
    for secret in secrets {
        assert!(!secret.is_empty(), "an empty secret");
        if let Some(line) = logs.lines().find(|line| line.contains(secret)) {
            panic!("{what} hold a secret ({}…): {line}", &secret[..secret.len().min(8)]);
        }
    }
}
