//! Keeping personal values out of what the system writes about itself:
//! dead-letter reasons, log lines and span statuses. Text quoted from other
//! servers is the usual way in: an SMTP server refuses a recipient with
//! `550 5.1.1 <ada@example.com>: Recipient address rejected`, a JSON parser
//! quotes the value it could not read. Such text outlives an erasure (a dead
//! letter is kept for weeks, logs for as long as the operator keeps them),
//! so every e-mail address in it is replaced by [`ADDRESS`].

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What an address is replaced with.
pub const ADDRESS: &str = "[address]";

/// Anything shaped like an e-mail address: a local part (the characters
/// RFC 5322 allows unquoted, letters of any script among them, or a quoted
/// string), `@`, and a domain of at least two labels (of any script).
static ADDRESSES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:"[^"\r\n]*"|[\w!#$%&'*+/=?^`{|}~.-]+)@[\w-]+(?:\.[\w-]+)+"#).expect("a valid pattern")
});

/// `text` with every e-mail address replaced by [`ADDRESS`].
pub fn addresses(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    ADDRESSES.replace_all(text, ADDRESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_replaced_and_the_rest_is_kept() {
        let answer = "permanent error (550): 5.1.1 <Ada.Lovelace+news@mail.example.co.uk>: Recipient address rejected";
        assert_eq!(addresses(answer), "permanent error (550): 5.1.1 <[address]>: Recipient address rejected");
        let json = r#"invalid type: string "o'brien@example.com", expected a map at line 1"#;
        assert_eq!(addresses(json), r#"invalid type: string "[address]", expected a map at line 1"#);
        for kept in ["no address here", "a@b", "user@localhost", "5.1.1 mailbox unavailable"] {
            assert_eq!(addresses(kept), kept, "{kept}");
        }
        assert_eq!(addresses("x@a.bc and y@d.ef"), "[address] and [address]");
        assert_eq!(addresses("<José.Müller@bücher.example>"), "<[address]>", "letters of any script");
        assert_eq!(addresses(r#"to "ada lovelace"@example.com now"#), "to [address] now", "a quoted local part");
    }
}
