//! `hpcc check IMAGE`: is the image a conformant HPC image?
//!
//! Findings, each `pass`, `fail` or `warn`:
//!
//! - **annotations**: the merged annotations parse (`ImageSpec`), and where
//!   two sources disagree (a `warn`: engines that read only labels see the
//!   label);
//! - **mandatory**: `hardware.cpu.optimized.version` (or its alias);
//! - **optional**: each optional annotation of the proposal, `warn` when
//!   missing;
//! - **behaviour** (the proposal's "expected image behaviour"): a small
//!   `ENTRYPOINT` that prepares the environment and hands its arguments on
//!   (`exec "$@"`), not the application aliased; a `CMD`; a shell to drop
//!   into. With layers (a layout or archive) the entrypoint script, the
//!   shell and the `CMD` program are looked up in the image; from a config
//!   JSON alone they cannot be, and say so (`warn`).
//!
//! The image is conformant when its annotations are valid and nothing
//! fails; `warn`s do not count.

use super::annotate::which;
use super::layers::{self, Kind, Scan, ScanRequest};
use super::layout::{Image, MergedAnnotations};
use super::{ImageError, Limits};
use hpcc_common::annotations::{ImageSpec, PREFIX};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Largest entrypoint script that still counts as "small".
pub const SMALL_SCRIPT_BYTES: usize = 16 << 10;

/// Outcome of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Meets the proposal.
    Pass,
    /// Does not; the image is not conformant.
    Fail,
    /// Worth fixing; does not affect conformance.
    Warn,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFinding {
    /// `annotations`, `mandatory`, `optional` or `behaviour`.
    pub group: String,
    /// What was checked (a key, `entrypoint`, `cmd`, `shell`).
    pub item: String,
    /// Outcome.
    pub status: Status,
    /// One sentence.
    pub message: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The image.
    pub image: String,
    /// Annotations valid.
    pub valid: bool,
    /// Valid and nothing failed.
    pub conformant: bool,
    /// Findings in order.
    pub findings: Vec<CheckFinding>,
    /// The merged annotations and where each came from.
    pub annotations: MergedAnnotations,
}

/// Mandatory annotations (short keys) and the aliases that satisfy them.
pub const MANDATORY: &[(&str, &[&str])] = &[(
    "hardware.cpu.optimized.version",
    &["hardware.cpu.optimized.architecture"],
)];

/// Optional annotations of the proposal (short keys, aliases).
pub const OPTIONAL: &[(&str, &[&str])] = &[
    ("hardware.cpu.optimized.mode", &[]),
    ("mpi.implementation", &["mpi.provider"]),
    ("mpi.version", &["openmpi.version", "mpich.version"]),
    ("communication.framework", &[]),
    ("mpi.portability.mode", &[]),
    ("libc.implementation", &[]),
    ("glibc.version", &[]),
    ("python.version", &[]),
    ("shell.implementation", &[]),
    ("tools.includes", &[]),
    ("host.kernel.version.min", &[]),
    ("docs.quickstart.link", &["docs.quickstart.base64"]),
];

/// Shells a user can be dropped into.
const SHELLS: &[&str] = &[
    "bash", "sh", "zsh", "dash", "ash", "ksh", "tcsh", "csh", "fish",
];
/// Wrappers that pass their arguments through.
const INIT_WRAPPERS: &[&str] = &["tini", "tini-static", "dumb-init", "catatonit", "env"];

impl CheckReport {
    fn push(&mut self, group: &str, item: &str, status: Status, message: impl Into<String>) {
        self.findings.push(CheckFinding {
            group: group.to_owned(),
            item: item.to_owned(),
            status,
            message: message.into(),
        });
    }

    /// 0 conformant, 1 not conformant, 2 invalid annotations.
    pub fn exit_code(&self) -> i32 {
        if !self.valid {
            2
        } else if !self.conformant {
            1
        } else {
            0
        }
    }

    /// The text report. Image text is escaped.
    pub fn render_text(&self) -> String {
        let esc = hpcc_common::text::escape;
        let verdict = if !self.valid {
            "INVALID annotations"
        } else if self.conformant {
            "conformant"
        } else {
            "NOT conformant"
        };
        let mut out = format!("hpcc check {}: {verdict}\n", esc(&self.image));
        for f in &self.findings {
            let _ = writeln!(
                out,
                "  {}  {:<11} {:<34} {}",
                f.status.label(),
                f.group,
                esc(&f.item),
                esc(&f.message)
            );
        }
        out
    }
}

fn present<'a>(
    m: &'a MergedAnnotations,
    key: &str,
    aliases: &[&str],
) -> Option<(String, &'a super::layout::Sourced)> {
    std::iter::once(key)
        .chain(aliases.iter().copied())
        .find_map(|k| {
            let full = format!("{PREFIX}{k}");
            m.values.get(&full).map(|s| (full, s))
        })
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Checks an image (its layers when it has any).
pub fn check(image: &Image, limits: &Limits) -> Result<CheckReport, ImageError> {
    let merged = image.annotations();
    let mut r = CheckReport {
        image: image.reference.clone(),
        valid: true,
        conformant: true,
        findings: vec![],
        annotations: merged.clone(),
    };
    // Reading never fails as a whole: each value hpcc cannot read is a
    // problem of its key. For an image builder every unreadable value is a
    // failure of the image's annotations (an enforcing node may refuse it).
    let spec = ImageSpec::read(merged.pairs(), std::iter::empty());
    let unreadable: Vec<_> = spec
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p.problem,
                hpcc_common::annotations::ProblemKind::Unreadable { .. }
            )
        })
        .collect();
    if unreadable.is_empty() {
        r.push(
            "annotations",
            "valid",
            Status::Pass,
            format!("{} org.supercontainers.* annotations read", spec.known_keys),
        );
    } else {
        r.valid = false;
        for p in unreadable {
            r.push(
                "annotations",
                &p.key,
                Status::Fail,
                hpcc_common::text::escape(&format!("{}={:?}: {}", p.key, p.value, p.problem)),
            );
        }
    }
    for w in &spec.warnings {
        r.push("annotations", "warning", Status::Warn, w.clone());
    }
    for c in &merged.conflicts {
        let others: Vec<String> = c
            .overridden
            .iter()
            .map(|o| format!("{} says {:?}", o.source, o.value))
            .collect();
        r.push(
            "annotations",
            &c.key,
            Status::Warn,
            format!(
                "{} {:?} is used; {} (engines that read only config labels, such as umoci unpack and Slurm bundles, see the label)",
                c.used.source,
                c.used.value,
                others.join(", ")
            ),
        );
    }
    for (key, aliases) in MANDATORY {
        match present(&merged, key, aliases) {
            Some((k, s)) => r.push("mandatory", k.as_str(), Status::Pass, format!("{:?} ({})", s.value, s.source)),
            None => r.push(
                "mandatory",
                &format!("{PREFIX}{key}"),
                Status::Fail,
                "missing: without it the image is not HPC-conformant and may die with SIGILL (hpcc annotate proposes it)",
            ),
        }
    }
    for (key, aliases) in OPTIONAL {
        match present(&merged, key, aliases) {
            Some((k, s)) => r.push(
                "optional",
                k.as_str(),
                Status::Pass,
                format!("{:?} ({})", s.value, s.source),
            ),
            None => r.push(
                "optional",
                &format!("{PREFIX}{key}"),
                Status::Warn,
                "missing",
            ),
        }
    }
    let scan = if image.has_layers() {
        Some(layers::scan(
            image,
            &ScanRequest {
                capture_limit: 0,
                ..ScanRequest::default()
            },
            limits,
        )?)
    } else {
        None
    };
    behaviour(image, scan.as_ref(), &spec, limits, &mut r)?;
    r.conformant = r.valid && r.findings.iter().all(|f| f.status != Status::Fail);
    Ok(r)
}

/// Resolves a command as the runtime would: absolute, or through `PATH`.
fn find_command(scan: &Scan, dirs: &[String], cmd: &str) -> Option<(String, String)> {
    if cmd.starts_with('/') {
        let (resolved, e) = scan.tree.lookup(cmd)?;
        return (e.kind == Kind::File).then(|| (cmd.to_owned(), resolved));
    }
    which(scan, dirs, cmd)
}

fn behaviour(
    image: &Image,
    scan: Option<&Scan>,
    spec: &ImageSpec,
    limits: &Limits,
    r: &mut CheckReport,
) -> Result<(), ImageError> {
    let dirs = image.path_dirs();
    let ep = image.config.entrypoint.clone().unwrap_or_default();
    let cmd = image.config.cmd.clone().unwrap_or_default();
    let show = |v: &[String]| format!("{v:?}");
    // ENTRYPOINT
    match ep.first() {
        None => r.push(
            "behaviour",
            "entrypoint",
            Status::Pass,
            "no ENTRYPOINT: the command given (or CMD) runs as is",
        ),
        Some(first) if INIT_WRAPPERS.contains(&basename(first)) => r.push(
            "behaviour",
            "entrypoint",
            Status::Pass,
            format!(
                "{} is an init wrapper that hands its arguments on",
                show(&ep)
            ),
        ),
        Some(first)
            if SHELLS.contains(&basename(first)) && ep.get(1).is_some_and(|a| a == "-c") =>
        {
            let script = ep.get(2).map_or("", String::as_str);
            if script.contains("$@") || script.contains("${@}") {
                r.push(
                    "behaviour",
                    "entrypoint",
                    Status::Pass,
                    format!(
                        "{} prepares the environment and hands its arguments on",
                        show(&ep)
                    ),
                );
            } else {
                r.push(
                    "behaviour",
                    "entrypoint",
                    Status::Fail,
                    format!(
                        "{} ignores its arguments: CMD and the user's command never run",
                        show(&ep)
                    ),
                );
            }
        }
        Some(first) if SHELLS.contains(&basename(first)) => r.push(
            "behaviour",
            "entrypoint",
            Status::Warn,
            format!(
                "{} makes every command a script for the shell: `IMAGE gmx` runs a file named gmx",
                show(&ep)
            ),
        ),
        Some(first) => match scan {
            None => {
                let looks_prep =
                    first.ends_with(".sh") || first.contains("entrypoint") || first.contains("env");
                r.push(
                    "behaviour",
                    "entrypoint",
                    Status::Warn,
                    format!(
                        "{} cannot be inspected without the layers{}",
                        show(&ep),
                        if looks_prep {
                            ""
                        } else {
                            "; it looks like the application aliased"
                        }
                    ),
                );
            }
            Some(scan) => match find_command(scan, &dirs, first) {
                None => r.push(
                    "behaviour",
                    "entrypoint",
                    Status::Fail,
                    format!("{} does not exist in the image", show(&ep)),
                ),
                Some((_, resolved)) => {
                    let files = layers::read_files(
                        image,
                        &scan.tree,
                        &[resolved.as_str()],
                        64 << 10,
                        limits,
                    )?;
                    let size = scan.tree.get(&resolved).map_or(0, |e| e.size);
                    match files.get(&resolved) {
                        Some(body) if body.starts_with(b"#!") => {
                            let text = String::from_utf8_lossy(body);
                            let passes = text.contains("$@") || text.contains("${@}");
                            if !passes {
                                r.push("behaviour", "entrypoint", Status::Fail, format!("script {first} ({size} bytes) does not hand its arguments on (no \"$@\"): CMD and the user's command never run"));
                            } else if body.len() > SMALL_SCRIPT_BYTES {
                                r.push("behaviour", "entrypoint", Status::Warn, format!("script {first} is {size} bytes: an ENTRYPOINT should only prepare the environment"));
                            } else {
                                r.push("behaviour", "entrypoint", Status::Pass, format!("script {first} ({size} bytes) prepares the environment and hands its arguments on"));
                            }
                        }
                        Some(body) if super::elfscan::is_elf(body) || size > 64 << 10 => r.push(
                            "behaviour",
                            "entrypoint",
                            Status::Fail,
                            format!("{} is a program, the application aliased: users cannot run another command or drop into a shell without --entrypoint", show(&ep)),
                        ),
                        _ => r.push("behaviour", "entrypoint", Status::Warn, format!("{} is neither a script nor an ELF program", show(&ep))),
                    }
                }
            },
        },
    }
    // CMD: a command the image has, unless the ENTRYPOINT did not pass
    // (then CMD is only the aliased application's arguments).
    let ep_ok = r
        .findings
        .iter()
        .rev()
        .find(|f| f.item == "entrypoint")
        .is_some_and(|f| f.status == Status::Pass);
    match cmd.first() {
        None => r.push(
            "behaviour",
            "cmd",
            Status::Fail,
            "no CMD: set it to a shell, a usage message or an example run",
        ),
        Some(c) => {
            let found = scan.map(|s| find_command(s, &dirs, c));
            match found {
                Some(None) if ep_ok => r.push(
                    "behaviour",
                    "cmd",
                    Status::Fail,
                    format!(
                        "CMD {} runs {c}, which is not in the image (PATH {})",
                        show(&cmd),
                        dirs.join(":")
                    ),
                ),
                _ => r.push(
                    "behaviour",
                    "cmd",
                    Status::Pass,
                    format!("CMD {}", show(&cmd)),
                ),
            }
        }
    }
    // A shell to drop into.
    match scan {
        None => r.push(
            "behaviour",
            "shell",
            Status::Warn,
            "cannot be checked without the layers",
        ),
        Some(s) => {
            let shells: Vec<(String, String)> = SHELLS
                .iter()
                .filter_map(|sh| which(s, &dirs_with_bin(&dirs), sh))
                .collect();
            match shells.first() {
                None => r.push(
                    "behaviour",
                    "shell",
                    Status::Fail,
                    "no shell in the image (bash, sh, ...): users cannot be dropped into one",
                ),
                Some((p, res)) => {
                    let default = cmd.first().is_some_and(|c| SHELLS.contains(&basename(c)));
                    r.push(
                        "behaviour",
                        "shell",
                        Status::Pass,
                        format!(
                            "{p} (-> /{res}){}",
                            if default {
                                "; CMD drops into it"
                            } else {
                                "; run the image with a shell as command to get one"
                            }
                        ),
                    );
                }
            }
            {
                for sh in &spec.shells {
                    if which(s, &dirs_with_bin(&dirs), sh).is_none() {
                        r.push(
                            "annotations",
                            "shell.implementation",
                            Status::Warn,
                            format!("declares {sh}, which is not in the image"),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn dirs_with_bin(dirs: &[String]) -> Vec<String> {
    let mut d = dirs.to_vec();
    for b in ["/bin", "/usr/bin"] {
        if !d.iter().any(|x| x == b) {
            d.push(b.to_owned());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_common::testutil::TempDir;

    fn config_image(dir: &std::path::Path, config: &str) -> Image {
        let p = dir.join("config.json");
        std::fs::write(&p, config).unwrap();
        Image::open(
            &super::super::layout::ImageRef::Config(p),
            &Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn config_only_report() {
        let t = TempDir::new("check-config");
        let img = config_image(
            &t.0,
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/usr/local/bin/gmx"],"Labels":{"org.supercontainers.hardware.cpu.optimized.version":"x86_64_v3"}}}"#,
        );
        let r = check(&img, &Limits::default()).unwrap();
        assert!(r.valid);
        assert!(!r.conformant, "no CMD fails: {r:#?}");
        assert_eq!(r.exit_code(), 1);
        let ep = r.findings.iter().find(|f| f.item == "entrypoint").unwrap();
        assert_eq!(ep.status, Status::Warn);
        assert!(ep.message.contains("aliased"));
        assert!(r.render_text().contains("PASS  mandatory"));
    }

    #[test]
    fn invalid_and_missing() {
        let t = TempDir::new("check-invalid");
        let img = config_image(
            &t.0,
            r#"{"config":{"Cmd":["/bin/bash"],"Labels":{"org.supercontainers.hardware.cpu.optimized.version":"pentium9000"}}}"#,
        );
        let r = check(&img, &Limits::default()).unwrap();
        assert_eq!(r.exit_code(), 2);
        let img = config_image(
            &t.0,
            r#"{"config":{"Cmd":["/bin/bash"],"Entrypoint":["/bin/sh","-c","exec \"$@\"","--"]}}"#,
        );
        let r = check(&img, &Limits::default()).unwrap();
        assert_eq!(r.exit_code(), 1);
        assert!(r
            .findings
            .iter()
            .any(|f| f.group == "mandatory" && f.status == Status::Fail));
        assert!(r
            .findings
            .iter()
            .any(|f| f.item == "entrypoint" && f.status == Status::Pass));
    }
}
