//! `hpcc-runc-wrapper`: the OCI runtime named in Slurm's `oci.conf`
//! `RunTimeRun`, so that `hpcc-hook` runs for every `--container` step.
//!
//! Slurm has no admin hooks directory: slurmstepd copies the user's
//! `config.json` into its spool (`<SlurmdSpoolDir>/oci-job<J>-<S>/`) and runs
//! the runtime on that copy. The wrapper, in that order:
//! 1. checks that the bundle it was given is such a spool directory and that
//!    its `config.json` was written by root (slurmstepd), not by the user;
//! 2. picks the policy: the step's effective policy left by `hpcc_spank.so`
//!    (the user's `--hpcc`/`--hpcc-mpi` folded in) or the admin's file;
//! 3. decides with the same core; a refusal stops here with its one line
//!    (the plugin normally refused earlier: this covers a node without it);
//! 4. adds `hpcc-hook` as the first `prestart` hook (`HPCC_CONFIG` = that
//!    policy) and the plan's environment to `process.env` (a hook cannot
//!    change the environment: the runtime has read it already);
//! 5. replaces the spooled `config.json` atomically and executes runc.
//!
//! Everything but `run`/`create` goes to runc unchanged.

use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::handoff;
use hpcc_common::launch::{self, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{EnvVar, UserRequest};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Exit code: the wrapper could not do its job (bad bundle, bad policy).
pub const EXIT_ERROR: i32 = launch::exit::ERROR;
/// Exit code: bad command line.
pub const EXIT_USAGE: i32 = launch::exit::USAGE;

/// Where `hpcc-hook` is installed by the packages.
pub const DEFAULT_HOOK: &str = "/usr/libexec/hpcc/hpcc-hook";
/// runc, by absolute path (the environment is not trusted to find it).
pub const DEFAULT_RUNC: &str = "/usr/sbin/runc";
/// Where Slurm's configuration lives.
pub const SLURM_CONF: &str = "/etc/slurm/slurm.conf";

/// Why the wrapper refuses to go on.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    /// Bad command line.
    #[error("hpcc-runc-wrapper: {0}")]
    Usage(String),
    /// The bundle is not a Slurm spool directory or its config is not
    /// slurmstepd's.
    #[error("hpcc-runc-wrapper: refusing bundle {bundle}: {reason}")]
    Bundle {
        /// The bundle argument.
        bundle: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other failure.
    #[error("hpcc-runc-wrapper: {0}")]
    Failed(String),
}

/// The wrapper's own options (`--hpcc-*`, before the runtime's arguments)
/// and the runtime's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperArgs {
    /// `--hpcc-hook=PATH`.
    pub hook: PathBuf,
    /// `--hpcc-config=PATH`: the admin policy when the plugin left none.
    pub config: PathBuf,
    /// `--hpcc-runc=PATH`.
    pub runc: PathBuf,
    /// `--hpcc-spool=DIR`: SlurmdSpoolDir (default: read from slurm.conf).
    pub spool: Option<PathBuf>,
    /// `--hpcc-state=DIR`: where the plugin leaves the step policies.
    pub state: PathBuf,
    /// Everything else, for runc.
    pub runtime: Vec<OsString>,
}

impl WrapperArgs {
    /// Parses `argv[1..]`.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<WrapperArgs, WrapperError> {
        let mut out = WrapperArgs {
            hook: DEFAULT_HOOK.into(),
            config: hpcc_config::DEFAULT_PATH.into(),
            runc: DEFAULT_RUNC.into(),
            spool: None,
            state: handoff::DEFAULT_DIR.into(),
            runtime: Vec::new(),
        };
        for a in args {
            let s = a.to_string_lossy();
            if !s.starts_with("--hpcc-") || !out.runtime.is_empty() {
                out.runtime.push(a);
                continue;
            }
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| WrapperError::Usage(format!("{s}: expected --hpcc-KEY=VALUE")))?;
            let p = PathBuf::from(v);
            if !p.is_absolute() {
                return Err(WrapperError::Usage(format!(
                    "{k}={v}: must be an absolute path"
                )));
            }
            match k {
                "--hpcc-hook" => out.hook = p,
                "--hpcc-config" => out.config = p,
                "--hpcc-runc" => out.runc = p,
                "--hpcc-spool" => out.spool = Some(p),
                "--hpcc-state" => out.state = p,
                _ => {
                    return Err(WrapperError::Usage(format!(
                        "unknown option {k} (expected --hpcc-hook, --hpcc-config, --hpcc-runc, --hpcc-spool, --hpcc-state)"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The bundle of a `run`/`create` command, `None` for other commands.
    pub fn bundle(&self) -> Option<PathBuf> {
        let args: Vec<String> = self
            .runtime
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let cmd = args.iter().position(|a| a == "run" || a == "create")?;
        let mut it = args[cmd + 1..].iter();
        while let Some(a) = it.next() {
            if a == "-b" || a == "--bundle" {
                return it.next().map(PathBuf::from);
            }
            if let Some(v) = a
                .strip_prefix("--bundle=")
                .or_else(|| a.strip_prefix("-b="))
            {
                return Some(PathBuf::from(v));
            }
        }
        // runc's default bundle is the current directory.
        std::env::current_dir().ok()
    }
}

/// `SlurmdSpoolDir` from slurm.conf text (last one wins, `%n`/`%h` replaced
/// by the host name), Slurm's default otherwise.
pub fn spool_dir(slurm_conf: &str, hostname: &str) -> PathBuf {
    let mut dir = "/var/spool/slurmd".to_owned();
    for line in slurm_conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("SlurmdSpoolDir") {
                dir = v.trim().to_owned();
            }
        }
    }
    PathBuf::from(dir.replace("%n", hostname).replace("%h", hostname))
}

/// The step id of a spool directory name's step part: a number, or the
/// name slurmstepd uses for its special steps (their ids in `slurm.h`, as
/// `S_JOB_STEPID` gives them to the plugin).
fn step_id(s: &str) -> Option<u32> {
    match s {
        "batch" => Some(0xffff_fffb),
        "extern" => Some(0xffff_fffc),
        "interactive" => Some(0xffff_fffa),
        n => n.parse().ok(),
    }
}

/// Checks that `bundle` is `<spool>/oci-job<J>-<S>` and returns its
/// canonical path, job and step.
pub fn validate_bundle(bundle: &Path, spool: &Path) -> Result<(PathBuf, u32, u32), WrapperError> {
    let bad = |reason: String| WrapperError::Bundle {
        bundle: bundle.display().to_string(),
        reason,
    };
    let real = std::fs::canonicalize(bundle).map_err(|e| bad(format!("cannot resolve it: {e}")))?;
    let spool_real = std::fs::canonicalize(spool).map_err(|e| {
        bad(format!(
            "cannot resolve SlurmdSpoolDir {}: {e}",
            spool.display()
        ))
    })?;
    if real.parent() != Some(spool_real.as_path()) {
        return Err(bad(format!(
            "not a directory of SlurmdSpoolDir {} (only slurmstepd's spooled copies are edited)",
            spool_real.display()
        )));
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ids = name
        .strip_prefix("oci-job")
        .and_then(|r| r.split_once('-'))
        .and_then(|(j, s)| Some((j.parse::<u32>().ok()?, step_id(s)?)));
    let Some((job, step)) = ids else {
        return Err(bad(format!("{name} is not named oci-job<JOB>-<STEP>")));
    };
    Ok((real, job, step))
}

/// Reads the spooled config; it must be a regular file that root wrote
/// (slurmstepd), since the spool directory itself belongs to the user.
pub fn read_spooled(bundle: &Path) -> Result<(Vec<u8>, std::fs::Metadata), WrapperError> {
    let path = bundle.join("config.json");
    let bad = |reason: String| WrapperError::Bundle {
        bundle: bundle.display().to_string(),
        reason,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| bad(format!("cannot open config.json: {e}")))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o002 != 0 {
        return Err(bad(
            "config.json is not a root-owned regular file: it was not written by slurmstepd".into(),
        ));
    }
    let buf = hpcc_common::io::read_bounded(f, oci::MAX_CONFIG_BYTES)
        .map_err(|e| bad(format!("config.json: {e}")))?;
    Ok((buf, meta))
}

/// Adds the hook (first in `prestart`, once) and the environment to a
/// config. Pure: the unit tests check it on JSON.
pub fn edit_config(config: &mut Value, hook: &Path, policy: &Path, env: &[EnvVar]) {
    if !config.is_object() {
        *config = json!({});
    }
    let entry = json!({
        "path": hook,
        "args": ["hpcc-hook", "prestart", format!("--config={}", policy.display())],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    });
    let hooks = config
        .as_object_mut()
        .unwrap()
        .entry("hooks")
        .or_insert_with(|| json!({}));
    if !hooks.is_object() {
        *hooks = json!({});
    }
    let pre = hooks
        .as_object_mut()
        .unwrap()
        .entry("prestart")
        .or_insert_with(|| json!([]));
    if !pre.is_array() {
        *pre = json!([]);
    }
    let list = pre.as_array_mut().unwrap();
    list.retain(|h| h.get("path").and_then(Value::as_str) != hook.to_str());
    list.insert(0, entry);
    if env.is_empty() {
        return;
    }
    let process = config
        .as_object_mut()
        .unwrap()
        .entry("process")
        .or_insert_with(|| json!({}));
    if !process.is_object() {
        return;
    }
    let penv = process
        .as_object_mut()
        .unwrap()
        .entry("env")
        .or_insert_with(|| json!([]));
    if !penv.is_array() {
        *penv = json!([]);
    }
    let list = penv.as_array_mut().unwrap();
    for v in env {
        let prefix = format!("{}=", v.name);
        list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
        list.push(json!(format!("{}={}", v.name, v.value)));
    }
}

/// Writes the new config next to the old one and renames it over, keeping
/// owner (when root) and mode.
fn replace_config(bundle: &Path, config: &Value, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let body = serde_json::to_vec(config).map_err(std::io::Error::other)?;
    hpcc_common::io::write_atomic(
        &bundle.join("config.json"),
        &body,
        hpcc_common::io::FileMode {
            mode: meta.mode() & 0o7777,
            owner: nix_is_root().then(|| (meta.uid(), meta.gid())),
        },
    )
}

fn nix_is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What `main` should do after [`prepare`].
#[derive(Debug)]
pub enum Next {
    /// Execute the runtime with these arguments.
    Exec(PathBuf, Vec<OsString>),
    /// Refused: print the line, exit with the code.
    Exit(i32, String),
}

/// Everything but the final exec.
pub fn prepare(args: &WrapperArgs, slurm_conf: &str, hostname: &str) -> Next {
    let Some(bundle) = args.bundle() else {
        return Next::Exec(args.runc.clone(), args.runtime.clone());
    };
    match prepare_run(args, &bundle, slurm_conf, hostname) {
        Ok(None) => Next::Exec(args.runc.clone(), args.runtime.clone()),
        Ok(Some(refused)) => Next::Exit(
            refused.exit_code(),
            refused.refusal().unwrap_or_default().to_owned(),
        ),
        Err(e) => Next::Exit(EXIT_ERROR, e.to_string()),
    }
}

/// `Ok(None)`: the config is edited, run it. `Ok(Some(outcome))`: refused.
fn prepare_run(
    args: &WrapperArgs,
    bundle: &Path,
    slurm_conf: &str,
    hostname: &str,
) -> Result<Option<Outcome>, WrapperError> {
    let spool = args
        .spool
        .clone()
        .unwrap_or_else(|| spool_dir(slurm_conf, hostname));
    let (bundle, job, step) = validate_bundle(bundle, &spool)?;
    let (bytes, meta) = read_spooled(&bundle)?;
    // The plugin's per-step policy must be root's; anything else is ignored
    // and the admin's policy applies (never looser than the plugin's).
    let policy_path =
        handoff::trusted(&args.state, job, step, 0).unwrap_or_else(|| args.config.clone());
    let policy = match launch::load_policy(&policy_path, None) {
        Ok(p) => p,
        Err(refused) => return Ok(Some(refused)),
    };
    let mut config: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let e = LaunchError::input(e);
            return Ok(match launch::failed(&policy, &policy_path, None, None, e) {
                Outcome::StartUnchecked(_) => None,
                refused => Some(refused),
            });
        }
    };
    let node = NodeFingerprint::cached(&policy);
    let planned = oci::read_config(&bytes[..], "the spooled config.json")
        .map_err(LaunchError::from)
        .and_then(|spec| {
            let ctx = LaunchContext::from_bundle(&bundle, &spec);
            launch::decide(&ctx, &node, &policy, &UserRequest::default())
        });
    let env = match launch::outcome(&policy, &policy_path, None, Some(&node.hostname), planned) {
        Outcome::Start(plan) => plan.tweaks.env,
        Outcome::StartUnchecked(_) => Vec::new(),
        refused => return Ok(Some(refused)),
    };
    edit_config(&mut config, &args.hook, &policy_path, &env);
    replace_config(&bundle, &config, &meta).map_err(|e| {
        WrapperError::Failed(format!(
            "cannot write {}/config.json: {e}",
            bundle.display()
        ))
    })?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_own_options_then_passes_the_rest() {
        let a = WrapperArgs::parse(os(&[
            "--hpcc-hook=/h",
            "--hpcc-runc=/usr/bin/runc",
            "--root=/run/slurm-oci",
            "run",
            "n.u.1.0.0",
            "-b",
            "/spool/oci-job00001-00000/",
        ]))
        .unwrap();
        assert_eq!(a.hook, PathBuf::from("/h"));
        assert_eq!(a.runc, PathBuf::from("/usr/bin/runc"));
        assert_eq!(a.runtime.len(), 5);
        assert_eq!(
            a.bundle(),
            Some(PathBuf::from("/spool/oci-job00001-00000/"))
        );
        let k = WrapperArgs::parse(os(&["--root=/x", "kill", "-a", "id"])).unwrap();
        assert_eq!(k.bundle(), None);
        assert!(WrapperArgs::parse(os(&["--hpcc-hook=rel"])).is_err());
        assert!(WrapperArgs::parse(os(&["--hpcc-bogus=/x"])).is_err());
        let b = WrapperArgs::parse(os(&["run", "--bundle=/b", "id"])).unwrap();
        assert_eq!(b.bundle(), Some(PathBuf::from("/b")));
    }

    #[test]
    fn spool_dir_from_slurm_conf() {
        assert_eq!(
            spool_dir("# x\nSlurmdSpoolDir=/tmp/slurm/spool # c\n", "n1"),
            PathBuf::from("/tmp/slurm/spool")
        );
        assert_eq!(
            spool_dir("slurmdspooldir = /var/spool/%n\n", "n1"),
            PathBuf::from("/var/spool/n1")
        );
        assert_eq!(spool_dir("", "n1"), PathBuf::from("/var/spool/slurmd"));
    }

    #[test]
    fn only_spool_bundles_are_accepted() {
        let root = std::env::temp_dir().join(format!("hpcc-wrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = root.join("spool");
        std::fs::create_dir_all(spool.join("oci-job00012-00003")).unwrap();
        std::fs::create_dir_all(root.join("user/oci-job00012-00003")).unwrap();
        std::fs::create_dir_all(spool.join("other")).unwrap();
        std::os::unix::fs::symlink(
            root.join("user/oci-job00012-00003"),
            spool.join("oci-job00013-00000"),
        )
        .unwrap();
        let (_, j, s) = validate_bundle(&spool.join("oci-job00012-00003/"), &spool).unwrap();
        assert_eq!((j, s), (12, 3));
        std::fs::create_dir_all(spool.join("oci-job00012-batch")).unwrap();
        let (_, _, s) = validate_bundle(&spool.join("oci-job00012-batch"), &spool).unwrap();
        assert_eq!(s, 0xffff_fffb);
        assert!(validate_bundle(&root.join("user/oci-job00012-00003"), &spool).is_err());
        assert!(validate_bundle(&spool.join("other"), &spool).is_err());
        // A symlink in the spool that leads out of it is resolved and refused.
        assert!(validate_bundle(&spool.join("oci-job00013-00000"), &spool).is_err());
        assert!(validate_bundle(&spool.join("oci-job00012-00003/../other"), &spool).is_err());
        // The config must be root's (slurmstepd's).
        std::fs::write(spool.join("oci-job00012-00003/config.json"), "{}").unwrap();
        let r = read_spooled(&spool.join("oci-job00012-00003"));
        assert_eq!(r.is_ok(), nix_is_root());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hook_goes_first_once_and_env_is_merged() {
        let mut c = json!({
            "process": {"env": ["PATH=/bin", "FI_PROVIDER_PATH=/old"]},
            "hooks": {"prestart": [{"path": "/user/hook"}, {"path": "/usr/libexec/hpcc/hpcc-hook"}]}
        });
        let env = vec![EnvVar {
            name: "FI_PROVIDER_PATH".into(),
            value: "/usr/lib/x86_64-linux-gnu/libfabric".into(),
            reason: "test".into(),
        }];
        edit_config(
            &mut c,
            Path::new(DEFAULT_HOOK),
            Path::new("/run/hpcc/slurm/1.0.toml"),
            &env,
        );
        let pre = c["hooks"]["prestart"].as_array().unwrap();
        assert_eq!(pre.len(), 2);
        assert_eq!(pre[0]["path"], DEFAULT_HOOK);
        assert_eq!(pre[0]["args"][2], "--config=/run/hpcc/slurm/1.0.toml");
        assert_eq!(pre[1]["path"], "/user/hook");
        let penv = c["process"]["env"].as_array().unwrap();
        assert_eq!(
            penv,
            &vec![
                json!("PATH=/bin"),
                json!("FI_PROVIDER_PATH=/usr/lib/x86_64-linux-gnu/libfabric")
            ]
        );
        let mut empty = json!({});
        edit_config(&mut empty, Path::new("/h"), Path::new("/p"), &[]);
        assert_eq!(empty["hooks"]["prestart"][0]["path"], "/h");
    }
}
