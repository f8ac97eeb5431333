//! Text from outside (a letter's headers and payload, a ledger) as a
//! terminal may show it.

/// `text` as a terminal may show it: every control character but the line
/// break, and every character that reorders or hides text (bidirectional
/// controls, zero-width ones), escaped (`\u{1b}`), so that a letter's
/// headers or payload, which whoever wrote the letter chose, cannot move the
/// cursor, clear the screen, set the window's title or disguise itself.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{061c}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| if unsafe_char(c) { c.escape_unicode().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(super::shown("plain\ntext"), "plain\ntext");
        assert_eq!(super::shown("\u{1b}[2Jx\u{7}\r"), "\\u{1b}[2Jx\\u{7}\\u{d}");
        assert_eq!(super::shown("abc\u{202e}fed"), "abc\\u{202e}fed", "a right-to-left override");
    }
}
