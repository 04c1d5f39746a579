//! `hpcc doctor`: checks an installation and says, in words, what is wrong
//! and how to fix it (exit 0 healthy, 1 problems, 3 error).
//!
//! Each area is one module that turns files and commands of this node into
//! [`Finding`]s; nothing here changes the system except the dry run's
//! scratch bundle (removed), the probe file of the cache check, and with
//! `--fix` hpcc's CDI specs.
//!
//! - [`policy`]: the policy file is valid and only root can change it;
//! - [`libraries`]: the host libraries it declares exist, have the node's
//!   ELF class and machine, and their `DT_NEEDED` closure resolves;
//! - [`engines`]: a hooks.d file for each engine that reads hooks.d;
//! - [`slurm`]: plugstack.conf loads the plugin built for the running
//!   Slurm release, oci.conf runs `hpcc-runtime`;
//! - [`features`]: the `hpcc.*` features the node publishes to Slurm (and
//!   its fingerprint saved in the fleet) are its fingerprint's;
//! - [`system`]: the fingerprint cache is writable, journald reachable;
//! - [`cdi`]: hpcc's CDI specs are current (`--fix` writes them again);
//! - [`dryrun`]: a known-good and a known-bad image through the real hook.

pub mod cdi;
pub mod dryrun;
pub mod elf;
pub mod engines;
pub mod features;
pub mod libraries;
pub mod openmpi;
pub mod policy;
pub mod slurm;
pub mod system;

use super::{CliError, Global, Output};
use hpcc_common::schema::Kind;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the packages install the hook.
pub const DEFAULT_HOOK: &str = "/usr/libexec/hpcc/hpcc-hook";
/// Where the packages install the runtime shim.
pub const DEFAULT_RUNTIME: &str = "/usr/libexec/hpcc/hpcc-runtime";
/// The hooks.d file the `hpcc` package ships.
pub const SHIPPED_HOOKS_FILE: &str = "/usr/share/containers/oci/hooks.d/hpcc.json";
/// Where the `hpcc-slurm` package puts its example snippets.
pub const SLURM_EXAMPLES: &str = "/usr/share/doc/hpcc-slurm/examples";

/// `hpcc doctor [--hook PATH] [--hooks-dir DIR]... [--slurm-conf PATH] [--no-dry-run]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Checks this node's hpcc installation and says what is wrong and how to fix it: \
the policy is valid and root-owned; the host libraries it declares exist, have this node's ELF \
class and their dependencies resolve; a hooks.d file is installed for each engine that reads \
hooks.d (podman, CRI-O); plugstack.conf loads the SPANK plugin built for the running Slurm \
release and oci.conf runs hpcc-runtime; the fingerprint cache is writable and journald \
reachable; hpcc's CDI specs are current (--fix writes them again); and a known-good and a \
known-bad image go through the installed hook (dry run: nothing is started). Warnings do not make the installation unhealthy.",
    after_help = "Exit status: 0 healthy (warnings allowed), 1 problems found, 3 error."
)]
pub struct Args {
    /// The hook to dry-run when no hooks.d file names one.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_HOOK)]
    pub hook: PathBuf,
    /// Check these hooks.d directories instead of each engine's own (repeatable).
    #[arg(long = "hooks-dir", value_name = "DIR")]
    pub hooks_dirs: Vec<PathBuf>,
    /// Slurm's configuration [default: $SLURM_CONF, else /etc/slurm/slurm.conf].
    #[arg(long, value_name = "PATH")]
    pub slurm_conf: Option<PathBuf>,
    /// Do not run the installed hook on the two test images.
    #[arg(long)]
    pub no_dry_run: bool,
    /// Repair what the doctor can: write hpcc's CDI specs again.
    #[arg(long)]
    pub fix: bool,
}

/// How one finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Not applicable here (e.g. Slurm not installed).
    Skip,
    /// Works, but worth knowing; does not make the node unhealthy.
    Warn,
    /// A problem: the installation does not do its job.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One thing the doctor looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The area (`policy`, `host-libraries`, `hooks.d`, `slurm`, ...).
    pub check: &'static str,
    /// How it stands.
    pub status: Status,
    /// What was found, in words.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without a fix.
    pub fn new(check: &'static str, status: Status, message: impl Into<String>) -> Finding {
        Finding {
            check,
            status,
            message: message.into(),
            fix: None,
        }
    }

    /// Fine.
    pub fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding::new(check, Status::Ok, message)
    }

    /// Not applicable.
    pub fn skip(check: &'static str, message: impl Into<String>) -> Finding {
        Finding::new(check, Status::Skip, message)
    }

    /// A warning with its fix.
    pub fn warn(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Status::Warn, message).with_fix(fix)
    }

    /// A problem with its fix.
    pub fn fail(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Status::Fail, message).with_fix(fix)
    }

    /// Adds the fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// The paths the doctor looks at (all overridable, for the tests and for
/// nodes laid out differently).
#[derive(Debug, Clone)]
pub struct Layout {
    /// The policy the CLI was pointed at.
    pub policy: PathBuf,
    /// The hook to dry-run when no hooks.d file names one.
    pub hook: PathBuf,
    /// hooks.d directories to check instead of the engines' own.
    pub hooks_dirs: Vec<PathBuf>,
    /// slurm.conf.
    pub slurm_conf: PathBuf,
    /// journald's socket.
    pub journal_socket: PathBuf,
    /// Root of the file system the engines' and Slurm's files are read
    /// under ("/" on a node; a scratch tree in the tests).
    pub root: PathBuf,
    /// Run the dry run.
    pub dry_run: bool,
    /// `--fix`: repair what can be (hpcc's CDI specs).
    pub fix: bool,
}

impl Layout {
    /// The node's layout from the command line.
    pub fn from_args(args: &Args, g: &Global) -> Layout {
        Layout {
            policy: g.config.clone(),
            hook: args.hook.clone(),
            hooks_dirs: args.hooks_dirs.clone(),
            slurm_conf: args.slurm_conf.clone().unwrap_or_else(|| {
                std::env::var_os("SLURM_CONF")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"))
            }),
            journal_socket: PathBuf::from("/run/systemd/journal/socket"),
            root: PathBuf::from("/"),
            dry_run: !args.no_dry_run,
            fix: args.fix,
        }
    }

    /// `path` under [`Layout::root`].
    pub fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// Everything the doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No finding is a [`Status::Fail`].
    pub healthy: bool,
    /// The policy checked.
    pub policy: PathBuf,
    /// Counts per status.
    pub counts: Counts,
    /// The findings, in the order checked.
    pub findings: Vec<Finding>,
}

/// Counts per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// ok.
    pub ok: usize,
    /// warn.
    pub warn: usize,
    /// fail.
    pub fail: usize,
    /// skip.
    pub skip: usize,
}

impl Report {
    fn new(policy: &Path, findings: Vec<Finding>) -> Report {
        let mut counts = Counts::default();
        for f in &findings {
            match f.status {
                Status::Ok => counts.ok += 1,
                Status::Warn => counts.warn += 1,
                Status::Fail => counts.fail += 1,
                Status::Skip => counts.skip += 1,
            }
        }
        Report {
            healthy: counts.fail == 0,
            policy: policy.to_owned(),
            counts,
            findings,
        }
    }

    /// The exit code: 0 healthy, 1 problems.
    pub fn exit_code(&self) -> i32 {
        if self.healthy {
            0
        } else {
            1
        }
    }

    /// The report in words.
    pub fn text(&self, color: bool) -> String {
        let paint = |s: Status, t: &str| -> String {
            if !color {
                return t.to_owned();
            }
            let code = match s {
                Status::Ok => "32",
                Status::Skip => "2",
                Status::Warn => "33",
                Status::Fail => "1;31",
            };
            format!("\x1b[{code}m{t}\x1b[0m")
        };
        let mut out = format!("hpcc doctor (policy {})\n", self.policy.display());
        let mut area = "";
        for f in &self.findings {
            if f.check != area {
                out.push_str(&format!("\n{}\n", f.check));
                area = f.check;
            }
            out.push_str(&format!(
                "  {}  {}\n",
                paint(f.status, &format!("{:<4}", f.status.label())),
                f.message
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
        let c = &self.counts;
        let tail = format!(
            "{} ok, {} warning{}, {} problem{}, {} skipped",
            c.ok,
            c.warn,
            if c.warn == 1 { "" } else { "s" },
            c.fail,
            if c.fail == 1 { "" } else { "s" },
            c.skip
        );
        out.push('\n');
        if self.healthy {
            out.push_str(&paint(Status::Ok, "healthy"));
        } else {
            out.push_str(&paint(Status::Fail, "NOT healthy"));
        }
        out.push_str(&format!(": {tail}\n"));
        out
    }
}

/// Runs every check.
pub fn examine(layout: &Layout) -> Report {
    let mut findings = Vec::new();
    let policy = policy::check(layout, &mut findings);
    let hook_files = match &policy {
        Some(p) => {
            libraries::check(p, &mut findings);
            openmpi::check(p, &mut findings);
            let files = engines::check(layout, p, &mut findings);
            slurm::check(layout, &mut findings);
            features::check(layout, p, &mut findings);
            system::check(layout, p, &mut findings);
            cdi::check(layout, &mut findings);
            files
        }
        None => {
            findings.push(Finding::skip(
                "host-libraries",
                "not checked: the policy does not load",
            ));
            let files = engines::check(layout, &hpcc_config::Policy::default(), &mut findings);
            slurm::check(layout, &mut findings);
            files
        }
    };
    if layout.dry_run {
        dryrun::check(layout, policy.as_ref(), &hook_files, &mut findings);
    } else {
        findings.push(Finding::skip("dry-run", "skipped (--no-dry-run)"));
    }
    Report::new(&layout.policy, findings)
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    let report = examine(&Layout::from_args(args, g));
    if out.json {
        out.json(Kind::Doctor, &report)?;
    } else {
        out.text(&report.text(out.color))?;
    }
    Ok(report.exit_code())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An executable named `name` in the usual system directories or `$PATH`.
pub fn find_program(layout: &Layout, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| layout.at(d))
    .collect();
    if layout.root == Path::new("/") {
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why a file that root executes or trusts could be changed by someone
/// else: not owned by root, or writable by group/others (the file and every
/// directory above it). `None` when only root can change it.
pub fn not_root_only(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(path);
    while let Some(cur) = p {
        let meta = match std::fs::metadata(cur) {
            Ok(m) => m,
            Err(e) => return Some(format!("cannot stat {}: {e}", cur.display())),
        };
        if meta.uid() != 0 {
            return Some(format!(
                "{} belongs to uid {}, not root",
                cur.display(),
                meta.uid()
            ));
        }
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !(sticky_dir && cur != path) {
            return Some(format!(
                "{} is writable by {} (mode {:04o})",
                cur.display(),
                if meta.mode() & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                meta.mode() & 0o7777
            ));
        }
        p = cur.parent();
    }
    None
}

#[cfg(test)]
mod tests;
