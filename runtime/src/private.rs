//! The private bundle: hpcc-runtime never writes the user's bundle.
//!
//! The edited `config.json` goes into a directory of hpcc's own, one per
//! container (`/run/hpcc/bundles/<key>/` for root, the user's runtime
//! directory for a rootless user), with `root.path` and every relative
//! bind-mount source made absolute against the user's bundle, and the
//! real runtime is given that directory as its bundle. Two nodes starting
//! one bundle from a shared file system each get their own plan, the
//! user's file stays byte-identical, and an engine that reads back the
//! `config.json` it wrote finds its own.
//!
//! A private bundle lives until `hpcc-runtime delete` of its container
//! (hooks read `<bundle>/config.json` up to poststop, at delete). One whose
//! container is gone without a delete through hpcc (`runc run` exits by
//! itself, a runtime called directly) is pruned by a later launch: its
//! record names the runtime's state directory of the container, and a
//! private bundle older than [`GRACE`] whose state directory is gone is
//! removed.

use hpcc_common::io::{write_atomic_unsynced, FileMode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a private bundle is kept before pruning may look at it: the
/// runtime creates its state directory right after it reads the config.
pub const GRACE: Duration = Duration::from_secs(120);

/// At most this many entries are looked at by one launch's pruning: a
/// launch costs the same whatever was left behind.
const PRUNE_SCAN: usize = 64;

/// The record of the container a private bundle belongs to.
const RECORD: &str = "hpcc-container";

/// A private bundle that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// The store of private bundles cannot be used.
    #[error("private bundle store {dir}: {reason}")]
    Store {
        /// The store.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing the bundle.
    #[error("cannot write the private bundle {dir}: {source}")]
    Write {
        /// The bundle.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config is not an OCI object.
    #[error("config.json is not a JSON object")]
    NotAnObject,
}

/// Where this user's private bundles go: next to the linker cache store
/// (`/run/hpcc/bundles` for root, `/run/user/UID/hpcc/bundles` or
/// `/tmp/hpcc-UID/bundles` for a user).
pub fn store(cache_dir: &Path) -> PathBuf {
    hpcc_common::apply::ldcache_file::store_dir(cache_dir).with_file_name("bundles")
}

/// The runtime's state directory of a container: `--root` when given,
/// else the runtime's default (runc: `/run/runc`, crun: `/run/crun`; a
/// rootless user's under `XDG_RUNTIME_DIR`, as both do).
pub fn state_dir(runtime: &Path, root: Option<&Path>, id: &str) -> PathBuf {
    // runc and crun make a relative `--root` absolute against their working
    // directory: so is it here, or a `delete` run from another directory
    // would miss the bundle, and pruning would test the relative path from
    // its own directory and remove the bundle of a running container.
    let root = root.map(|r| std::path::absolute(r).unwrap_or_else(|_| r.to_owned()));
    let root = root.unwrap_or_else(|| {
        let name = runtime
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = if name.contains("crun") {
            "crun"
        } else {
            "runc"
        };
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid == 0 {
            PathBuf::from(format!("/run/{name}"))
        } else {
            let xdg = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
            xdg.join(name)
        }
    });
    root.join(id)
}

/// The private bundle's directory name: the container's state directory
/// hashed (two runtime roots may hold the same id; an id may hold any
/// character).
fn key(state: &Path) -> String {
    Sha256::digest(state.as_os_str().as_encoded_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes paths of `config` that the runtime reads relative to the bundle
/// absolute against `bundle`: `root.path`, and the source of every bind
/// mount (runc and crun join a relative bind source to the bundle; other
/// mount types' sources are names such as `proc` or `tmpfs`).
pub fn absolutize(config: &mut Value, bundle: &Path) -> Result<(), PrivateError> {
    let obj = config.as_object_mut().ok_or(PrivateError::NotAnObject)?;
    let abs = |p: &str| -> Option<String> {
        (!p.starts_with('/')).then(|| bundle.join(p).to_string_lossy().into_owned())
    };
    if let Some(Value::String(p)) = obj.get_mut("root").and_then(|r| r.get_mut("path")) {
        if let Some(a) = abs(p) {
            *p = a;
        }
    } else {
        // No root.path: runc's default is "rootfs" beside config.json.
        let root = obj.entry("root").or_insert_with(|| serde_json::json!({}));
        if let Some(r) = root.as_object_mut() {
            r.insert(
                "path".into(),
                bundle.join("rootfs").to_string_lossy().into_owned().into(),
            );
        }
    }
    if let Some(Value::Array(mounts)) = obj.get_mut("mounts") {
        for m in mounts.iter_mut().filter_map(Value::as_object_mut) {
            let is_bind = m.get("type").and_then(Value::as_str) == Some("bind")
                || m.get("options").and_then(Value::as_array).is_some_and(|o| {
                    o.iter()
                        .any(|x| matches!(x.as_str(), Some("bind" | "rbind")))
                });
            if !is_bind {
                continue;
            }
            if let Some(Value::String(src)) = m.get_mut("source") {
                if let Some(a) = abs(src) {
                    *src = a;
                }
            }
        }
    }
    Ok(())
}

/// Writes `config` as the private bundle of the container whose runtime
/// state is `state`; returns the bundle directory.
pub fn write(store_dir: &Path, state: &Path, config: &Value) -> Result<PathBuf, PrivateError> {
    let store = hpcc_common::apply::ldcache_file::trusted_dir(store_dir).map_err(|reason| {
        PrivateError::Store {
            dir: store_dir.to_owned(),
            reason,
        }
    })?;
    prune(&store);
    let dir = store.join(key(state));
    let err = |source| PrivateError::Write {
        dir: dir.clone(),
        source,
    };
    match std::fs::DirBuilder::new().mode_private().create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A container of that id and root was created before (a
            // failed create, a reused id): its bundle is replaced, but
            // only a real directory of ours.
            let m = std::fs::symlink_metadata(&dir).map_err(err)?;
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            if !m.is_dir() || m.uid() != uid {
                return Err(err(std::io::Error::other(
                    "exists and is not a directory of this user",
                )));
            }
        }
        Err(e) => return Err(err(e)),
    }
    let body = serde_json::to_vec(config).map_err(|e| err(std::io::Error::other(e)))?;
    let mode = FileMode {
        mode: 0o600,
        owner: None,
    };
    write_atomic_unsynced(&dir.join("config.json"), &body, mode).map_err(err)?;
    write_atomic_unsynced(
        &dir.join(RECORD),
        state.as_os_str().as_encoded_bytes(),
        mode,
    )
    .map_err(err)?;
    Ok(dir)
}

/// Removes the private bundle of the container whose runtime state is
/// `state`, if there is one.
pub fn remove(store_dir: &Path, state: &Path) {
    // Only from a store nobody else can change, as `write` demands: a
    // store another user made (`/tmp/hpcc-UID`) is not ours to delete in.
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if let Err(reason) = hpcc_common::apply::ldcache_file::secure_path(store_dir, uid) {
        tracing::debug!(store = %store_dir.display(), %reason, "private bundle store not trusted: nothing removed");
        return;
    }
    let dir = store_dir.join(key(state));
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "private bundle not removed");
        }
    }
}

/// Removes private bundles whose container is gone: older than [`GRACE`]
/// and their recorded state directory absent. Bounded: at most
/// [`PRUNE_SCAN`] entries.
fn prune(store: &Path) {
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten().take(PRUNE_SCAN) {
        let dir = e.path();
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > GRACE);
        if !old {
            continue;
        }
        let Ok(bytes) = hpcc_common::io::read_text_bounded(&dir.join(RECORD), 4096) else {
            continue;
        };
        // Only an absolute record says where the state is: a relative one
        // would be looked up from this launch's directory.
        let state = Path::new(bytes.trim_end_matches('\n'));
        if state.is_absolute() && !state.exists() {
            tracing::debug!(dir = %dir.display(), "private bundle of a container that is gone: removed");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::DirBuilder {
    /// 0700: only this user (root: only root) reads the plan.
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_paths_become_absolute_against_the_bundle() {
        let mut c = json!({
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
                {"destination": "/x", "source": "x", "options": ["bind", "ro"]},
                {"destination": "/abs", "type": "bind", "source": "/srv/abs"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
            ]
        });
        absolutize(&mut c, Path::new("/home/u/b")).unwrap();
        assert_eq!(c["root"]["path"], "/home/u/b/rootfs");
        assert_eq!(c["mounts"][0]["source"], "proc");
        assert_eq!(c["mounts"][1]["source"], "/home/u/b/data");
        assert_eq!(c["mounts"][2]["source"], "/home/u/b/x");
        assert_eq!(c["mounts"][3]["source"], "/srv/abs");
        assert_eq!(c["mounts"][4]["source"], "tmpfs");
        let mut c = json!({"root": {"path": "/abs/rootfs"}});
        absolutize(&mut c, Path::new("/b")).unwrap();
        assert_eq!(c["root"]["path"], "/abs/rootfs");
        let mut c = json!({});
        absolutize(&mut c, Path::new("/b")).unwrap();
        assert_eq!(c["root"]["path"], "/b/rootfs");
        assert!(absolutize(&mut json!([]), Path::new("/b")).is_err());
    }

    #[test]
    fn one_bundle_per_container_state_and_removed_on_delete() {
        let d = std::env::temp_dir().join(format!("hpcc-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = d.join("bundles");
        let (a, b) = (d.join("run/runc/c1"), d.join("run/other/c1"));
        let pa = write(&store, &a, &json!({"n": 1})).unwrap();
        let pb = write(&store, &b, &json!({"n": 2})).unwrap();
        assert_ne!(pa, pb, "same id under two runtime roots");
        let read = |p: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(p.join("config.json")).unwrap()).unwrap()
        };
        assert_eq!(read(&pa)["n"], 1);
        // Rewritten for a new create of the same container.
        assert_eq!(write(&store, &a, &json!({"n": 3})).unwrap(), pa);
        assert_eq!(read(&pa)["n"], 3);
        let m = std::fs::metadata(&pa).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
        remove(&store, &a);
        assert!(!pa.exists() && pb.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pruning_removes_only_old_bundles_of_gone_containers() {
        let d = std::env::temp_dir().join(format!("hpcc-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = d.join("bundles");
        let alive = d.join("run/runc/alive");
        std::fs::create_dir_all(&alive).unwrap();
        let gone = d.join("run/runc/gone");
        let young_gone = d.join("run/runc/young");
        let p_alive = write(&store, &alive, &json!({})).unwrap();
        let p_gone = write(&store, &gone, &json!({})).unwrap();
        let p_young = write(&store, &young_gone, &json!({})).unwrap();
        let old = std::time::SystemTime::now() - GRACE - Duration::from_secs(5);
        for p in [&p_alive, &p_gone] {
            std::fs::File::open(p).unwrap().set_modified(old).unwrap();
        }
        prune(&store);
        assert!(p_alive.exists(), "its container still has state");
        assert!(!p_gone.exists(), "old, and its container is gone");
        assert!(p_young.exists(), "within the grace time");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_relative_runtime_root_is_the_runtimes_absolute_one() {
        let cwd = std::env::current_dir().unwrap();
        let runc = Path::new("/usr/sbin/runc");
        assert_eq!(
            state_dir(runc, Some(Path::new("state")), "c1"),
            cwd.join("state/c1")
        );
        assert_eq!(
            state_dir(runc, Some(Path::new("/run/r")), "c1"),
            Path::new("/run/r/c1")
        );
        // A relative record (an older hpcc) is never taken for a gone
        // container.
        let d = std::env::temp_dir().join(format!("hpcc-prune-rel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = d.join("bundles");
        let p = write(&store, Path::new("no-such-relative-state/c1"), &json!({})).unwrap();
        let old = std::time::SystemTime::now() - GRACE - Duration::from_secs(5);
        std::fs::File::open(&p).unwrap().set_modified(old).unwrap();
        prune(&store);
        assert!(p.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_a_bundle_is_refused() {
        let d = std::env::temp_dir().join(format!("hpcc-private-ln-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = d.join("bundles");
        std::fs::create_dir_all(&store).unwrap();
        let state = d.join("run/runc/x");
        std::os::unix::fs::symlink("/etc", store.join(key(&state))).unwrap();
        assert!(write(&store, &state, &json!({})).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
