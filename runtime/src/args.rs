//! `hpcc-runtime`'s command line: its own `--hpcc-*` options first, then
//! the real runtime's arguments, passed on unchanged except where a launch
//! needs an fd preserved (`--preserve-fds`).
//!
//! The parsing is by hand, as `nvidia-container-runtime` does: the
//! runtime's arguments (global options, the command, its options) are
//! runc's and crun's, including `--help` and `--version`, which engines call
//! on the runtime and which must reach the real one. [`command`] describes
//! hpcc's own options with clap for the man page.
//!
//! Only `create` and `run` are acted on; the rest (`start`, `state`,
//! `kill`, `delete`, `exec`, `features`, ...) goes to the real runtime as
//! is. The command word is found after the runtime's global options (runc
//! and crun: `--root DIR`, `--log FILE`, `--log-format F`, `--log-level L`,
//! `--criu PATH`, `--rootless BOOL`, `--cgroup-manager M`, flags).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A command line `hpcc-runtime` does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An `--hpcc-*` option that needs a value has none.
    #[error("{0}: expected --hpcc-KEY=VALUE")]
    NoValue(String),
    /// An unknown `--hpcc-*` option.
    #[error("unknown option {0} (expected --hpcc-config, --hpcc-runtime, --hpcc-slurm, --hpcc-spool, --hpcc-state, --hpcc-node)")]
    Unknown(String),
    /// A path that must be absolute.
    #[error("{option}={value}: must be an absolute path")]
    Relative {
        /// The option.
        option: String,
        /// Its value.
        value: String,
    },
    /// A node name with characters Slurm's never has.
    #[error("--hpcc-node={0}: not a node name")]
    Node(String),
    /// A launch option hpcc-runtime does not know: the real runtime might
    /// read it as another bundle or config (crun takes `--bun=DIR`,
    /// `-bDIR`, `--config FILE`), which hpcc would then not have checked.
    #[error("`{command}` option {option:?}: not one hpcc-runtime knows, refused so that the runtime cannot start a config hpcc did not check")]
    LaunchOption {
        /// `create`, `run` or `restore`.
        command: String,
        /// The option as given.
        option: String,
    },
    /// A global option of the runtime that hpcc-runtime does not know: it
    /// could not tell whether it takes a value, and so which word is the
    /// command.
    #[error("runtime option {0:?} before the command: not one hpcc-runtime knows (runc and crun's --root, --log, --log-format, --log-level, --criu, --rootless, --cgroup-manager, --debug, --systemd-cgroup), refused so that a launch cannot pass unchecked")]
    GlobalOption(String),
    /// A launch without `--bundle` whose current directory cannot be read.
    #[error("`{command}` without --bundle, and the current directory cannot be read")]
    NoBundle {
        /// `create`, `run` or `restore`.
        command: String,
    },
    /// A launch with more than one container id.
    #[error("`{command}` with more than one container id ({first:?}, {second:?})")]
    TwoIds {
        /// `create`, `run` or `restore`.
        command: String,
        /// The first id.
        first: String,
        /// The second.
        second: String,
    },
}

/// `hpcc-runtime`'s own options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--hpcc-config=PATH`: the policy (default `/etc/hpcc/hook.toml`).
    pub config: Option<PathBuf>,
    /// `--hpcc-runtime=PATH`: the real runtime (default: the policy's
    /// `[runtime] path`).
    pub runtime: Option<PathBuf>,
    /// `--hpcc-slurm`: the Slurm mode (oci.conf `RunTimeRun`): only
    /// slurmstepd's spooled configs are edited, MPI steps are wired.
    pub slurm: bool,
    /// `--hpcc-spool=DIR`: SlurmdSpoolDir (default: from slurm.conf).
    pub spool: Option<PathBuf>,
    /// `--hpcc-state=DIR`: where the SPANK plugin leaves its step files.
    pub state: Option<PathBuf>,
    /// `--hpcc-node=NAME`: this node's Slurm name (oci.conf `%n`).
    pub node: Option<String>,
}

/// The runtime command hpcc acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// `create` or `run`.
    pub command: String,
    /// Index of the command word in the runtime arguments.
    pub at: usize,
    /// The bundle (`--bundle`/`-b`, else the current directory).
    pub bundle: PathBuf,
    /// The container id (the last argument).
    pub id: String,
    /// `--preserve-fds` already given.
    pub preserve_fds: u32,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Ours.
    pub options: Options,
    /// The real runtime's.
    pub runtime: Vec<OsString>,
}

/// Global options of runc and crun that take a separate value.
const VALUED_GLOBALS: &[&str] = &[
    "--root",
    "--log",
    "--log-format",
    "--log-level",
    "--criu",
    "--rootless",
    "--cgroup-manager",
];

/// Global flags of runc and crun (no value). Any other global option is
/// refused: runc also reads `-root DIR`, crun any unambiguous prefix
/// (`--roo DIR`), and hpcc, not knowing that the option takes a value,
/// would take `DIR` for the command word and let a `run` through unchecked.
const GLOBAL_FLAGS: &[&str] = &[
    "--debug",
    "--systemd-cgroup",
    "--help",
    "-h",
    "--version",
    "-v",
    "-V",
    "--usage",
    "-?",
];

/// `create`/`run`/`restore` options of runc and crun that take a value.
const VALUED_LAUNCH: &[&str] = &[
    "--bundle",
    "-b",
    "--pid-file",
    "--console-socket",
    "--preserve-fds",
    // restore (checkpoints: podman container restore)
    "--image-path",
    "--work-path",
    "--parent-path",
    "--manage-cgroups-mode",
    "--empty-ns",
    "--lsm-profile",
    "--lsm-mount-context",
];

/// `create`/`run`/`restore` flags of runc and crun. Anything else is
/// refused: the launch must run exactly the bundle that was checked.
const LAUNCH_FLAGS: &[&str] = &[
    "--detach",
    "-d",
    "--keep",
    "--no-pivot",
    "--no-new-keyring",
    "--no-subreaper",
    // restore
    "--tcp-established",
    "--ext-unix-sk",
    "--shell-job",
    "--file-locks",
    "--auto-dedup",
    "--lazy-pages",
];

fn absolute(option: &str, value: &str) -> Result<PathBuf, UsageError> {
    let p = PathBuf::from(value);
    if !p.is_absolute() {
        return Err(UsageError::Relative {
            option: option.into(),
            value: value.into(),
        });
    }
    Ok(p)
}

impl Args {
    /// Parses `argv[1..]`: `--hpcc-*` options first, the rest is the
    /// runtime's.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, UsageError> {
        let mut options = Options::default();
        let mut runtime = Vec::new();
        for a in args {
            let s = a.to_string_lossy().into_owned();
            if !runtime.is_empty() || !s.starts_with("--hpcc-") {
                runtime.push(a);
                continue;
            }
            if s == "--hpcc-slurm" {
                options.slurm = true;
                continue;
            }
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| UsageError::NoValue(s.clone()))?;
            match k {
                "--hpcc-config" => options.config = Some(absolute(k, v)?),
                "--hpcc-runtime" => options.runtime = Some(absolute(k, v)?),
                "--hpcc-spool" => options.spool = Some(absolute(k, v)?),
                "--hpcc-state" => options.state = Some(absolute(k, v)?),
                "--hpcc-node" => {
                    if v.is_empty()
                        || v.len() > 255
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(UsageError::Node(v.into()));
                    }
                    options.node = Some(v.into());
                }
                _ => return Err(UsageError::Unknown(k.into())),
            }
        }
        Ok(Args { options, runtime })
    }

    /// The `create`/`run`/`restore` command of these arguments, `None` for
    /// any other (and for `--help`). A launch option hpcc does not know, or
    /// a second id, is an error: the runtime must start exactly the bundle
    /// hpcc checked.
    pub fn launch(&self) -> Result<Option<Launch>, UsageError> {
        let args: Vec<String> = self
            .runtime
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if VALUED_GLOBALS.contains(&a.as_str()) {
                i += 2;
                continue;
            }
            // `--root=DIR`, and Go's `--debug=true` for a flag.
            let known = GLOBAL_FLAGS.contains(&a.as_str())
                || a.split_once('=')
                    .is_some_and(|(k, _)| VALUED_GLOBALS.contains(&k) || GLOBAL_FLAGS.contains(&k));
            if known {
                i += 1;
                continue;
            }
            if a.starts_with('-') {
                // Which word is the command is unknown from here. A launch
                // word anywhere after must not pass unchecked; anything
                // else (state, kill, delete with another runtime's options)
                // goes to the runtime: a container must stay deletable.
                let launch_later = args[i + 1..]
                    .iter()
                    .any(|w| matches!(w.as_str(), "create" | "run" | "restore"));
                if launch_later {
                    return Err(UsageError::GlobalOption(a.clone()));
                }
                return Ok(None);
            }
            break;
        }
        let at = i;
        let Some(command) = args.get(at) else {
            return Ok(None);
        };
        if !matches!(command.as_str(), "create" | "run" | "restore") {
            return Ok(None);
        }
        let rest = &args[at + 1..];
        let unknown = |option: &str| UsageError::LaunchOption {
            command: command.clone(),
            option: option.to_owned(),
        };
        let mut bundle = None;
        let mut id: Option<String> = None;
        let mut preserve_fds = 0;
        let mut j = 0;
        while j < rest.len() {
            let a = &rest[j];
            j += 1;
            if a == "--" {
                return Err(unknown(a));
            }
            // Help only as a flag: `--pid-file --help` is a value, and the
            // runtime would launch.
            if a == "--help" || a == "-h" {
                return Ok(None);
            }
            if !a.starts_with('-') || a == "-" {
                if let Some(first) = &id {
                    return Err(UsageError::TwoIds {
                        command: command.clone(),
                        first: first.clone(),
                        second: a.clone(),
                    });
                }
                id = Some(a.clone());
                continue;
            }
            // Long options may carry their value after '='; the short -b
            // its value attached (-b/x, as crun's argp takes it).
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                // Only an absolute path: Go's flag package reads `-b=/x`
                // and `-bundle=/x` as the bundle /x, which hpcc would take
                // for `=/x` or `undle=/x`.
                _ => match a.strip_prefix("-b") {
                    Some(v) if v.starts_with('/') && !a.starts_with("--") => {
                        ("-b", Some(v.to_owned()))
                    }
                    _ => (a.as_str(), None),
                },
            };
            if LAUNCH_FLAGS.contains(&flag) {
                if inline.is_some() {
                    return Err(unknown(a));
                }
                continue;
            }
            if !VALUED_LAUNCH.contains(&flag) {
                return Err(unknown(a));
            }
            let v = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = rest.get(j) else {
                        return Err(unknown(a));
                    };
                    j += 1;
                    v.clone()
                }
            };
            match flag {
                "--bundle" | "-b" => bundle = Some(PathBuf::from(v)),
                "--preserve-fds" => preserve_fds = v.parse().map_err(|_| unknown(a))?,
                _ => {}
            }
        }
        let Some(id) = id else {
            // runc prints its own usage error for a missing id.
            return Ok(None);
        };
        Ok(Some(Launch {
            command: command.clone(),
            at,
            // runc's default bundle is the current directory.
            bundle: match bundle {
                Some(b) => b,
                None => std::env::current_dir().map_err(|_| UsageError::NoBundle {
                    command: command.clone(),
                })?,
            },
            id,
            preserve_fds,
        }))
    }

    /// The runtime's `--log FILE` (global option), where containerd's and
    /// docker's runc shim look for the error of a failed `create`.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.global("--log")
    }

    /// The value of a global option of the runtime (`--root DIR` or
    /// `--root=DIR`), before the command word.
    pub fn global(&self, name: &str) -> Option<PathBuf> {
        let args: Vec<String> = self
            .runtime
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let prefix = format!("{name}=");
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if let Some(v) = a.strip_prefix(&prefix) {
                return Some(PathBuf::from(v));
            }
            if a == name {
                return args.get(i + 1).map(PathBuf::from);
            }
            if VALUED_GLOBALS.contains(&a.as_str()) {
                i += 2;
                continue;
            }
            if !a.starts_with('-') {
                return None;
            }
            i += 1;
        }
        None
    }

    /// The runtime's `--root` (where it keeps its containers' state).
    pub fn runtime_root(&self) -> Option<PathBuf> {
        self.global("--root")
    }

    /// The container id of a `delete` command, `None` for any other.
    pub fn deleted(&self) -> Option<String> {
        let args: Vec<String> = self
            .runtime
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut i = 0;
        while i < args.len() && args[i].starts_with('-') {
            i += if VALUED_GLOBALS.contains(&args[i].as_str()) {
                2
            } else {
                1
            };
        }
        if args.get(i).map(String::as_str) != Some("delete") {
            return None;
        }
        args[i + 1..].iter().rfind(|a| !a.starts_with('-')).cloned()
    }

    /// The runtime arguments with the launch's bundle replaced by
    /// `bundle` (every `--bundle`/`-b` form dropped, `--bundle DIR` put
    /// right after the command word). runc chdirs into the bundle before
    /// it opens `--console-socket`, `--image-path` and `--work-path`, so a
    /// relative one of those is made absolute against the original bundle
    /// (crun opens them from its own working directory: left alone).
    pub fn with_bundle(&self, launch: &Launch, bundle: &Path, runtime: &Path) -> Vec<OsString> {
        let runc_like = !runtime
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("crun"));
        let original =
            std::path::absolute(&launch.bundle).unwrap_or_else(|_| launch.bundle.clone());
        let mut out = Vec::with_capacity(self.runtime.len() + 4);
        // runc's `restore` looks for the checkpoint in `<bundle>/checkpoint`
        // when no `--image-path` is given: keep that the user's bundle.
        let restore_default = runc_like
            && launch.command == "restore"
            && !self.runtime[launch.at + 1..]
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--image-path"));
        let mut i = 0;
        while i < self.runtime.len() {
            let a = &self.runtime[i];
            i += 1;
            if i - 1 <= launch.at {
                out.push(a.clone());
                if i - 1 == launch.at {
                    out.push(OsString::from("--bundle"));
                    out.push(bundle.as_os_str().to_owned());
                    if restore_default {
                        out.push(OsString::from("--image-path"));
                        out.push(original.join("checkpoint").into_os_string());
                    }
                }
                continue;
            }
            let s = a.to_string_lossy();
            if s == "--bundle" || s == "-b" {
                i += 1;
                continue;
            }
            if s.starts_with("--bundle=") || (s.starts_with("-b/") && !s.starts_with("--")) {
                continue;
            }
            let relative_to_bundle = ["--console-socket", "--image-path", "--work-path"];
            if runc_like && relative_to_bundle.contains(&s.as_ref()) {
                out.push(a.clone());
                if let Some(v) = self.runtime.get(i) {
                    let p = Path::new(v);
                    out.push(if p.is_absolute() {
                        v.clone()
                    } else {
                        original.join(p).into_os_string()
                    });
                    i += 1;
                }
                continue;
            }
            if let Some((k, v)) = s.split_once('=') {
                if runc_like && relative_to_bundle.contains(&k) && !v.starts_with('/') {
                    out.push(OsString::from(format!(
                        "{k}={}",
                        original.join(v).display()
                    )));
                    continue;
                }
            }
            out.push(a.clone());
        }
        out
    }

    /// The runtime arguments with `--preserve-fds=N` set on the launch
    /// command (fds 3..3+N-1 pass into the container).
    pub fn with_preserved_fds(&self, launch: &Launch, n: u32) -> Vec<OsString> {
        let mut out = Vec::with_capacity(self.runtime.len() + 1);
        let mut skip_next = false;
        for (i, a) in self.runtime.iter().enumerate() {
            if skip_next {
                skip_next = false;
                continue;
            }
            if i > launch.at {
                let s = a.to_string_lossy();
                if s == "--preserve-fds" {
                    skip_next = true;
                    continue;
                }
                if s.starts_with("--preserve-fds=") {
                    continue;
                }
            }
            out.push(a.clone());
            if i == launch.at {
                out.push(OsString::from(format!("--preserve-fds={n}")));
            }
        }
        out
    }
}

/// hpcc-runtime's options as a clap command, for its man page
/// (`hpcc-runtime(8)`).
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let opt = |name: &'static str, value: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name(value)
            .require_equals(true)
            .action(ArgAction::Set)
            .help(help)
    };
    clap::Command::new("hpcc-runtime")
        .version(env!("CARGO_PKG_VERSION"))
        .about("hpcc OCI runtime shim: the launch decision as edits of config.json, then runc or crun")
        .long_about(
            "On create and run, hpcc-runtime takes the launch decision (the same core as hpcc-hook and \
the SPANK plugin), writes the plan into the bundle's config.json (read-only bind mounts of host \
libraries, the container's linker cache, devices with their cgroup rules, environment) and \
executes the real runtime. A refusal exits 3 with one line on stderr (and in the runtime's --log \
file). Every other command goes to the real runtime unchanged. With --hpcc-slurm (oci.conf \
RunTimeRun) only slurmstepd's spooled configs are edited, the decision is taken under the step \
policy the SPANK plugin left, and MPI steps are wired (PMI-2 socket, PMIx, the node's namespaces).",
        )
        .override_usage("hpcc-runtime [--hpcc-KEY=VALUE]... RUNTIME-ARGS...")
        .arg(opt("hpcc-config", "PATH", "The policy [default: /etc/hpcc/hook.toml]"))
        .arg(opt("hpcc-runtime", "PATH", "The real runtime, absolute [default: the policy's [runtime] path]"))
        .arg(
            Arg::new("hpcc-slurm")
                .long("hpcc-slurm")
                .action(ArgAction::SetTrue)
                .help("Slurm mode (oci.conf RunTimeRun)"),
        )
        .arg(opt("hpcc-spool", "DIR", "Slurm mode: SlurmdSpoolDir [default: from slurm.conf]"))
        .arg(opt("hpcc-state", "DIR", "Slurm mode: the SPANK plugin's step files [default: /run/hpcc/slurm]"))
        .arg(opt("hpcc-node", "NAME", "Slurm mode: this node's name (give %n)"))
        .arg(
            Arg::new("RUNTIME-ARGS")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .help("The real runtime's arguments, e.g. --root /run/runc run --bundle B ID"),
        )
        .after_help(
            "Exit status: the real runtime's once it runs; 2 bad command line; 3 refused by policy; \
4 hpcc failed (on_error = \"refuse\").\n\nExample (/etc/slurm/oci.conf):\n  \
RunTimeRun=\"exec /usr/libexec/hpcc/hpcc-runtime --hpcc-slurm --hpcc-node=%n --rootless=true \
--root=/run/user-oci/%u run %n.%u.%j.%s.%t -b %b\"",
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn with_bundle(argv: &[&str], runtime: &str) -> Vec<String> {
        let a = Args::parse(os(argv)).unwrap();
        let l = a.launch().unwrap().unwrap();
        a.with_bundle(&l, Path::new("/run/hpcc/bundles/k"), Path::new(runtime))
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_private_bundle_replaces_every_form_of_the_users() {
        for argv in [
            &["--root", "/r", "run", "--bundle", "/b", "id"][..],
            &["--root", "/r", "run", "-b", "/b", "id"],
            &["--root", "/r", "run", "--bundle=/b", "id"],
            &["--root", "/r", "run", "-b/b", "id"],
        ] {
            assert_eq!(
                with_bundle(argv, "/usr/sbin/runc"),
                [
                    "--root",
                    "/r",
                    "run",
                    "--bundle",
                    "/run/hpcc/bundles/k",
                    "id"
                ],
                "{argv:?}"
            );
        }
        // No bundle given (the current directory): one is added.
        assert_eq!(
            with_bundle(&["create", "--pid-file", "p", "id"], "/usr/sbin/runc"),
            [
                "create",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--pid-file",
                "p",
                "id"
            ]
        );
        // runc opens the console socket after its chdir into the bundle:
        // a relative one stays the one in the user's bundle.
        assert_eq!(
            with_bundle(
                &["create", "-b", "/b", "--console-socket", "s.sock", "id"],
                "/usr/sbin/runc"
            ),
            [
                "create",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--console-socket",
                "/b/s.sock",
                "id"
            ]
        );
        assert_eq!(
            with_bundle(&["create", "-b", "/b", "--console-socket=s", "id"], "runc"),
            [
                "create",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--console-socket=/b/s",
                "id"
            ]
        );
        // restore without --image-path: runc's default, the user's bundle.
        assert_eq!(
            with_bundle(&["restore", "-b", "/b", "id"], "/usr/sbin/runc"),
            [
                "restore",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--image-path",
                "/b/checkpoint",
                "id"
            ]
        );
        assert_eq!(
            with_bundle(&["restore", "-b", "/b", "--image-path", "/c", "id"], "runc"),
            [
                "restore",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--image-path",
                "/c",
                "id"
            ]
        );
        // crun opens it from its own working directory.
        assert_eq!(
            with_bundle(
                &["create", "-b", "/b", "--console-socket", "s.sock", "id"],
                "/usr/bin/crun"
            ),
            [
                "create",
                "--bundle",
                "/run/hpcc/bundles/k",
                "--console-socket",
                "s.sock",
                "id"
            ]
        );
    }

    #[test]
    fn delete_and_root_are_read_from_the_runtimes_arguments() {
        let a = Args::parse(os(&["--root", "/r", "delete", "--force", "c1"])).unwrap();
        assert_eq!(a.deleted().as_deref(), Some("c1"));
        assert_eq!(a.runtime_root(), Some(PathBuf::from("/r")));
        let a = Args::parse(os(&["--root=/q", "--debug", "delete", "c2"])).unwrap();
        assert_eq!(a.deleted().as_deref(), Some("c2"));
        assert_eq!(a.runtime_root(), Some(PathBuf::from("/q")));
        let a = Args::parse(os(&["kill", "c3", "KILL"])).unwrap();
        assert_eq!(a.deleted(), None);
        assert_eq!(a.runtime_root(), None);
        // A container named "delete" is not a delete.
        let a = Args::parse(os(&["state", "delete"])).unwrap();
        assert_eq!(a.deleted(), None);
    }

    #[test]
    fn own_options_first_then_the_runtime_unchanged() {
        let a = Args::parse(os(&[
            "--hpcc-config=/etc/hpcc/hook.toml",
            "--hpcc-slurm",
            "--hpcc-node=n2",
            "--root=/run/slurm-oci",
            "run",
            "n2.u.1.0.0",
            "-b",
            "/spool/oci-job00001-00000/",
        ]))
        .unwrap();
        assert!(a.options.slurm);
        assert_eq!(a.options.node.as_deref(), Some("n2"));
        assert_eq!(a.runtime.len(), 5);
        let l = a.launch().unwrap().unwrap();
        assert_eq!(l.command, "run");
        assert_eq!(l.id, "n2.u.1.0.0");
        assert_eq!(l.bundle, PathBuf::from("/spool/oci-job00001-00000/"));
        // An --hpcc- lookalike after the runtime's arguments is theirs.
        let b = Args::parse(os(&["state", "--hpcc-x"])).unwrap();
        assert_eq!(b.runtime.len(), 2);
        assert!(Args::parse(os(&["--hpcc-config=rel"])).is_err());
        assert!(Args::parse(os(&["--hpcc-bogus=/x"])).is_err());
        assert!(Args::parse(os(&["--hpcc-node=a/b"])).is_err());
        assert!(Args::parse(os(&["--hpcc-config"])).is_err());
    }

    #[test]
    fn podman_and_crun_command_lines() {
        // conmon's create: global options with separate values.
        let a = Args::parse(os(&[
            "--root",
            "/run/runc",
            "--log",
            "/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/var/lib/c/b",
            "--pid-file",
            "/x/pid",
            "--console-socket=/x/s",
            "abc123",
        ]))
        .unwrap();
        let l = a.launch().unwrap().unwrap();
        assert_eq!((l.command.as_str(), l.id.as_str()), ("create", "abc123"));
        assert_eq!(l.bundle, PathBuf::from("/var/lib/c/b"));
        for other in [
            &["--root=/x", "kill", "abc", "KILL"][..],
            &["state", "abc"],
            &["features"],
        ] {
            assert_eq!(
                Args::parse(os(other)).unwrap().launch(),
                Ok(None),
                "{other:?}"
            );
        }
    }

    #[test]
    fn launch_options_hpcc_does_not_know_are_refused() {
        // crun reads these as another bundle or config: hpcc would check
        // one config and the runtime start another.
        for bad in [
            &["run", "--bun=/x", "id"][..],
            &["create", "-f", "other.json", "id"],
            &["create", "--config=other.json", "id"],
            &["run", "--weird", "id"],
            &["run", "-db", "/x", "id"],
            &["create", "--preserve-fds=many", "id"],
            &["create", "--bundle"],
        ] {
            assert!(
                matches!(
                    Args::parse(os(bad)).unwrap().launch(),
                    Err(UsageError::LaunchOption { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Args::parse(os(&["run", "a", "b"])).unwrap().launch(),
            Err(UsageError::TwoIds { .. })
        ));
        // Help given as an option's value is a value: the runtime launches,
        // so hpcc checks that bundle.
        for (args, bundle) in [
            (
                &["create", "--bundle", "/b", "--pid-file", "--help", "id"][..],
                "/b",
            ),
            (
                &["create", "--pid-file", "-h", "-b", "/evil", "id"],
                "/evil",
            ),
        ] {
            let l = Args::parse(os(args)).unwrap().launch().unwrap();
            assert_eq!(l.map(|l| l.bundle), Some(PathBuf::from(bundle)), "{args:?}");
        }
        // Go's single-dash forms of the bundle are not what they seem.
        for bad in [&["run", "-b=/x", "id"][..], &["run", "-bundle=/x", "id"]] {
            assert!(Args::parse(os(bad)).unwrap().launch().is_err(), "{bad:?}");
        }
        // Global options whose value hpcc cannot place before a launch
        // word: runc's single-dash long form, crun's prefixes, anything
        // unknown.
        for bad in [
            &["-root", "/x", "run", "-b", "/b", "id"][..],
            &["--roo", "/x", "run", "id"],
            &["--weird", "create", "id"],
            &["-root=/x", "run", "id"],
        ] {
            assert!(
                matches!(
                    Args::parse(os(bad)).unwrap().launch(),
                    Err(UsageError::GlobalOption(_))
                ),
                "{bad:?}"
            );
        }
        // Without a launch word the runtime gets them: a container stays
        // deletable whatever options an admin's runtime takes.
        for ok in [
            &["--weird", "delete", "id"][..],
            &[
                "--debug=true",
                "--systemd-cgroup=true",
                "delete",
                "--force",
                "id",
            ],
            &["--platform-flag", "x", "state", "id"],
        ] {
            assert_eq!(Args::parse(os(ok)).unwrap().launch(), Ok(None), "{ok:?}");
        }
        assert!(Args::parse(os(&["--debug=true", "run", "-b", "/b", "id"]))
            .unwrap()
            .launch()
            .unwrap()
            .is_some());
        // What engines pass is known.
        let l = Args::parse(os(&[
            "--debug",
            "--log-format=json",
            "--log",
            "/l",
            "--root=/r",
            "--systemd-cgroup",
            "--cgroup-manager=systemd",
            "create",
            "--bundle",
            "/b",
            "id",
        ]))
        .unwrap()
        .launch()
        .unwrap()
        .unwrap();
        assert_eq!((l.at, l.id.as_str()), (7, "id"));
        // Attached short value and restore are launches.
        let l = Args::parse(os(&["run", "-b/x", "-d", "id"]))
            .unwrap()
            .launch()
            .unwrap()
            .unwrap();
        assert_eq!(l.bundle, PathBuf::from("/x"));
        let l = Args::parse(os(&[
            "restore",
            "--image-path",
            "/ck",
            "--bundle=/x",
            "--tcp-established",
            "id",
        ]))
        .unwrap()
        .launch()
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.command.as_str(), l.bundle.as_path()),
            ("restore", std::path::Path::new("/x"))
        );
        // Help goes to the runtime.
        assert_eq!(
            Args::parse(os(&["run", "--help"])).unwrap().launch(),
            Ok(None)
        );
    }

    #[test]
    fn preserved_fds_are_set_once_on_the_launch_command() {
        let a = Args::parse(os(&[
            "--root=/r",
            "run",
            "--preserve-fds",
            "2",
            "-b",
            "/b",
            "id",
        ]))
        .unwrap();
        let l = a.launch().unwrap().unwrap();
        assert_eq!(l.preserve_fds, 2);
        let v: Vec<String> = a
            .with_preserved_fds(&l, 3)
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            v,
            ["--root=/r", "run", "--preserve-fds=3", "-b", "/b", "id"]
        );
    }
}
