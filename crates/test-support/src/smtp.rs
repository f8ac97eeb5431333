//! A private SMTP server per test (aiosmtpd, with the project's handler).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::{free_port, test_python, wait_for_port};

/// A real SMTP server (Python's aiosmtpd) that stores what it receives in a
/// maildir. `SIGNUP_TEST_PYTHON` names a Python with aiosmtpd installed;
/// default the project's own (`.local/venv/bin/python`, which `scripts/test`
/// prepares), else `python3`. It refuses some
/// recipients as real servers do (`python/signup_smtp.py`): `refused…@` with
/// a permanent 550, `later-N…@` with a transient 451 on its first N tries.
/// A slow one ([`SmtpServer::start_slow`]) answers each mail after a delay,
/// and every one tells how many mails it held at once
/// ([`SmtpServer::peak_transactions`]).
pub struct SmtpServer {
    port: u16,
    maildir: tempfile::TempDir,
    child: Option<Child>,
}

/// How an [`SmtpServer`] takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP.
    Plain,
    /// Plain first, then TLS after `STARTTLS` (required before mail).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

impl SmtpServer {
    /// Starts a plain server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port()?).await
    }

    /// Starts a plain server on `port`.
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::launch(port, SmtpTls::Plain, Duration::ZERO).await
    }

    /// Starts a plain server on a free port that answers each mail `delay`
    /// after its data arrived: a slow relay.
    pub async fn start_slow(delay: Duration) -> anyhow::Result<Self> {
        Self::launch(free_port()?, SmtpTls::Plain, delay).await
    }

    /// Starts a server on a free port speaking `tls`, with a self-signed
    /// certificate for `localhost` and `127.0.0.1` ([`SmtpServer::certificate`]).
    pub async fn start_tls(tls: SmtpTls) -> anyhow::Result<Self> {
        Self::launch(free_port()?, tls, Duration::ZERO).await
    }

    async fn launch(port: u16, tls: SmtpTls, delay: Duration) -> anyhow::Result<Self> {
        // (The Python with aiosmtpd: `test_python`.)
        let maildir = tempfile::tempdir()?;
        let mut command = Command::new(test_python());
        command
            .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
            .env("SIGNUP_SMTP_DELAY_MS", delay.as_millis().to_string())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "signup_smtp.Maildir"]);
        if tls != SmtpTls::Plain {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
            let (cert, key) = (maildir.path().join("cert.pem"), maildir.path().join("key.pem"));
            std::fs::write(&cert, certified.cert.pem())?;
            std::fs::write(&key, certified.signing_key.serialize_pem())?;
            let (cert_flag, key_flag) =
                if tls == SmtpTls::StartTls { ("--tlscert", "--tlskey") } else { ("--smtpscert", "--smtpskey") };
            command.arg(cert_flag).arg(&cert).arg(key_flag).arg(&key);
        }
        let child = command
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting aiosmtpd (pip install aiosmtpd, or set SIGNUP_TEST_PYTHON)")?;
        let server = Self { port, maildir, child: Some(child) };
        wait_for_port(port, Duration::from_secs(15)).await?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The PEM file of its certificate (a TLS server's only), to trust it.
    pub fn certificate(&self) -> PathBuf {
        self.maildir.path().join("cert.pem")
    }

    /// The most mails it held at once so far (their data received, not yet
    /// answered): 1 when every client sent one mail at a time.
    pub fn peak_transactions(&self) -> usize {
        std::fs::read_to_string(self.maildir.path().join("mail.peak"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many messages it received so far (without reading them or the
    /// maildir: cheap enough to poll often).
    pub fn received(&self) -> usize {
        std::fs::read_to_string(self.maildir.path().join("mail.count"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let mut files: Vec<_> =
            std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
    }

    /// The raw messages received so far for `address` (a `To:` header that
    /// names it, in any case).
    pub fn messages_to(&self, address: &str) -> Vec<String> {
        let address = address.to_lowercase();
        self.messages()
            .into_iter()
            .filter(|m| {
                // The header as a reader sees it: unfolded, decoded.
                mailparse::parse_headers(m.as_bytes()).is_ok_and(|(headers, _)| {
                    headers
                        .iter()
                        .filter(|h| h.get_key_ref().eq_ignore_ascii_case("to"))
                        .any(|h| h.get_value().to_lowercase().contains(&address))
                })
            })
            .collect()
    }

    /// Stops the server.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}
