//! Sending mail over SMTP the way every Signup service that mails does:
//! STARTTLS or implicit TLS with the certificate checked (against the
//! system's roots, or one CA file), plain SMTP only to a relay on this
//! machine; and what a failure means for the event that caused the mail.
//!
//! Every mail carries what receivers require before they take it (Gmail
//! refuses mail without a `Message-ID`): a `Message-ID` on the sender's own
//! domain, a `Date`, and `Auto-Submitted: auto-generated` (RFC 3834: no
//! auto-replies to it); it is DKIM-signed when a key is configured, for
//! operators who send without a relay that signs.
//!
//! # Layout
//! - [`SmtpSettings`], [`SmtpTls`], [`DkimSettings`]: a service's `[….smtp]` section.
//! - [`transport()`]: the [`Transport`] those settings describe: up to
//!   `pool_size` connections, with Nagle's algorithm off (why: the
//!   `transport` module).
//! - [`Sender`]: the headers every mail carries, and its DKIM signature.
//! - [`classify`]: a failed send as the consumer runner's `HandlerError`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bus::HandlerError;
use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey, dkim_sign,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

mod transport;

use transport::Protection;
pub use transport::{SendError, Transport};

/// A service's SMTP server (`[mailer.smtp]`, `[notifier.smtp]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SmtpSettings {
    /// Host name of the server (checked against its certificate).
    pub host: String,
    /// Port: 587 for STARTTLS, 465 for implicit TLS, 25 or a local relay's
    /// for plain SMTP.
    pub port: u16,
    /// `starttls` (upgrade, required), `tls` (implicit TLS) or `none` (plain:
    /// only to a relay on this machine).
    pub tls: SmtpTls,
    /// User name, when the server wants one (with `password`).
    pub user: Option<String>,
    /// Password (`SIGNUP__<SECTION>__SMTP__PASSWORD`, or a file with
    /// `SIGNUP_FILE__<SECTION>__SMTP__PASSWORD`).
    pub password: Option<SecretString>,
    /// PEM file of the certificate authorities to trust instead of the
    /// system's roots (a private relay).
    pub ca_file: Option<PathBuf>,
    /// How long one SMTP exchange may take, in milliseconds: opening a
    /// connection (TCP, TLS, greeting, EHLO, AUTH), and then each mail's
    /// whole transaction. A server that keeps a mail and answers later than
    /// this gets it again (with the same `Message-ID`).
    pub timeout_ms: u64,
    /// Connections kept open to the server.
    pub pool_size: u32,
    /// `[….smtp.dkim]`: sign every mail with this key (off unless set).
    pub dkim: Option<DkimSettings>,
}

/// DKIM signing (RFC 6376) of every mail, for an operator who sends without
/// a relay that signs. Publish the public key as the TXT record
/// `<selector>._domainkey.<domain>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The selector (the DNS record's first label).
    pub selector: String,
    /// The signing domain; the sender's domain unless set.
    pub domain: Option<String>,
    /// The private key: a PKCS#1 PEM file for `rsa`, or a file holding the
    /// base64 of the 32-byte seed for `ed25519`.
    pub private_key_file: PathBuf,
    /// `rsa` (the default) or `ed25519`.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
}

/// The DKIM key's algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// RSA-SHA256.
    #[default]
    Rsa,
    /// Ed25519-SHA256 (RFC 8463).
    Ed25519,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 587,
            tls: SmtpTls::Starttls,
            user: None,
            password: None,
            ca_file: None,
            timeout_ms: 10_000,
            pool_size: 4,
            dkim: None,
        }
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP; refused unless the server is on this machine.
    None,
    /// Plain connection upgraded with `STARTTLS`, which the server must offer.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// Whether `host` is this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Builds the transport from the settings of `section` (e.g.
/// `"mailer.smtp"`, which every error names). Certificates are always
/// checked: against the system's roots, or only against `ca_file` when it is
/// set.
pub fn transport(settings: &SmtpSettings, section: &str) -> anyhow::Result<Transport> {
    let host = settings.host.as_str();
    let protection = match settings.tls {
        SmtpTls::None => {
            anyhow::ensure!(
                is_loopback(host),
                "{section}.tls = \"none\" sends mail in clear text, so it is only allowed to a relay on this \
                 machine (localhost, 127.0.0.1, ::1), not to {host}; use \"starttls\" or \"tls\""
            );
            Protection::Plain
        }
        SmtpTls::Starttls => Protection::StartTls(tls_parameters(settings, section)?),
        SmtpTls::Tls => Protection::Implicit(tls_parameters(settings, section)?),
    };
    // Empty is not set: compose passes an empty deploy/.env value through as "".
    let user = settings.user.as_deref().filter(|user| !user.is_empty());
    let password = settings.password.as_ref().map(|p| p.expose_secret()).filter(|password| !password.is_empty());
    let credentials = match (user, password) {
        (Some(user), Some(password)) => Some(Credentials::new(user.to_owned(), password.to_owned())),
        (None, None) => None,
        _ => anyhow::bail!("{section}.user and {section}.password go together"),
    };
    let server = transport::Server {
        host: host.to_owned(),
        port: settings.port,
        protection,
        credentials,
        timeout: Duration::from_millis(settings.timeout_ms),
    };
    Ok(Transport::new(server, usize::try_from(settings.pool_size).unwrap_or(1).max(1)))
}

/// Writes every mail a service sends with what receivers require, and signs
/// it when DKIM is configured.
pub struct Sender {
    from: Mailbox,
    domain: String,
    dkim: Option<DkimConfig>,
}

impl Sender {
    /// A sender of mail from `from`, as `settings` (of `section`, for errors)
    /// say to sign it.
    pub fn new(from: Mailbox, settings: &SmtpSettings, section: &str) -> anyhow::Result<Self> {
        let domain = from.email.domain().to_owned();
        let dkim = match &settings.dkim {
            None => None,
            Some(dkim) => {
                let key = std::fs::read_to_string(&dkim.private_key_file).with_context(|| {
                    format!("reading {section}.dkim.private_key_file {}", dkim.private_key_file.display())
                })?;
                let algorithm = match dkim.algorithm {
                    DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
                    DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
                };
                let key = DkimSigningKey::new(key.trim(), algorithm).map_err(|e| {
                    anyhow::anyhow!(
                        "{section}.dkim.private_key_file {} is not a {:?} key: {e}",
                        dkim.private_key_file.display(),
                        dkim.algorithm
                    )
                })?;
                let signing_domain = dkim.domain.clone().unwrap_or_else(|| domain.clone());
                // relaxed/relaxed: a relay that refolds a header or trims
                // trailing spaces does not break the signature (and the
                // library's own folding of the signature header would break
                // simple header canonicalization). The headers a receiver
                // shows, and those that make a mail a different one (not
                // Content-Type: a multipart body writes its own, after the
                // signature is made). The last four are never set: signing
                // them as absent (RFC 6376 §5.4.2) means a copy with one
                // added, say a Reply-To, fails the check.
                let signed = [
                    "From",
                    "To",
                    "Subject",
                    "Date",
                    "Message-ID",
                    "Auto-Submitted",
                    "Reply-To",
                    "Cc",
                    "Sender",
                    "List-Unsubscribe",
                ]
                .map(HeaderName::new_from_ascii_str)
                .to_vec();
                let canonicalization = DkimCanonicalization {
                    header: DkimCanonicalizationType::Relaxed,
                    body: DkimCanonicalizationType::Relaxed,
                };
                Some(DkimConfig::new(dkim.selector.clone(), signing_domain, key, signed, canonicalization))
            }
        };
        Ok(Self { from, domain, dkim })
    }

    /// A message from the sender with a new `Message-ID` on its domain, the
    /// `Date` of now and `Auto-Submitted: auto-generated`: add the recipient,
    /// subject and body, then [`Sender::seal`] it.
    pub fn message(&self) -> MessageBuilder {
        self.message_with_id(&uuid::Uuid::new_v4().simple().to_string())
    }

    /// The same with the `Message-ID` `<id@domain>`: a mail sent again (a
    /// retry after a crash) keeps the id of its first copy, so that the
    /// receiver keeps one. `id` must be unique to the mail and free of `@`,
    /// `<` and `>`.
    pub fn message_with_id(&self, id: &str) -> MessageBuilder {
        Message::builder()
            .from(self.from.clone())
            .message_id(Some(format!("<{id}@{}>", self.domain)))
            .date_now()
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".to_owned()))
    }

    /// Signs `message` when DKIM is configured.
    pub fn seal(&self, mut message: Message) -> Message {
        if let Some(dkim) = &self.dkim {
            dkim_sign(&mut message, dkim);
        }
        message
    }
}

fn tls_parameters(settings: &SmtpSettings, section: &str) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {section}.ca_file {}", path.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("{section}.ca_file {} is not a PEM certificate", path.display()))?;
        builder = builder.certificate_store(CertificateStore::None).add_root_certificate(certificate);
    }
    builder.build_rustls().with_context(|| format!("setting up TLS for {section}"))
}

/// What a failed send means for its event:
/// - the server refused the recipient or the mail for good (5xx, such as
///   550 "no such mailbox"): [`HandlerError::Permanent`], dead-lettered with
///   the server's answer;
/// - it cannot take this mail as written (an address with non-ASCII
///   characters, and the server offers no SMTPUTF8): also
///   [`HandlerError::Permanent`];
/// - it refused for now (4xx): [`HandlerError::Transient`], retried later;
/// - it refused our credentials (530, 534, 535, 538), or could not be
///   reached, or the TLS handshake or certificate check failed:
///   [`HandlerError::Unavailable`] — nothing is wrong with the mail, so the
///   runner holds it (without using up deliveries) until the server is back
///   or fixed.
///
/// A refusal keeps the server's reply code and enhanced status code (`550
/// 5.1.1`) and nothing else of its answer: servers quote the recipient's
/// address there, and the reason outlives an erasure in dead letters and
/// logs.
pub fn classify(error: SendError) -> HandlerError {
    let error = match error {
        SendError::Smtp(error) => error,
        unreachable @ (SendError::Connect(_) | SendError::Timeout(_)) => {
            return HandlerError::Unavailable(anyhow::Error::new(unreachable).context("sending the mail"));
        }
    };
    let code = error.status().map(u16::from);
    let unsendable = error.is_client() && format!("{error:#}").contains("non-ascii");
    let error = match error.status() {
        Some(reply) => {
            let enhanced = std::error::Error::source(&error)
                .and_then(|answer| enhanced_status(&answer.to_string()).map(|status| format!(" {status}")))
                .unwrap_or_default();
            let severity = if error.is_permanent() { "permanent" } else { "transient" };
            anyhow::anyhow!(
                "{severity} error ({reply}{enhanced}) from the SMTP server; the rest of its answer is not kept"
            )
        }
        None => anyhow::Error::new(error),
    }
    .context("sending the mail");
    match code {
        // The server cannot take this very mail (an address with non-ASCII
        // characters, and no SMTPUTF8 offered): lettre says so before
        // sending anything, as a client error. Holding every mail for it
        // would stop the mail of everyone else.
        None if unsendable => HandlerError::Permanent(error),
        Some(530 | 534 | 535 | 538) => HandlerError::Unavailable(error),
        Some(500..=599) => HandlerError::Permanent(error),
        Some(400..=499) => HandlerError::Transient(error),
        _ => HandlerError::Unavailable(error),
    }
}

/// The enhanced status code (RFC 3463, `class.subject.detail`) an SMTP
/// answer starts with, if it does.
fn enhanced_status(answer: &str) -> Option<&str> {
    let first = answer.split_whitespace().next()?;
    let mut parts = first.split('.');
    let class = parts.next()?;
    let well_formed = matches!(class, "2" | "4" | "5")
        && parts.clone().count() == 2
        && parts.all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_codes_of_an_answer_are_kept() {
        assert_eq!(enhanced_status("5.1.1 <ada@example.com>: Recipient address rejected"), Some("5.1.1"));
        assert_eq!(enhanced_status("4.7.1 try later"), Some("4.7.1"));
        for other in ["<ada@example.com>: rejected", "", "5.1 x", "5.1.1234 x", "9.1.1 x", "a.b.c"] {
            assert_eq!(enhanced_status(other), None, "{other:?}");
        }
    }

    // The pooled transport starts its clean-up task on the runtime.
    #[tokio::test]
    async fn plain_smtp_only_to_this_machine() {
        for host in ["127.0.0.1", "::1", "localhost"] {
            let settings = SmtpSettings { host: host.into(), tls: SmtpTls::None, ..SmtpSettings::default() };
            assert!(transport(&settings, "test.smtp").is_ok(), "{host}");
        }
        let remote = SmtpSettings { host: "smtp.example.com".into(), tls: SmtpTls::None, ..SmtpSettings::default() };
        let error = transport(&remote, "test.smtp").expect_err("refused").to_string();
        assert!(error.contains("test.smtp.tls") && error.contains("smtp.example.com"), "{error}");
        let secure = SmtpSettings { host: "smtp.example.com".into(), ..SmtpSettings::default() };
        assert!(transport(&secure, "test.smtp").is_ok(), "STARTTLS to a remote server is fine");
        let missing = SmtpSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..SmtpSettings::default() };
        let error = transport(&missing, "test.smtp").expect_err("refused").to_string();
        assert!(error.contains("test.smtp.ca_file"), "{error}");
    }
}
