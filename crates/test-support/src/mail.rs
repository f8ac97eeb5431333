//! What a mail must carry for receivers to take it, checked in the raw
//! message a real SMTP server received.

use std::collections::BTreeSet;

/// Checks that `raw` carries a `Message-ID` on `domain` (RFC 5322's
/// `<dot-atom@dot-atom>`), a `Date` RFC 5322 can read, and
/// `Auto-Submitted: auto-generated` (RFC 3834); returns its `Message-ID`.
pub fn assert_acceptable(raw: &str, domain: &str) -> String {
    let mail = mailparse::parse_mail(raw.as_bytes()).expect("a mail");
    let header = |name: &str| {
        let values: Vec<String> =
            mail.headers.iter().filter(|h| h.get_key_ref().eq_ignore_ascii_case(name)).map(|h| h.get_value()).collect();
        assert!(values.len() <= 1, "one {name} header at most: {values:?}");
        values.into_iter().next()
    };
    let id = header("Message-ID").unwrap_or_else(|| panic!("no Message-ID in:\n{}", head(raw)));
    let inner = id.trim().strip_prefix('<').and_then(|i| i.strip_suffix('>')).unwrap_or_else(|| panic!("{id}"));
    let (local, at) = inner.split_once('@').unwrap_or_else(|| panic!("{id}"));
    let atom = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
            })
    };
    assert!(atom(local) && atom(at), "a Message-ID of dot-atoms: {id}");
    assert!(at.eq_ignore_ascii_case(domain), "the Message-ID is on {domain}: {id}");
    let date = header("Date").unwrap_or_else(|| panic!("no Date in:\n{}", head(raw)));
    mailparse::dateparse(&date).unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    assert_eq!(header("Auto-Submitted").as_deref(), Some("auto-generated"), "in:\n{}", head(raw));
    id
}

/// Checks [`assert_acceptable`] for each mail and that no two share a
/// `Message-ID`.
pub fn assert_all_acceptable(raws: &[String], domain: &str) {
    let ids: BTreeSet<String> = raws.iter().map(|raw| assert_acceptable(raw, domain)).collect();
    assert_eq!(ids.len(), raws.len(), "every mail has a Message-ID of its own");
}

fn head(raw: &str) -> &str {
    raw.split("\r\n\r\n").next().or_else(|| raw.split("\n\n").next()).unwrap_or(raw)
}

/// Whether the DKIM signature of `raw` verifies, as a receiver checks it
/// (dkimpy), for `<selector>._domainkey.<domain>` publishing `public_key`
/// (base64 of the DER SubjectPublicKeyInfo of an RSA key).
pub fn dkim_verifies(raw: &str, selector: &str, domain: &str, public_key: &str) -> anyhow::Result<bool> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), raw)?;
    let output = std::process::Command::new(crate::test_python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/check_dkim.py"))
        .arg(file.path())
        .args([selector, domain, public_key])
        .output()?;
    anyhow::ensure!(
        output.status.code().is_some_and(|c| c == 0 || c == 1),
        "check_dkim.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.status.success())
}
