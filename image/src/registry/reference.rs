//! Registry references: `docker://host[:port]/repo[:tag][@digest]` and a
//! plain `repo[:tag]` resolved through `registries.conf` short names, as
//! podman resolves them.

use super::RegistryError;
use oci_client::Reference;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest `registries.conf` read (it is a small admin file).
const MAX_CONF_BYTES: u64 = 1 << 20;

/// An image in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// What the user gave.
    pub given: String,
    /// The fully qualified reference.
    pub reference: Reference,
    /// How to reach the registry (TLS, credentials, bounds).
    pub options: super::RegistryOptions,
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}", self.reference.whole())
    }
}

impl RegistryRef {
    /// `docker://NAME`: NAME as skopeo reads it (a name without a registry
    /// host is on docker.io, as skopeo's `docker://` transport says).
    pub fn parse_docker(input: &str) -> Result<RegistryRef, RegistryError> {
        let name = input
            .strip_prefix("docker://")
            .ok_or_else(|| bad(input, "expected docker://NAME"))?;
        let reference = Reference::try_from(name).map_err(|e| bad(input, &e.to_string()))?;
        Ok(RegistryRef {
            given: input.to_owned(),
            reference,
            options: Default::default(),
        })
    }

    /// A plain `repo[:tag]`: qualified names (first component with a `.`
    /// or `:`, or `localhost`) are taken as they are; short names go
    /// through the aliases and `unqualified-search-registries` of
    /// `registries.conf` (`$CONTAINERS_REGISTRIES_CONF`, else
    /// `/etc/containers/registries.conf`, plus `registries.conf.d/*.conf`).
    /// Several search registries and no alias is an error, as podman's
    /// `short-name-mode = "enforcing"` makes it without a terminal: hpcc
    /// must not score an image from a registry the user did not mean.
    pub fn parse_short(input: &str) -> Result<RegistryRef, RegistryError> {
        if is_qualified(input) {
            return RegistryRef::parse_docker(&format!("docker://{input}")).map(|r| RegistryRef {
                given: input.to_owned(),
                ..r
            });
        }
        let conf = ShortNames::load()?;
        let (repo, rest) = split_repo(input);
        let full = if let Some(target) = conf.aliases.get(repo) {
            format!("{target}{rest}")
        } else {
            match conf.search.as_slice() {
                [one] => format!("{one}/{input}"),
                [] => {
                    return Err(bad(
                        input,
                        &format!(
                            "a short name, and {} names no alias for it and no unqualified-search-registries: write docker://HOST/{input}",
                            conf.origin
                        ),
                    ))
                }
                many => {
                    return Err(bad(
                        input,
                        &format!(
                            "a short name that {} resolves through {} registries ({}): write docker://HOST/{input}",
                            conf.origin,
                            many.len(),
                            many.join(", ")
                        ),
                    ))
                }
            }
        };
        let reference =
            Reference::try_from(full.as_str()).map_err(|e| bad(input, &e.to_string()))?;
        Ok(RegistryRef {
            given: input.to_owned(),
            reference,
            options: Default::default(),
        })
    }

    /// `repo@digest` of a manifest of this repository: what to pull.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_owned(),
        )
    }
}

fn bad(input: &str, reason: &str) -> RegistryError {
    RegistryError::BadRef {
        input: hpcc_common::text::escape(input),
        reason: reason.to_owned(),
    }
}

/// podman's rule: the first path component names a registry when it has a
/// `.` or a `:`, or is `localhost`.
fn is_qualified(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// `repo` and the `:tag`/`@digest` after it.
fn split_repo(name: &str) -> (&str, &str) {
    let cut = name
        .find('@')
        .or_else(|| name.rfind(':').filter(|i| !name[*i..].contains('/')))
        .unwrap_or(name.len());
    name.split_at(cut)
}

/// The short-name part of `registries.conf`.
#[derive(Debug, Default)]
struct ShortNames {
    origin: String,
    search: Vec<String>,
    aliases: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct ConfFile {
    #[serde(default, rename = "unqualified-search-registries")]
    search: Option<Vec<String>>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

impl ShortNames {
    fn load() -> Result<ShortNames, RegistryError> {
        let main = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf"));
        let mut out = ShortNames {
            origin: main.display().to_string(),
            ..Default::default()
        };
        let mut files = vec![main.clone()];
        if let Some(dir) = main.parent().map(|p| p.join("registries.conf.d")) {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut more: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                    .collect();
                more.sort();
                files.extend(more);
            }
        }
        for f in files {
            // Later files override earlier ones, key by key, as in podman.
            let Some(conf) = read_conf(&f)? else { continue };
            if let Some(s) = conf.search {
                out.search = s;
            }
            out.aliases.extend(conf.aliases);
        }
        Ok(out)
    }
}

fn read_conf(path: &Path) -> Result<Option<ConfFile>, RegistryError> {
    let conf_err = |reason: String| RegistryError::Conf {
        path: path.to_owned(),
        reason,
    };
    let bytes = match hpcc_common::io::read_file_bounded(path, MAX_CONF_BYTES) {
        Ok(b) => b,
        Err(hpcc_common::io::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(conf_err(e.to_string())),
    };
    let text = String::from_utf8(bytes).map_err(|e| conf_err(e.to_string()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| conf_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_references_keep_host_port_tag_and_digest() {
        let r = RegistryRef::parse_docker("docker://127.0.0.1:5000/hpc/app:v3").unwrap();
        assert_eq!(r.reference.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference.repository(), "hpc/app");
        assert_eq!(r.reference.tag(), Some("v3"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = RegistryRef::parse_docker(&format!("docker://reg.example/app@{d}")).unwrap();
        assert_eq!(r.reference.digest(), Some(d.as_str()));
        assert!(RegistryRef::parse_docker("docker://reg.example/Upper").is_err());
    }

    #[test]
    fn qualified_names_need_no_registries_conf() {
        assert!(is_qualified("localhost/x"));
        assert!(is_qualified("reg.example/x"));
        assert!(is_qualified("host:5000/x"));
        assert!(!is_qualified("library/x"));
        assert!(!is_qualified("x:tag"));
        assert_eq!(split_repo("hpc/app:v3"), ("hpc/app", ":v3"));
        assert_eq!(split_repo("hpc/app"), ("hpc/app", ""));
    }
}
