//! Slurm: plugstack.conf loads `hpcc_spank.so` built for the running Slurm
//! release (Slurm refuses another: "Incompatible plugin version"), with a
//! policy that loads; oci.conf runs `srun --container` steps through
//! `hpcc-runtime`.

use super::{elf, find_program, is_executable, Finding, Layout, DEFAULT_RUNTIME, SLURM_EXAMPLES};
use hpcc_common::slurm_conf::{self, SlurmConf};
use std::path::{Path, PathBuf};

const CHECK: &str = "slurm";

/// The plugin's file name.
pub const PLUGIN: &str = "hpcc_spank.so";

/// One plugin line of plugstack.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlugLine {
    /// The file it came from.
    pub file: PathBuf,
    /// `required` or `optional`.
    pub kind: String,
    /// The plugin path as written.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The plugin lines of plugstack.conf and the files it includes (one level
/// of `include` with a `*` in the last component, as Slurm's own).
pub fn plugstack_lines(file: &Path, depth: usize) -> Result<Vec<PlugLine>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut w = line.split_whitespace();
        match w.next() {
            Some("include") if depth < 4 => {
                for pattern in w {
                    for f in glob_last(Path::new(pattern)) {
                        out.extend(plugstack_lines(&f, depth + 1)?);
                    }
                }
            }
            Some(kind @ ("required" | "optional")) => {
                if let Some(path) = w.next() {
                    out.push(PlugLine {
                        file: file.to_owned(),
                        kind: kind.to_owned(),
                        path: path.to_owned(),
                        args: w.map(str::to_owned).collect(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The files matching `pattern`, whose last component may hold `*`.
fn glob_last(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return vec![];
    };
    let name = name.to_string_lossy();
    if !name.contains('*') {
        return vec![pattern.to_owned()];
    }
    let parts: Vec<&str> = name.split('*').collect();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let mut rest = n.as_str();
            for (i, p) in parts.iter().enumerate() {
                if i == 0 {
                    let Some(r) = rest.strip_prefix(p) else {
                        return false;
                    };
                    rest = r;
                } else if i == parts.len() - 1 {
                    return rest.ends_with(p);
                } else {
                    let Some(at) = rest.find(p) else { return false };
                    rest = &rest[at + p.len()..];
                }
            }
            true
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// `slurm 22.05.8` -> (22, 5).
pub fn parse_release(text: &str) -> Option<(u32, u32, String)> {
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor, v.to_owned()))
}

fn running_release(layout: &Layout) -> Option<(u32, u32, String)> {
    let slurmd = find_program(layout, "slurmd")?;
    let out = std::process::Command::new(slurmd).arg("-V").output().ok()?;
    parse_release(&String::from_utf8_lossy(&out.stdout))
}

/// The value of a `key=value` plugin argument.
fn plug_arg<'a>(line: &'a PlugLine, key: &str) -> Option<&'a str> {
    line.args
        .iter()
        .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Records the findings.
pub fn check(layout: &Layout, out: &mut Vec<Finding>) {
    let conf_path = &layout.slurm_conf;
    let slurmd = find_program(layout, "slurmd");
    if slurmd.is_none() && !conf_path.exists() {
        out.push(Finding::skip(
            CHECK,
            "Slurm is not installed on this node (no slurmd, no slurm.conf)",
        ));
        return;
    }
    // Read as the runtime reads it (hpcc_common::slurm_conf).
    let conf = slurm_conf::read(conf_path, slurm_conf::MAX_BYTES)
        .map(|t| SlurmConf::parse(&t))
        .unwrap_or_default();
    let etc = conf_path
        .parent()
        .unwrap_or(Path::new("/etc/slurm"))
        .to_owned();
    let plugin_dirs: Vec<PathBuf> = conf
        .get("PluginDir")
        .map(|d| d.split(':').map(PathBuf::from).collect())
        .unwrap_or_else(|| {
            [
                "/usr/lib/x86_64-linux-gnu/slurm-wlm",
                "/usr/lib/aarch64-linux-gnu/slurm-wlm",
                "/usr/lib64/slurm",
                "/usr/lib/slurm",
            ]
            .iter()
            .map(|d| layout.at(d))
            .collect()
        });
    let installed_plugin = plugin_dirs
        .iter()
        .map(|d| d.join(PLUGIN))
        .find(|p| p.exists());
    let running = running_release(layout);
    let plugstack = conf
        .get("PlugStackConfig")
        .map(PathBuf::from)
        .unwrap_or_else(|| etc.join("plugstack.conf"));
    let lines = if plugstack.exists() {
        match plugstack_lines(&plugstack, 0) {
            Ok(l) => l,
            Err(e) => {
                out.push(Finding::fail(
                    CHECK,
                    e,
                    "make plugstack.conf readable by root",
                ));
                vec![]
            }
        }
    } else {
        vec![]
    };
    let ours: Vec<&PlugLine> = lines
        .iter()
        .filter(|l| Path::new(&l.path).file_name().is_some_and(|n| n == PLUGIN))
        .collect();
    let example = format!("{SLURM_EXAMPLES}/plugstack.conf");
    if ours.is_empty() {
        match &installed_plugin {
            Some(p) => out.push(Finding::fail(
                CHECK,
                format!(
                    "{} is installed but {} does not load it: srun --container steps are not checked",
                    p.display(),
                    plugstack.display()
                ),
                format!(
                    "add the line of {example} to {} (or put it in {}/plugstack.conf.d/hpcc.conf with `include {}/plugstack.conf.d/*.conf`), then restart slurmd",
                    plugstack.display(),
                    etc.display(),
                    etc.display()
                ),
            )),
            None => {
                out.push(Finding::skip(
                    CHECK,
                    format!("Slurm is installed but the hpcc SPANK plugin is not (no {PLUGIN} in {})", plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
                ));
                // Without hpcc-slurm only an oci.conf that names hpcc is ours to check.
                let oci = etc.join("oci.conf");
                if !std::fs::read_to_string(&oci).is_ok_and(|t| t.contains("hpcc")) {
                    return;
                }
            }
        }
    }
    for line in ours {
        out.push(plugin_line(line, &plugin_dirs, running.as_ref()));
        if let Some(c) = plug_arg(line, "config") {
            if let Err(e) = hpcc_config::Policy::load(Path::new(c)) {
                out.push(Finding::fail(
                    CHECK,
                    format!(
                        "{}: the plugin's config={c} does not load: {e}",
                        line.file.display()
                    ),
                    format!("fix {c} (`HPCC_CONFIG={c} hpcc policy check`)"),
                ));
            }
        }
    }
    oci_conf(&etc.join("oci.conf"), out);
}

fn plugin_line(
    line: &PlugLine,
    plugin_dirs: &[PathBuf],
    running: Option<&(u32, u32, String)>,
) -> Finding {
    let path = if Path::new(&line.path).is_absolute() {
        PathBuf::from(&line.path)
    } else {
        plugin_dirs
            .iter()
            .map(|d| d.join(&line.path))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(&line.path))
    };
    let fix_pkg = "install the hpcc-slurm package built for this node's Slurm release (or rebuild the plugin against its libslurm-dev)";
    if !path.exists() {
        return Finding::fail(
            CHECK,
            format!(
                "{} loads {} ({}), which does not exist: every step fails",
                line.file.display(),
                line.path,
                line.kind
            ),
            fix_pkg,
        );
    }
    let built = match elf::u32_symbol(&path, "plugin_version") {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Finding::fail(
                CHECK,
                format!(
                    "{} has no plugin_version symbol: it is not a SPANK plugin Slurm will load",
                    path.display()
                ),
                fix_pkg,
            )
        }
        Err(e) => return Finding::fail(CHECK, e, fix_pkg),
    };
    let (bmaj, bmin, bmic) = ((built >> 16) & 0xff, (built >> 8) & 0xff, built & 0xff);
    let built_s = format!("{bmaj}.{bmin:02}.{bmic}");
    match running {
        Some((maj, min, s)) if (*maj, *min) != (bmaj, bmin) => Finding::fail(
            CHECK,
            format!(
                "{} is built for Slurm {built_s}, this node runs Slurm {s}: slurmd refuses it (\"Incompatible plugin version\")",
                path.display()
            ),
            fix_pkg,
        ),
        Some((_, _, s)) => Finding::ok(
            CHECK,
            format!(
                "{} loads {} ({}), built for Slurm {built_s}; this node runs Slurm {s}",
                line.file.display(),
                path.display(),
                line.kind
            ),
        ),
        None => Finding::warn(
            CHECK,
            format!(
                "{} loads {} (built for Slurm {built_s}), but the running Slurm release is unknown (slurmd -V gave nothing)",
                line.file.display(),
                path.display()
            ),
            "check `slurmd -V`: its major.minor release must be the plugin's",
        ),
    }
}

/// oci.conf's runtime command: the key (`RunTimeRun`, else
/// `RunTimeCreate`), its first word, and whether `--hpcc-slurm` is among its
/// arguments.
pub fn oci_runtime(text: &str) -> Option<(String, String, bool)> {
    let conf = SlurmConf::parse(text);
    for key in ["RunTimeRun", "RunTimeCreate"] {
        if let Some(v) = conf.get(key) {
            // slurmstepd runs the line with /bin/sh -c: a leading `exec`
            // is the shell's, the command follows it.
            let mut words = v.split_whitespace().peekable();
            if words.peek() == Some(&"exec") {
                words.next();
            }
            let cmd = words.next().unwrap_or_default().to_owned();
            let slurm_mode = words.any(|w| w == "--hpcc-slurm");
            return Some((key.to_owned(), cmd, slurm_mode));
        }
    }
    None
}

/// Whether oci.conf's `key` starts with the shell's `exec`.
fn runs_by_exec(text: &str, key: &str) -> bool {
    SlurmConf::parse(text)
        .get(key)
        .is_some_and(|v| v.split_whitespace().next() == Some("exec"))
}

/// The per-user state root of a rootless oci.conf (`--rootless=true
/// --root=DIR/%u` in the runtime command): DIR.
pub fn rootless_state_root(text: &str) -> Option<PathBuf> {
    let conf = SlurmConf::parse(text);
    let v = conf
        .get("RunTimeRun")
        .or_else(|| conf.get("RunTimeCreate"))?;
    let words: Vec<&str> = v.split_whitespace().collect();
    if !words
        .iter()
        .any(|w| *w == "--rootless=true" || *w == "--rootless")
    {
        return None;
    }
    words
        .iter()
        .find_map(|w| w.strip_prefix("--root="))
        .and_then(|r| r.strip_suffix("/%u"))
        .map(PathBuf::from)
}

/// Slurm expands `%u` but creates nothing: runc fails every container step
/// of a user whose state directory is missing. Root's is checked here (the
/// others' cannot be listed); /run is emptied at boot.
fn rootless_state(path: &Path, text: &str, root_dir: &Path, out: &mut Vec<Finding>) {
    let Some(dir) = rootless_state_root(text) else {
        return;
    };
    let dir = root_dir.join(dir.strip_prefix("/").unwrap_or(&dir));
    let fix = format!(
        "create {}/USER (owned by USER, mode 0700) for root and every user who runs containers, at every boot (e.g. systemd-tmpfiles: `d {}/USER 0700 USER USER`)",
        dir.display(),
        dir.display()
    );
    if dir.join("root").is_dir() {
        out.push(Finding::ok(
            CHECK,
            format!(
                "{}: rootless runc state under {}/%u; {}/root exists",
                path.display(),
                dir.display(),
                dir.display()
            ),
        ));
    } else {
        out.push(Finding::warn(
            CHECK,
            format!("{}: rootless runc keeps its state in {}/%u, and {}/root does not exist: container steps of a user without that directory fail in runc", path.display(), dir.display(), dir.display()),
            fix,
        ));
    }
}

fn oci_conf(path: &Path, out: &mut Vec<Finding>) {
    let example = format!("{SLURM_EXAMPLES}/oci.conf");
    let Ok(text) = std::fs::read_to_string(path) else {
        out.push(Finding::warn(
            CHECK,
            format!(
                "{} does not exist: srun --container is not set up on this node",
                path.display()
            ),
            format!(
                "copy {example} to {} to run container steps through hpcc-runtime",
                path.display()
            ),
        ));
        return;
    };
    rootless_state(path, &text, Path::new("/"), out);
    match oci_runtime(&text) {
        None => out.push(Finding::fail(
            CHECK,
            format!(
                "{} has neither RunTimeRun nor RunTimeCreate: container steps cannot start",
                path.display()
            ),
            format!("start from {example}"),
        )),
        Some((key, cmd, slurm_mode)) => {
            let name = Path::new(&cmd)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name != "hpcc-runtime" {
                out.push(Finding::fail(
                    CHECK,
                    format!("{}: {key} runs {cmd}, not hpcc-runtime: srun --container steps start without hpcc's checks and tweaks", path.display()),
                    format!("put {DEFAULT_RUNTIME} before runc's arguments in {key}, as in {example}"),
                ));
            } else if !is_executable(Path::new(&cmd)) {
                out.push(Finding::fail(
                    CHECK,
                    format!("{}: {key} runs {cmd}, which is not an executable file: every container step fails", path.display()),
                    "install the hpcc-slurm package, or correct the path".to_owned(),
                ));
            } else if !slurm_mode {
                // The generic mode still decides, but it neither applies the
                // plugin's decision (the user's --hpcc/--hpcc-mpi) nor wires
                // MPI steps: multi-node jobs would run as singletons.
                out.push(Finding::fail(
                    CHECK,
                    format!("{}: {key} runs {cmd} without --hpcc-slurm: the plugin's decision is not applied and MPI steps are not wired", path.display()),
                    format!("add --hpcc-slurm right after {cmd} in {key}, as in {example}"),
                ));
            } else if !runs_by_exec(&text, &key) {
                // slurmstepd runs the line with /bin/sh -c; a shell that
                // forks the runtime leaves a moment in which a cancel kills
                // the shell (proctrack lists the tree, then signals it)
                // and misses the runtime it is forking.
                out.push(Finding::warn(
                    CHECK,
                    format!("{}: {key} runs {cmd} without `exec` in front: a step cancelled while it starts may leave its container running", path.display()),
                    format!("write {key}=\"exec {cmd} ...\", as in {example}"),
                ));
            } else {
                out.push(Finding::ok(
                    CHECK,
                    format!(
                        "{}: {key} runs {cmd} --hpcc-slurm (by exec)",
                        path.display()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn a_rootless_oci_conf_needs_its_state_directories() {
        let rootless = "RunTimeRun=\"exec /usr/libexec/hpcc/hpcc-runtime --hpcc-slurm --hpcc-node=%n --rootless=true --root=/run/user-oci/%u run %n.%u.%j.%s.%t -b %b\"\n";
        assert_eq!(
            rootless_state_root(rootless),
            Some(PathBuf::from("/run/user-oci"))
        );
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/slurm/oci.conf"),
        )
        .unwrap();
        assert_eq!(rootless_state_root(&shipped), None);
        let base = std::env::temp_dir().join(format!("hpcc-doctor-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let mut out = Vec::new();
        rootless_state(Path::new("oci.conf"), rootless, &base, &mut out);
        assert_eq!(out[0].status, Status::Warn, "{out:?}");
        assert!(
            out[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("/run/user-oci/USER"),
            "{out:?}"
        );
        std::fs::create_dir_all(base.join("run/user-oci/root")).unwrap();
        let mut out = Vec::new();
        rootless_state(Path::new("oci.conf"), rootless, &base, &mut out);
        assert_eq!(out[0].status, Status::Ok, "{out:?}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn releases_parse() {
        assert_eq!(
            parse_release("slurm 22.05.8\n"),
            Some((22, 5, "22.05.8".into()))
        );
        assert_eq!(
            parse_release("slurm-wlm 23.11.4"),
            Some((23, 11, "23.11.4".into()))
        );
        assert_eq!(parse_release("nothing"), None);
    }

    #[test]
    fn the_shipped_snippets_say_what_the_doctor_wants() {
        let oci = include_str!("../../../packaging/slurm/oci.conf");
        let (key, cmd, slurm_mode) = oci_runtime(oci).unwrap();
        assert_eq!(key, "RunTimeRun");
        assert_eq!(cmd, DEFAULT_RUNTIME);
        assert!(slurm_mode, "the shipped oci.conf must use the Slurm mode");
        let dir =
            std::env::temp_dir().join(format!("hpcc-doctor-plugstack-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("plugstack.conf.d")).unwrap();
        std::fs::write(
            dir.join("plugstack.conf"),
            format!(
                "optional /x/other.so\ninclude {}/plugstack.conf.d/*.conf\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("plugstack.conf.d/hpcc.conf"),
            include_str!("../../../packaging/slurm/plugstack.conf"),
        )
        .unwrap();
        let lines = plugstack_lines(&dir.join("plugstack.conf"), 0).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].path.ends_with(PLUGIN));
        assert_eq!(plug_arg(&lines[1], "config"), Some("/etc/hpcc/hook.toml"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_plain_runc_oci_conf_is_a_problem() {
        let dir = std::env::temp_dir().join(format!("hpcc-doctor-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("oci.conf");
        std::fs::write(
            &f,
            "RunTimeRun=\"runc --root=/run/slurm-oci run %n -b %b\"\n",
        )
        .unwrap();
        let mut out = Vec::new();
        oci_conf(&f, &mut out);
        assert_eq!(out[0].status, Status::Fail, "{out:?}");
        assert!(out[0].message.contains("not hpcc-runtime"));
        // hpcc-runtime in its generic mode: no MPI wiring, no plugin decision.
        let rt = dir.join("hpcc-runtime");
        std::fs::write(&rt, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&rt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for (exec, args, status) in [
            ("exec ", "", Status::Fail),
            ("exec ", " --hpcc-slurm", Status::Ok),
            // A shell that forks the runtime: a cancel can miss it.
            ("", " --hpcc-slurm", Status::Warn),
        ] {
            std::fs::write(
                &f,
                format!(
                    "RunTimeRun=\"{exec}{}{args} --root=/run/slurm-oci run %n -b %b\"\n",
                    rt.display()
                ),
            )
            .unwrap();
            let mut out = Vec::new();
            oci_conf(&f, &mut out);
            assert_eq!(out[0].status, status, "{out:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
