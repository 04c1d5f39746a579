//! Credentials from the files podman and docker write: the first of
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `~/.docker/config.json` that has an
//! entry for the registry (podman's order). Basic credentials are handed to
//! the client, which trades them for a bearer token when the registry's
//! `WWW-Authenticate` asks for one.

use super::RegistryError;
use base64::Engine;
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest auth file read.
const MAX_AUTH_BYTES: u64 = 1 << 20;

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The auth files looked at, in order. `explicit` (`--authfile`) replaces
/// the search, as in podman.
pub fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    out.extend(env("REGISTRY_AUTH_FILE"));
    out.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    if let Some(home) = env("HOME") {
        out.push(home.join(".config/containers/auth.json"));
        out.push(home.join(".docker/config.json"));
    }
    out
}

/// The credentials for `registry` (`host[:port]`), anonymous when no file
/// has an entry. docker.io is also looked up under the keys docker writes.
pub fn lookup(registry: &str, files: &[PathBuf]) -> Result<RegistryAuth, RegistryError> {
    let keys: Vec<String> = if registry == "docker.io" || registry == "index.docker.io" {
        vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "https://index.docker.io/v1/".into(),
        ]
    } else {
        vec![registry.to_owned(), format!("https://{registry}")]
    };
    for f in files {
        let Some(file) = read(f)? else { continue };
        let Some(entry) = keys.iter().find_map(|k| file.auths.get(k)) else {
            continue;
        };
        let err = |reason: &str| RegistryError::Auth {
            path: f.clone(),
            registry: registry.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(RegistryAuth::Bearer(token.to_owned()));
        }
        let Some(auth) = entry.auth.as_deref() else {
            return Err(err(
                "the entry has no \"auth\" (credential helpers are not supported)",
            ));
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| err("\"auth\" is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| err("\"auth\" is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| err("\"auth\" is not USER:PASSWORD"))?;
        return Ok(RegistryAuth::Basic(user.to_owned(), pass.to_owned()));
    }
    Ok(RegistryAuth::Anonymous)
}

fn read(path: &Path) -> Result<Option<AuthFile>, RegistryError> {
    let err = |reason: String| RegistryError::Conf {
        path: path.to_owned(),
        reason,
    };
    match hpcc_common::io::read_file_bounded(path, MAX_AUTH_BYTES) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err(e.to_string())),
        Err(hpcc_common::io::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_common::testutil::TempDir;

    #[test]
    fn basic_credentials_come_from_the_first_file_with_an_entry() {
        let t = TempDir::new("hpcc-auth");
        let a = t.0.join("a.json");
        let b = t.0.join("b.json");
        std::fs::write(&a, r#"{"auths":{"other:5000":{"auth":"eDp5"}}}"#).unwrap();
        // "alice:s3:cret" — a password may hold a colon.
        std::fs::write(
            &b,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czM6Y3JldA=="}}}"#,
        )
        .unwrap();
        let files = vec![t.0.join("missing.json"), a, b];
        match lookup("127.0.0.1:5000", &files).unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3:cret")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup("nowhere:1", &files).unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn a_broken_entry_is_an_error_naming_the_file() {
        let t = TempDir::new("hpcc-auth");
        let a = t.0.join("a.json");
        std::fs::write(&a, r#"{"auths":{"r.example":{"auth":"!!"}}}"#).unwrap();
        let e = lookup("r.example", std::slice::from_ref(&a))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.json") && e.contains("base64"), "{e}");
    }
}
