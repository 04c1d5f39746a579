//! Dotted numeric versions (`12.1`, `2.35`, `535.104.05`), as images and hosts
//! spell them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A version of up to four numeric components. Missing components compare
/// as zero, so `12.1` == `12.1.0`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version {
    parts: Vec<u64>,
}

/// Why a version string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version (expected numbers separated by dots, e.g. 12.1)")]
pub struct VersionError(pub String);

impl Version {
    /// Parses a strict version: 1 to 4 dot-separated numbers, nothing else.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let s = s.trim();
        let err = || VersionError(s.to_owned());
        if s.is_empty() || s.len() > 64 {
            return Err(err());
        }
        let s = s.strip_prefix('v').unwrap_or(s);
        let parts = s
            .split('.')
            .map(|p| {
                if p.is_empty() || p.len() > 12 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    Err(err())
                } else {
                    p.parse::<u64>().map_err(|_| err())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parts.len() > 4 {
            return Err(err());
        }
        Ok(Version { parts })
    }

    /// Parses the leading numeric part of a host string such as a kernel
    /// release (`6.1.0-18-amd64`) or `ldd` banner version (`2.36`).
    pub fn parse_prefix(s: &str) -> Option<Version> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        Version::parse(s[..end].trim_end_matches('.')).ok()
    }

    /// Builds a version from its components.
    pub fn from_parts(parts: &[u64]) -> Version {
        Version {
            parts: parts.to_vec(),
        }
    }

    /// The first component.
    pub fn major(&self) -> u64 {
        self.parts.first().copied().unwrap_or(0)
    }

    /// The second component (0 when absent).
    pub fn minor(&self) -> u64 {
        self.parts.get(1).copied().unwrap_or(0)
    }

    fn at(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (0..4)
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
        for i in 0..4 {
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
        let s: Vec<String> = self.parts.iter().map(|p| p.to_string()).collect();
        f.write_str(&s.join("."))
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
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

    #[test]
    fn parses_and_orders() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("12.1") < v("12.2"));
        assert!(v("12.10") > v("12.9"));
        assert_eq!(v("12.1"), v("12.1.0").clone());
        assert_eq!(v("12.1").cmp(&v("12.1.0")), std::cmp::Ordering::Equal);
        assert_eq!(v("535.104.05").to_string(), "535.104.5");
        assert_eq!(v("2.35").minor(), 35);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "1..2",
            "1.2.3.4.5",
            "1.-2",
            "12.1rc1",
            "1.2 ; rm",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
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
