//! Image text made safe to print: annotation values, CDI device names,
//! image paths and ELF sonames end up in the lines hpcc writes for users
//! and admins. An image must not be able to add lines that look like
//! hpcc's (a newline in a value), rewrite a terminal (escape sequences), or
//! reorder what a person reads (Unicode bidirectional controls).

/// `s` with control characters, bidirectional and other invisible
/// formatting characters written as escapes (`\n`, `\u{1b}`, `\u{202e}`).
/// Printable text, including non-ASCII letters, is kept as is.
pub fn escape(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// An annotation key as hpcc shows it: [`escape`], and every non-ASCII
/// character written as an escape too. Keys are ASCII in every
/// specification hpcc reads, so a non-ASCII letter in one is a look-alike
/// (a Cyrillic `о` for `o`): shown as is, the reader could not tell which
/// letter is wrong.
pub fn escape_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Characters that can change how a line reads without being seen.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces and joiners, LRM/RLM
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{feff}'              // zero-width no-break space
        )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn newlines_and_escapes_cannot_forge_lines() {
        let forged = "x\nhpcc: container may start\r\u{1b}[2K";
        let e = escape(forged);
        assert!(!e.contains('\n') && !e.contains('\r') && !e.contains('\u{1b}'));
        assert!(e.contains("\\n") && e.contains("\\u{1b}"), "{e}");
    }

    #[test]
    fn keys_show_every_non_ascii_character() {
        assert_eq!(super::escape_key("\u{43e}rg.x \n"), "\\u{43e}rg.x \\n");
        assert_eq!(
            super::escape_key("org.supercontainers.gpu"),
            "org.supercontainers.gpu"
        );
    }

    #[test]
    fn bidi_controls_are_visible_and_letters_kept() {
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(escape("Grüße, Ωmega"), "Grüße, Ωmega");
        assert_eq!(escape("plain"), "plain");
    }
}
