//! A hooks.d file for each installed engine that reads hooks.d (podman,
//! CRI-O), and that file runs the installed hook the right way. runc and
//! crun alone read no hooks.d (the hook goes into each config.json);
//! containerd reads none either (docs/containerd.md).

use super::{find_program, is_executable, not_root_only, Finding, Layout, SHIPPED_HOOKS_FILE};
use hpcc_config::{Policy, UnannotatedAction};
use serde_json::Value;
use std::path::{Path, PathBuf};

const CHECK: &str = "hooks.d";

/// A hooks.d file that runs hpcc-hook, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFile {
    /// The file.
    pub file: PathBuf,
    /// `hook.path`.
    pub hook: PathBuf,
    /// The `--config` its arguments give (None: the hook's default).
    pub config: Option<PathBuf>,
}

/// An engine and the hooks.d directories it reads, in precedence order
/// (a later directory's file of the same name wins).
struct Engine {
    name: &'static str,
    dirs: Vec<PathBuf>,
}

fn toml_hooks_dirs(files: &[PathBuf], table: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(v) = text.parse::<toml::Table>() else {
            continue;
        };
        let mut cur = Some(&v);
        for t in table {
            cur = cur.and_then(|c| c.get(*t)).and_then(|x| x.as_table());
        }
        if let Some(list) = cur
            .and_then(|c| c.get("hooks_dir"))
            .and_then(|x| x.as_array())
        {
            found = Some(
                list.iter()
                    .filter_map(|x| x.as_str())
                    .map(PathBuf::from)
                    .collect(),
            );
        }
    }
    found
}

fn conf_files(layout: &Layout, main: &[&str], dropin: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = main.iter().map(|m| layout.at(m)).collect();
    if let Ok(rd) = std::fs::read_dir(layout.at(dropin)) {
        let mut d: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        d.sort();
        v.extend(d);
    }
    v
}

fn engines(layout: &Layout) -> (Vec<Engine>, Vec<&'static str>) {
    let mut found = Vec::new();
    let mut without_hooks_d = Vec::new();
    let defaults = |l: &Layout| {
        vec![
            l.at("/usr/share/containers/oci/hooks.d"),
            l.at("/etc/containers/oci/hooks.d"),
        ]
    };
    if find_program(layout, "podman").is_some() {
        let files = conf_files(
            layout,
            &[
                "/usr/share/containers/containers.conf",
                "/etc/containers/containers.conf",
            ],
            "/etc/containers/containers.conf.d",
        );
        let dirs = toml_hooks_dirs(&files, &["engine"])
            .map(|d| d.iter().map(|p| layout.at(&p.to_string_lossy())).collect())
            .unwrap_or_else(|| defaults(layout));
        found.push(Engine {
            name: "podman",
            dirs,
        });
    }
    if find_program(layout, "crio").is_some() {
        let files = conf_files(layout, &["/etc/crio/crio.conf"], "/etc/crio/crio.conf.d");
        let dirs = toml_hooks_dirs(&files, &["crio", "runtime"])
            .map(|d| d.iter().map(|p| layout.at(&p.to_string_lossy())).collect())
            .unwrap_or_else(|| vec![layout.at("/usr/share/containers/oci/hooks.d")]);
        found.push(Engine {
            name: "CRI-O",
            dirs,
        });
    }
    if find_program(layout, "containerd").is_some() {
        without_hooks_d.push("containerd");
    }
    (found, without_hooks_d)
}

/// The hooks.d file in `dirs` that runs hpcc-hook (the last directory's
/// file of a name wins, as podman does).
fn find_hook_file(dirs: &[PathBuf]) -> Option<(PathBuf, Value)> {
    let mut by_name: std::collections::BTreeMap<std::ffi::OsString, (PathBuf, Value)> =
        Default::default();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let v: Value = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            by_name.insert(e.file_name(), (p, v));
        }
    }
    by_name.into_values().find(|(_, v)| {
        v["hook"]["path"]
            .as_str()
            .and_then(|p| Path::new(p).file_name())
            .is_some_and(|n| n == "hpcc-hook")
    })
}

/// What is wrong with one hooks.d file that runs hpcc-hook.
pub fn validate(
    file: &Path,
    v: &Value,
    policy: &Policy,
    out: &mut Vec<Finding>,
) -> Option<HookFile> {
    let name = file.display();
    let mut problems: Vec<(bool, String, String)> = Vec::new(); // (fatal, message, fix)
    if v["version"] != "1.0.0" {
        problems.push((
            true,
            format!(
                "{name}: \"version\" is {}, podman and CRI-O read only \"1.0.0\"",
                v["version"]
            ),
            "set \"version\": \"1.0.0\"".into(),
        ));
    }
    let hook = PathBuf::from(v["hook"]["path"].as_str().unwrap_or_default());
    if !is_executable(&hook) {
        problems.push((
            true,
            format!("{name}: the hook {} is not an executable file", hook.display()),
            "reinstall the hpcc package (`apt-get install --reinstall hpcc` / `dnf reinstall hpcc`)".into(),
        ));
    } else if let Some(why) = not_root_only(&hook) {
        problems.push((
            true,
            format!("{name}: the hook runs as root but not only root can change it: {why}"),
            format!("chown root:root {h} && chmod 0755 {h}", h = hook.display()),
        ));
    }
    let args: Vec<&str> = v["hook"]["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut config = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(p));
        } else if *a == "--config" {
            config = it.next().map(PathBuf::from);
        }
    }
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let acting = ["prestart", "createRuntime"];
    if !stages.iter().any(|s| acting.contains(s)) {
        problems.push((
            true,
            format!("{name}: \"stages\" is {stages:?}: hpcc-hook decides only at prestart or createRuntime"),
            "set \"stages\": [\"prestart\"]".into(),
        ));
    }
    let arg_stage = args.get(1).filter(|a| !a.starts_with('-'));
    if let Some(s) = arg_stage {
        if !stages.contains(s) {
            problems.push((
                true,
                format!("{name}: the hook is told it runs at {s} but runs at {stages:?}"),
                "make the stage argument (\"args\": [\"hpcc-hook\", STAGE, ...]) the stage of \"stages\"".into(),
            ));
        }
    }
    if v["hook"]["timeout"].as_u64().is_none() {
        problems.push((
            false,
            format!("{name}: no \"timeout\": a hung hook would hold container starts forever"),
            "add \"timeout\": 10 to \"hook\"".into(),
        ));
    }
    let always = v["when"]["always"] == Value::Bool(true);
    if !always && policy.unannotated == UnannotatedAction::Refuse {
        problems.push((
            true,
            format!("{name}: the hook runs only for some containers (\"when\" is not always) but the policy says unannotated = \"refuse\": unannotated images never reach it"),
            "set \"when\": {\"always\": true}".into(),
        ));
    }
    if config.is_none() {
        problems.push((
            false,
            format!(
                "{name}: no --config argument: the hook reads {}",
                hpcc_config::DEFAULT_PATH
            ),
            "add \"--config=/etc/hpcc/hook.toml\" to \"args\" so the policy in use is written down"
                .into(),
        ));
    }
    if v["hook"]["env"].as_array().is_some_and(|e| {
        e.iter()
            .any(|x| x.as_str().is_some_and(|s| s.starts_with("HPCC_CONFIG=")))
    }) {
        problems.push((
            false,
            format!("{name}: HPCC_CONFIG in \"env\" is ignored: hpcc-hook takes its policy only from --config"),
            "remove HPCC_CONFIG from \"env\" and pass --config=PATH in \"args\"".into(),
        ));
    }
    if let Some(c) = &config {
        if let Err(e) = Policy::load(c) {
            problems.push((
                true,
                format!("{name}: the policy it names does not load: {e}"),
                format!(
                    "fix {} (`HPCC_CONFIG={} hpcc policy check`)",
                    c.display(),
                    c.display()
                ),
            ));
        }
    }
    if problems.is_empty() {
        out.push(Finding::ok(
            CHECK,
            format!(
                "{name} runs {} at {} with {} (timeout {} s)",
                hook.display(),
                stages.join(","),
                config
                    .as_deref()
                    .unwrap_or(Path::new(hpcc_config::DEFAULT_PATH))
                    .display(),
                v["hook"]["timeout"]
            ),
        ));
    }
    for (fatal, m, fix) in problems {
        out.push(if fatal {
            Finding::fail(CHECK, m, fix)
        } else {
            Finding::warn(CHECK, m, fix)
        });
    }
    Some(HookFile {
        file: file.to_owned(),
        hook,
        config,
    })
}

/// Records the findings; returns the hooks.d files that run hpcc-hook.
pub fn check(layout: &Layout, policy: &Policy, out: &mut Vec<Finding>) -> Vec<HookFile> {
    let (mut engines, without) = engines(layout);
    if !layout.hooks_dirs.is_empty() {
        engines = vec![Engine {
            name: "--hooks-dir",
            dirs: layout.hooks_dirs.clone(),
        }];
    }
    for e in &without {
        out.push(Finding::ok(
            CHECK,
            format!("{e} is installed: it reads no hooks.d; hpcc runs there through the runtime's config (docs/{}.md)", e.to_lowercase()),
        ));
    }
    if engines.is_empty() {
        out.push(Finding::skip(
            CHECK,
            "no engine that reads hooks.d (podman, CRI-O) is installed; runc and crun take the hook from each config.json",
        ));
        return vec![];
    }
    let mut files: Vec<HookFile> = Vec::new();
    for e in &engines {
        let dirs: Vec<String> = e.dirs.iter().map(|d| d.display().to_string()).collect();
        match find_hook_file(&e.dirs) {
            None => out.push(Finding::fail(
                CHECK,
                if e.name == "--hooks-dir" {
                    format!("no file in {} runs hpcc-hook", dirs.join(", "))
                } else {
                    format!("{} is installed but none of its hooks directories ({}) has a file that runs hpcc-hook: its containers start unchecked", e.name, dirs.join(", "))
                },
                format!("reinstall the hpcc package (it ships {SHIPPED_HOOKS_FILE}), or copy that file into one of those directories"),
            )),
            Some((file, v)) => {
                if files.iter().any(|f| f.file == file) {
                    continue;
                }
                if let Some(f) = validate(&file, &v, policy, out) {
                    files.push(f);
                }
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn shipped() -> Value {
        serde_json::from_str(include_str!("../../../packaging/hooks.d/hpcc.json")).unwrap()
    }

    #[test]
    fn the_shipped_file_has_everything_but_the_installed_hook() {
        let mut out = Vec::new();
        let f = validate(
            Path::new("hpcc.json"),
            &shipped(),
            &Policy::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(f.config.as_deref(), Some(Path::new("/etc/hpcc/hook.toml")));
        // On a build machine the hook is not installed: that is the only
        // complaint (and the policy, when /etc/hpcc/hook.toml is absent, is
        // the defaults).
        for x in &out {
            if x.status == Status::Fail {
                assert!(x.message.contains("not an executable"), "{x:?}");
            }
        }
        assert!(!out.iter().any(|x| x.status == Status::Warn), "{out:?}");
    }

    #[test]
    fn wrong_stage_no_timeout_and_env_policy_are_named() {
        let v: Value = serde_json::from_str(
            r#"{"version":"1.0.0","hook":{"path":"/bin/sh","args":["hpcc-hook","poststop"],
                "env":["HPCC_CONFIG=/x"]},"when":{"annotations":{"^org":".*"}},"stages":["poststop"]}"#,
        )
        .unwrap();
        let policy = Policy {
            unannotated: UnannotatedAction::Refuse,
            ..Default::default()
        };
        let mut out = Vec::new();
        validate(Path::new("x.json"), &v, &policy, &mut out);
        let text = format!("{out:?}");
        assert!(text.contains("decides only at prestart"), "{text}");
        assert!(text.contains("timeout"), "{text}");
        assert!(text.contains("HPCC_CONFIG"), "{text}");
        assert!(text.contains("never reach it"), "{text}");
    }
}
