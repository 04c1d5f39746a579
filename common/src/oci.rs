//! What the runtime hands a hook: the OCI state on stdin and the bundle's
//! `config.json`. Both are read with size bounds; nothing in them is trusted
//! beyond what the runtime itself vouches for (the bundle path and pid).

use oci_spec::runtime::{Spec, State};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest OCI state accepted on stdin.
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// Largest `config.json` accepted.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Why the launch input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Reading failed.
    #[error("cannot read {what}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Input over its bound.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// Not valid JSON of the expected shape.
    #[error("{what} is not valid: {reason}")]
    Invalid {
        /// What was being read.
        what: String,
        /// Parser message.
        reason: String,
    },
}

fn read_bounded(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
    crate::io::read_bounded(r, limit).map_err(|e| match e {
        crate::io::ReadError::Io(source) => OciError::Read {
            what: what.to_owned(),
            source,
        },
        crate::io::ReadError::TooLarge { limit } => OciError::TooLarge {
            what: what.to_owned(),
            limit,
        },
    })
}

/// Reads the OCI state a runtime writes to a hook's stdin.
pub fn read_state(r: impl Read) -> Result<State, OciError> {
    let buf = read_bounded(r, MAX_STATE_BYTES, "the OCI state on stdin")?;
    serde_json::from_slice(&buf).map_err(|e| OciError::Invalid {
        what: "the OCI state on stdin".into(),
        reason: e.to_string(),
    })
}

/// Parses a `config.json` from an open file or reader.
pub fn read_config(r: impl Read, what: &str) -> Result<Spec, OciError> {
    let buf = read_bounded(r, MAX_CONFIG_BYTES, what)?;
    serde_json::from_slice(&buf).map_err(|e| OciError::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// The facts of one container launch, from state and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchContext {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem on the host (`root.path`, made absolute).
    pub rootfs: PathBuf,
    /// The container's init pid, when the runtime gave one.
    pub pid: Option<i32>,
    /// All annotations (config.json's, then the state's on top).
    pub annotations: BTreeMap<String, String>,
    /// The container process's environment, as `KEY=VALUE`. Read only for
    /// device selection (`NVIDIA_VISIBLE_DEVICES`); never applied on the host.
    pub process_env: Vec<String>,
    /// Whether the config mounts a tmpfs at `/dev` (every engine's does):
    /// hpcc then puts the mount targets it needs there, in the
    /// container's own tmpfs, and never creates anything in the image.
    pub dev_tmpfs: bool,
    /// The devices `config.json` already gives the container
    /// (`linux.devices`): what the engine, or the person who wrote the
    /// bundle, allocated. Never the image's choice: an image's config
    /// cannot carry devices.
    pub allocated_devices: Vec<AllocatedDevice>,
    /// Whether `process_env` was written by the scheduler, not the image:
    /// a Slurm step's spooled config, where slurmstepd has replaced the
    /// environment with the step's, so that `CUDA_VISIBLE_DEVICES` there
    /// is the job's GPU allocation. False wherever an image's `ENV` can be
    /// in it (podman copies it into `process.env`, so does `umoci unpack`).
    pub env_from_scheduler: bool,
    /// Whether the scheduler renumbers `CUDA_VISIBLE_DEVICES` from 0 within
    /// the step (Slurm with `ConstrainDevices=yes` in cgroup.conf and a
    /// cgroup task plugin): then only `SLURM_STEP_GPUS` and
    /// `SLURM_JOB_GPUS` name the node's devices.
    pub slurm_constrain_devices: bool,
    /// Whether the runtime runs without root (rootless runc, Slurm's
    /// non-root jobs; set by `hpcc-runtime` from its own uid): it then
    /// binds device nodes and cannot load device cgroup rules. A root
    /// runtime whose container has a user namespace can.
    pub rootless: bool,
}

/// A device node of `linux.devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedDevice {
    /// Path in the container.
    pub path: PathBuf,
    /// `c`, `b`, `u` or `p`.
    pub kind: char,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
}

impl AllocatedDevice {
    /// Whether this is the node `kind major:minor` (`u` is a character
    /// device for the kernel).
    pub fn is(&self, kind: char, major: u64, minor: u64) -> bool {
        let k = if self.kind == 'u' { 'c' } else { self.kind };
        k == kind
            && u64::try_from(self.major).ok() == Some(major)
            && u64::try_from(self.minor).ok() == Some(minor)
    }
}

impl LaunchContext {
    /// Combines a state and its bundle's config.
    pub fn new(state: &State, spec: &Spec) -> LaunchContext {
        let bundle = state.bundle().clone();
        let mut annotations: BTreeMap<String, String> = spec
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if let Some(a) = state.annotations() {
            annotations.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        LaunchContext {
            id: state.id().clone(),
            rootfs: rootfs_of(&bundle, spec),
            bundle,
            pid: *state.pid(),
            annotations,
            process_env: spec
                .process()
                .as_ref()
                .and_then(|p| p.env().clone())
                .unwrap_or_default(),
            dev_tmpfs: spec.mounts().as_ref().is_some_and(|ms| {
                ms.iter().any(|m| {
                    m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs")
                })
            }),
            allocated_devices: spec
                .linux()
                .as_ref()
                .and_then(|l| l.devices().as_ref())
                .map(|ds| {
                    ds.iter()
                        .map(|d| AllocatedDevice {
                            path: d.path().clone(),
                            kind: match d.typ() {
                                oci_spec::runtime::LinuxDeviceType::B => 'b',
                                oci_spec::runtime::LinuxDeviceType::P => 'p',
                                oci_spec::runtime::LinuxDeviceType::U => 'u',
                                oci_spec::runtime::LinuxDeviceType::C => 'c',
                                oci_spec::runtime::LinuxDeviceType::A => 'a',
                            },
                            major: d.major(),
                            minor: d.minor(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            env_from_scheduler: false,
            slurm_constrain_devices: false,
            rootless: false,
        }
    }

    /// A context from annotations alone (`hpcc match --annotations`, an
    /// image's manifest): no bundle, no rootfs to inspect, and the engine
    /// assumed to give the container a `/dev` tmpfs as all do.
    pub fn from_annotations(id: &str, annotations: BTreeMap<String, String>) -> LaunchContext {
        LaunchContext {
            id: id.to_owned(),
            bundle: PathBuf::new(),
            rootfs: PathBuf::new(),
            pid: None,
            annotations,
            process_env: vec![],
            dev_tmpfs: true,
            allocated_devices: vec![],
            env_from_scheduler: false,
            slurm_constrain_devices: false,
            rootless: false,
        }
    }

    /// A context from a bundle alone (CLI, SPANK before the container
    /// exists): no pid, the bundle's directory name as id.
    pub fn from_bundle(bundle: &Path, spec: &Spec) -> LaunchContext {
        let mut state = State::default();
        state.set_bundle(bundle.to_owned());
        state.set_id(
            bundle
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "bundle".into()),
        );
        LaunchContext::new(&state, spec)
    }

    /// Where hpcc mounts the host libraries that replace nothing in the
    /// image (dependencies, driver libraries), one directory per component:
    /// under the container's `/dev` tmpfs when there is one, so that no
    /// target is ever created in the image (which another node may be
    /// starting at the same time, or which may be read-only).
    pub fn lib_root(&self) -> &'static Path {
        Path::new(if self.dev_tmpfs {
            "/dev/hpcc/lib"
        } else {
            "/opt/hpcc/lib"
        })
    }

    /// A process environment variable of the container.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.process_env
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

/// `root.path`, relative to the bundle unless absolute (default `rootfs`).
pub fn rootfs_of(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

/// Loads `<bundle>/config.json` with the caller's rights. Only a regular
/// file is read: the open never blocks (a FIFO swapped in after the runtime
/// read the file would otherwise hold the hook until a writer comes), and
/// the read is bounded.
pub fn load_bundle_config(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let what = path.display().to_string();
    let f = open_regular(&path).map_err(|source| OciError::Read {
        what: what.clone(),
        source,
    })?;
    read_config(f, &what)
}

/// Opens a file for reading without blocking on a FIFO or a device, and
/// only if it is a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// The `GOARCH` spelling of this machine's platform (an OCI image's
/// `platform.architecture`).
pub fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key twice in `config.json`'s annotations: hpcc reads the last
    /// value, as runc's Go `encoding/json` does for a map, so hpcc checks
    /// the value every engine sees (issue 24's sweep).
    #[test]
    fn a_duplicate_annotation_key_reads_the_last_value_as_go_does() {
        let spec = read_config(
            &br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"annotations":{"org.supercontainers.hardware.cpu.optimized.version":"a64fx","org.supercontainers.hardware.cpu.optimized.version":"x86_64"}}"#[..],
            "config.json",
        )
        .unwrap();
        let ctx = LaunchContext::from_bundle(Path::new("/b"), &spec);
        assert_eq!(
            ctx.annotations["org.supercontainers.hardware.cpu.optimized.version"],
            "x86_64"
        );
    }

    #[test]
    fn state_and_config_combine() {
        let state = read_state(
            &br#"{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":42,"bundle":"/b","annotations":{"org.supercontainers.hardware.cpu.optimized.version":"x86_64_v4"}}"#[..],
        )
        .unwrap();
        let spec = read_config(
            &br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["A=1","NVIDIA_VISIBLE_DEVICES=0"]},"annotations":{"a":"b"}}"#[..],
            "config.json",
        )
        .unwrap();
        let ctx = LaunchContext::new(&state, &spec);
        assert_eq!(ctx.id, "c1");
        assert_eq!(ctx.pid, Some(42));
        assert_eq!(ctx.rootfs, PathBuf::from("/b/rootfs"));
        assert_eq!(ctx.annotations.len(), 2);
        assert_eq!(ctx.env("NVIDIA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(ctx.env("NVIDIA"), None);
    }

    #[test]
    fn a_fifo_or_device_as_config_json_is_an_error_not_a_wait() {
        let t = crate::testutil::TempDir::new("oci-fifo");
        let c = std::ffi::CString::new(t.0.join("config.json").to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = load_bundle_config(&t.0).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(t.0.join("config.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", t.0.join("config.json")).unwrap();
        let e = load_bundle_config(&t.0).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn oversized_and_broken_input_is_an_error() {
        let big = vec![b' '; (MAX_STATE_BYTES + 10) as usize];
        assert!(matches!(
            read_state(&big[..]),
            Err(OciError::TooLarge { .. })
        ));
        let e = read_state(&b"{not json"[..]).unwrap_err();
        assert!(e.to_string().contains("OCI state"));
    }
}
