//! Versions as images and hosts spell them (`12.1`, `2.35`, `535.104.05`,
//! `5.0.0rc12`, `4.1.6-1ubuntu1`, `5.14.0-362.el9`).
//!
//! A version is a numeric core of one to four dot-separated numbers, then an
//! optional suffix (a pre-release tag, a distribution revision, a kernel
//! build). Versions compare by their numeric core only: what an annotation
//! or a host can promise is the release, not how a distribution packaged it,
//! and a pre-release of 5.0.0 is meant to run where 5.0.0 runs. The text is
//! kept as given, so `535.104.05` is shown as `535.104.05`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most numeric components of a version.
const MAX_PARTS: usize = 4;
/// Longest version text accepted.
const MAX_TEXT: usize = 64;

/// A version: numeric core plus an optional suffix. Missing components
/// compare as zero, so `12.1` == `12.1.0`; the suffix never takes part in a
/// comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

/// Why a version string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{:?} is not a version (expected numbers separated by dots, e.g. 12.1, optionally followed by a tag such as rc1 or -1ubuntu1)", crate::text::escape(.0))]
pub struct VersionError(pub String);

impl Version {
    /// Parses a version: an optional `v`, 1 to 4 dot-separated numbers,
    /// then an optional suffix that starts with a letter or one of `-+~_`
    /// and holds only `[A-Za-z0-9.+~_-]`.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let text = s.trim();
        let err = || VersionError(shorten(text));
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(err());
        }
        let body = text
            .strip_prefix(['v', 'V'])
            .filter(|b| b.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(text);
        let bytes = body.as_bytes();
        let mut parts = Vec::new();
        let mut i = 0;
        loop {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 12 {
                return Err(err());
            }
            parts.push(body[start..i].parse::<u64>().map_err(|_| err())?);
            let more =
                bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit());
            if !more {
                break;
            }
            if parts.len() == MAX_PARTS {
                // A fifth number is not a suffix, it is a different scheme.
                return Err(err());
            }
            i += 1;
        }
        let suffix = &body[i..];
        if let Some(first) = suffix.chars().next() {
            let starts_well = first.is_ascii_alphabetic() || "-+~_".contains(first);
            let clean = suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c));
            if !starts_well || !clean {
                return Err(err());
            }
        }
        Ok(Version {
            text: text.to_owned(),
            parts,
        })
    }

    /// Parses the leading numeric part of a host string such as a kernel
    /// release (`6.1.0-18-amd64`) or `ldd` banner version (`2.36`); the
    /// version keeps only that numeric part as its text.
    pub fn parse_prefix(s: &str) -> Option<Version> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        Version::parse(s[..end].trim_end_matches('.')).ok()
    }

    /// Builds a version from its components (at most four are kept).
    pub fn from_parts(parts: &[u64]) -> Version {
        let parts: Vec<u64> = parts.iter().copied().take(MAX_PARTS).collect();
        let text = parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        Version { text, parts }
    }

    /// The first component.
    pub fn major(&self) -> u64 {
        self.at(0)
    }

    /// The second component (0 when absent).
    pub fn minor(&self) -> u64 {
        self.at(1)
    }

    /// The version as given (`535.104.05`, `5.0.0rc12`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The numeric core as numbers (`[5, 0, 0]` for `5.0.0rc12`).
    pub fn parts(&self) -> &[u64] {
        &self.parts
    }

    /// Whether a suffix follows the numeric core.
    pub fn has_suffix(&self) -> bool {
        let body = self.text.trim_start_matches(['v', 'V']);
        body.contains(|c: char| !(c.is_ascii_digit() || c == '.'))
    }

    /// Only `major.minor` (`12.1` of `12.1.105`), for comparisons that a
    /// host reports at that precision (the CUDA version of a driver).
    pub fn major_minor(&self) -> Version {
        Version::from_parts(&[self.major(), self.minor()])
    }

    fn at(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (0..MAX_PARTS)
            .map(|i| self.at(i).cmp(&other.at(i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for i in 0..MAX_PARTS {
            self.at(i).hash(state);
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Version::parse(&s)
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_and_orders() {
        assert!(v("12.1") < v("12.2"));
        assert!(v("12.10") > v("12.9"));
        assert_eq!(v("12.1"), v("12.1.0").clone());
        assert_eq!(v("12.1").cmp(&v("12.1.0")), std::cmp::Ordering::Equal);
        assert_eq!(v("2.35").minor(), 35);
    }

    #[test]
    fn text_is_kept_as_given() {
        assert_eq!(v("535.104.05").to_string(), "535.104.05");
        assert_eq!(v("535.104.05"), v("535.104.5"));
        assert_eq!(v(" 5.0.0rc12 ").to_string(), "5.0.0rc12");
        assert_eq!(v("v1.2").to_string(), "v1.2");
        assert_eq!(
            serde_json::to_string(&v("4.1.6-1ubuntu1")).unwrap(),
            "\"4.1.6-1ubuntu1\""
        );
    }

    #[test]
    fn pre_releases_and_distro_suffixes_compare_by_core() {
        assert_eq!(v("4.1.4a1"), v("4.1.4"));
        assert_eq!(v("5.0.0rc12"), v("5.0.0"));
        assert_eq!(v("4.1.6-1ubuntu1"), v("4.1.6"));
        assert_eq!(v("2.35+git20220330"), v("2.35"));
        assert!(v("5.0.0rc12").has_suffix());
        assert!(!v("5.0.0").has_suffix());
        assert_eq!(v("5.0.0rc12").parts(), &[5, 0, 0]);
    }

    #[test]
    fn kernel_build_suffixes() {
        assert_eq!(v("5.14.0-362.el9"), v("5.14.0"));
        assert_eq!(v("6.1.0-18-amd64"), v("6.1"));
        assert!(v("5.14.0-362.el9_3.x86_64") > v("5.1"));
    }

    #[test]
    fn major_minor_only() {
        assert_eq!(v("12.1.105").major_minor().to_string(), "12.1");
        assert_eq!(v("12").major_minor(), v("12.0"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "1..2",
            "1.2.3.4.5",
            "1.-2",
            "1.2 ; rm",
            ".1",
            "1.2\n3",
            "twelve",
            "12.1!",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
        let long = "1".repeat(100);
        let e = Version::parse(&long).unwrap_err();
        assert!(e.0.len() < 80, "the error must not echo a huge value");
    }

    #[test]
    fn error_escapes_the_text() {
        let e = Version::parse("1.2\u{1b}[2K").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn prefix_of_host_strings() {
        assert_eq!(
            Version::parse_prefix("6.1.0-18-amd64").unwrap().to_string(),
            "6.1.0"
        );
        assert_eq!(Version::parse_prefix("2.36").unwrap().to_string(), "2.36");
        assert!(Version::parse_prefix("-x").is_none());
    }
}
