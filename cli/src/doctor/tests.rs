//! The doctor on scratch installations: a fake hook (a shell script that
//! starts or refuses by the image's CPU target), hooks.d files, Slurm
//! configurations.

use super::*;
use std::os::unix::fs::PermissionsExt;

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hpcc-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn write(&self, rel: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A hook that refuses (exit 3) an a64fx image and starts others.
    fn fake_hook(&self) -> PathBuf {
        self.write(
            "libexec/hpcc-hook",
            "#!/bin/sh\nstate=$(cat)\ncase $state in *a64fx*) echo 'hpcc: refused to start container x: a64fx' >&2; exit 3;; esac\nexit 0\n",
            0o755,
        )
    }

    fn layout(&self, policy: &Path, hook: &Path) -> Layout {
        Layout {
            policy: policy.to_owned(),
            hook: hook.to_owned(),
            hooks_dirs: vec![self.dir.join("hooks.d")],
            slurm_conf: self.dir.join("etc/slurm/slurm.conf"),
            journal_socket: self.dir.join("journal.socket"),
            root: self.dir.clone(),
            dry_run: true,
            fix: false,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn statuses(r: &Report, check: &str) -> Vec<Status> {
    r.findings
        .iter()
        .filter(|f| f.check == check)
        .map(|f| f.status)
        .collect()
}

/// A policy whose cache directory cannot exist (its parent is a file).
fn policy(s: &Scratch) -> PathBuf {
    let blocker = s.write("not-a-dir", "", 0o644);
    s.write(
        "hook.toml",
        &format!(
            "[cache]\ndir = \"{}/cache\"\n[log]\njournald = false\n",
            blocker.display()
        ),
        0o644,
    )
}

#[test]
fn a_complete_installation_is_healthy() {
    let s = Scratch::new("healthy");
    let hook = s.fake_hook();
    let policy = s.write(
        "hook.toml",
        "[cache]\nenabled = false\n[log]\njournald = false\n",
        0o644,
    );
    s.write(
        "hooks.d/hpcc.json",
        &serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": hook, "args": ["hpcc-hook", "prestart", format!("--config={}", policy.display())], "timeout": 10},
            "when": {"always": true},
            "stages": ["prestart"],
        })
        .to_string(),
        0o644,
    );
    let r = examine(&s.layout(&policy, &hook));
    let text = r.text(false);
    // Files under the scratch dir are root's only when the tests run as root.
    if is_root() && not_root_only(&policy).is_none() {
        assert!(r.healthy, "{text}");
        assert_eq!(r.exit_code(), 0);
    }
    assert_eq!(
        statuses(&r, "dry-run"),
        vec![Status::Ok, Status::Ok],
        "{text}"
    );
    assert_eq!(statuses(&r, "hooks.d").first(), Some(&Status::Ok), "{text}");
    assert_eq!(statuses(&r, "slurm"), vec![Status::Skip], "{text}");
    assert!(text.contains("healthy"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["findings"].as_array().unwrap().len() >= 5, "{json}");
}

#[test]
fn a_broken_policy_is_a_problem_with_a_fix() {
    let s = Scratch::new("badpolicy");
    let hook = s.fake_hook();
    let policy = s.write("hook.toml", "[checks]\ncpus = \"warn\"\n", 0o644);
    let r = examine(&s.layout(&policy, &hook));
    assert!(!r.healthy);
    assert_eq!(r.exit_code(), 1);
    let f = r.findings.iter().find(|f| f.check == "policy").unwrap();
    assert_eq!(f.status, Status::Fail);
    assert!(f.message.contains("cpus"), "{f:?}");
    assert!(
        f.fix.as_deref().unwrap().contains("hpcc policy check"),
        "{f:?}"
    );
}

#[test]
fn a_hook_that_lets_everything_through_fails_the_dry_run() {
    let s = Scratch::new("permissive");
    let hook = s.write(
        "libexec/hpcc-hook",
        "#!/bin/sh\ncat >/dev/null\nexit 0\n",
        0o755,
    );
    let policy = policy(&s);
    let mut layout = s.layout(&policy, &hook);
    layout.hooks_dirs = vec![s.dir.join("no-hooks.d")];
    let r = examine(&layout);
    assert_eq!(
        statuses(&r, "dry-run"),
        vec![Status::Ok, Status::Fail],
        "{}",
        r.text(false)
    );
    assert_eq!(
        statuses(&r, "hooks.d"),
        vec![Status::Fail],
        "{}",
        r.text(false)
    );
    assert_eq!(statuses(&r, "fingerprint-cache"), vec![Status::Fail]);
}

#[test]
fn slurm_with_a_plain_runc_oci_conf_is_a_problem() {
    let s = Scratch::new("slurm");
    let hook = s.fake_hook();
    let policy = policy(&s);
    let plugstack = s.dir.join("etc/slurm/plugstack.conf");
    s.write(
        "etc/slurm/slurm.conf",
        &format!(
            "ClusterName=test\nPlugStackConfig={}\n",
            plugstack.display()
        ),
        0o644,
    );
    s.write("etc/slurm/plugstack.conf", "", 0o644);
    s.write(
        "usr/lib/x86_64-linux-gnu/slurm-wlm/hpcc_spank.so",
        "",
        0o644,
    );
    s.write(
        "etc/slurm/oci.conf",
        "RunTimeRun=\"runc run %n -b %b\"\n",
        0o644,
    );
    let mut layout = s.layout(&policy, &hook);
    layout.dry_run = false;
    let r = examine(&layout);
    let slurm: Vec<&Finding> = r.findings.iter().filter(|f| f.check == "slurm").collect();
    assert!(
        slurm
            .iter()
            .any(|f| f.status == Status::Fail && f.message.contains("not hpcc-runtime")),
        "{}",
        r.text(false)
    );
    assert!(!r.healthy);
}

#[test]
fn crio_hooks_dir_from_a_drop_in_is_honoured() {
    let s = Scratch::new("crio");
    let hook = s.fake_hook();
    let policy = s.write("hook.toml", "", 0o644);
    s.write("usr/bin/crio", "#!/bin/sh\n", 0o755);
    // The drop-in of docs/cri-o-kubernetes.md, with the directories under the scratch root.
    s.write(
        "etc/crio/crio.conf.d/50-hpcc.conf",
        "[crio.runtime]\nhooks_dir = [\n  \"/opt/hooks.d\",\n]\n",
        0o644,
    );
    s.write(
        "opt/hooks.d/hpcc.json",
        &serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": hook, "args": ["hpcc-hook", "prestart", "--config=/etc/hpcc/hook.toml"], "timeout": 10},
            "when": {"always": true},
            "stages": ["prestart"],
        })
        .to_string(),
        0o644,
    );
    let mut layout = s.layout(&policy, &hook);
    layout.hooks_dirs.clear();
    layout.dry_run = false;
    let mut out = Vec::new();
    let files = engines::check(&layout, &hpcc_config::Policy::default(), &mut out);
    assert_eq!(files.len(), 1, "{out:?}");
    assert!(
        files[0].file.ends_with("opt/hooks.d/hpcc.json"),
        "{files:?}"
    );
    assert_eq!(
        out.iter().filter(|f| f.check == "hooks.d").count(),
        1,
        "{out:?}"
    );
}

#[test]
fn stale_cdi_specs_warn_and_fix_writes_them_where_they_are() {
    let s = Scratch::new("cdi");
    let hook = s.fake_hook();
    let policy = s.write(
        "hook.toml",
        "[mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n[cache]\nenabled = false\n[log]\njournald = false\n",
        0o644,
    );
    let mut layout = s.layout(&policy, &hook);
    let cdi = |layout: &Layout| -> Vec<Finding> {
        let mut f = Vec::new();
        cdi::check(layout, &mut f);
        f
    };
    // None yet: a warning naming the file and the fix.
    let f = cdi(&layout);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].status, Status::Warn, "{f:?}");
    assert!(
        f[0].message.contains("var/run/cdi/hpcc.io-mpi.json"),
        "{f:?}"
    );
    assert!(f[0].fix.as_deref().unwrap().contains("hpcc doctor --fix"));
    // An admin's copy in /etc/cdi, out of date: --fix rewrites it there.
    let etc = s.write("etc/cdi/hpcc.io-mpi.json", "{}", 0o644);
    layout.fix = true;
    let f = cdi(&layout);
    assert_eq!(f[0].status, Status::Ok, "{f:?}");
    assert!(f[0].message.contains("regenerated"), "{f:?}");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&etc).unwrap()).unwrap();
    assert_eq!(spec["kind"], "hpcc.io/mpi");
    assert!(!s.dir.join("var/run/cdi").exists());
    // Now current, with or without --fix.
    layout.fix = false;
    let f = cdi(&layout);
    assert_eq!(f[0].status, Status::Ok, "{f:?}");
    assert!(f[0].message.contains("are current"), "{f:?}");
}
