//! TLS client configuration shared by the services that open TLS connections
//! of their own (Postgres in save-prospect, HTTPS in crm-webhook): rustls with
//! the ring provider, trusting either the system's roots or one CA file.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// A rustls client configuration that trusts the certificates in `ca_file`
/// (PEM) when given, otherwise the system's root certificates. `setting` names
/// the setting in errors (e.g. `database.ca_file`).
pub fn client_config(ca_file: Option<&Path>, setting: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in
                CertificateDer::pem_file_iter(path).with_context(|| format!("reading {setting} {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("parsing {setting}"))?)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(added > 0, "no system root certificates found; set {setting}");
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
