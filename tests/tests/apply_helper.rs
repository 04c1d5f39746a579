//! The apply layer for real, without a runtime: `hpcc-hook --hpcc-apply-child`
//! (the helper the hook starts) applies hand-written tweaks to a fixture
//! rootfs on behalf of a process in its own mount namespace
//! (`unshare -m`), as runc's container init is at prestart. Proves the Linux
//! system calls (openat2 in root, open_tree/mount_setattr/move_mount, the
//! linker cache hpcc writes, rollback by handle) independently of the
//! planner.
//!
//! Needs root and the fixtures; fails, never skips.

use hpcc_e2e::{
    bin, crun_namespace_mounts, fixture_rootfs, host_mountinfo, repo_root, require, require_root,
    run_crun, run_runc, scratch, Bundle,
};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const HOST_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
const HOST_HWLOC: &str = "/usr/lib/x86_64-linux-gnu/libhwloc.so.15";
const ESCAPE_TARGET: &str = "/tmp/hpcc-escape-target";

/// A process in a new mount namespace (slave of the host's, like runc's),
/// killed on drop.
struct NsProcess(Child);

impl NsProcess {
    fn start() -> NsProcess {
        require("unshare");
        // The helper is the static hook, built on first use (minutes in a
        // fresh clone on a busy machine): built before the namespace's
        // process starts, so that its life does not run out meanwhile.
        let _ = bin("hpcc-hook");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "slave", "sleep", "3600"])
            .spawn()
            .unwrap();
        let p = NsProcess(child);
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        for _ in 0..200 {
            if let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/mnt", p.pid())) {
                if ns != own {
                    return p;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare did not create a mount namespace");
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Runs a shell command inside its mount namespace.
    fn sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m", "sh", "-c", script])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_rootfs(fixture: &str, name: &str) -> PathBuf {
    let dir = scratch(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture_rootfs(fixture))
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    dir.join("rootfs")
}

fn mount(src: &str, dst: &str) -> Value {
    json!({"source": src, "destination": dst, "readonly": true, "reason": "e2e"})
}

/// Sends one request to the helper; returns its JSON reply.
fn helper(tweaks: Value, rootfs: &Path, pid: i32) -> Value {
    helper_with_cache(tweaks, rootfs, pid, None)
}

/// The same, with a linker cache file to bind.
fn helper_with_cache(tweaks: Value, rootfs: &Path, pid: i32, cache: Option<&Path>) -> Value {
    let req =
        json!({"tweaks": tweaks, "target": {"rootfs": rootfs, "pid": pid, "ld_cache": cache}});
    let mut child = Command::new(bin("hpcc-hook"))
        .arg("--hpcc-apply-child")
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "helper reply is not JSON ({e}): {:?} {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn tweaks(mounts: Vec<Value>, cache: &[(&str, &str)]) -> Value {
    let ld_cache: Vec<Value> = cache
        .iter()
        .map(|(soname, path)| json!({"soname": soname, "path": path, "flags": 0x0303}))
        .collect();
    json!({"mounts": mounts, "devices": [], "env": [], "ld_cache": ld_cache})
}

/// The container's cache for `rootfs` with `cache` in front, as hpcc-hook
/// writes it before the helper binds it.
fn cache_file(rootfs: &Path, cache: &[(&str, &str)], store: &Path) -> PathBuf {
    let entries: Vec<hpcc_common::plan::CacheEntry> = cache
        .iter()
        .map(|(soname, path)| hpcc_common::plan::CacheEntry {
            soname: soname.to_string(),
            path: path.into(),
            flags: 0x0303,
        })
        .collect();
    hpcc_common::apply::ldcache_file::prepare(rootfs, &entries, store).unwrap()
}

fn sha(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn lines_mentioning(info: &str, needle: &str) -> Vec<String> {
    info.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn helper_mounts_read_only_private_in_the_container_namespace_only() {
    require_root();
    let rootfs = copy_rootfs("mpich-app", "apply-helper-mpich");
    let image_lib = rootfs.join("usr/lib/x86_64-linux-gnu/libmpich.so.12.0.0");
    let image_sha = sha(image_lib.to_str().unwrap());
    let ns = NsProcess::start();
    let image_cache = rootfs.join("etc/ld.so.cache");
    let image_cache_sha = sha(image_cache.to_str().unwrap());
    let entries = [("libhwloc.so.15", "/opt/hpcc/lib/mpi/libhwloc.so.15")];
    let store = scratch("apply-helper-store");
    let cache = cache_file(&rootfs, &entries, &store);
    let reply = helper_with_cache(
        tweaks(
            vec![
                mount(HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12"),
                mount(HOST_HWLOC, "/opt/hpcc/lib/mpi/libhwloc.so.15"),
            ],
            &entries,
        ),
        &rootfs,
        ns.pid(),
        Some(&cache),
    );
    let applied = &reply["Applied"];
    assert!(applied.is_object(), "{reply}");
    assert_eq!(applied["mounts"].as_array().unwrap().len(), 2, "{reply}");
    // Inside the namespace: the host library, read-only, on the image's file
    // (the symlink libmpich.so.12 -> libmpich.so.12.0.0 followed in root).
    let host_sha = sha(HOST_MPICH);
    let (ok, out) = ns.sh(&format!("sha256sum {}", image_lib.display()));
    assert!(ok && out.starts_with(&host_sha), "{out} vs host {host_sha}");
    let (ok, out) = ns.sh(&format!("echo x >> {} 2>&1", image_lib.display()));
    assert!(!ok, "mount is writable: {out}");
    let (_, info) = ns.sh("cat /proc/self/mountinfo");
    let ours = lines_mentioning(&info, rootfs.to_str().unwrap());
    assert_eq!(ours.len(), 3, "{ours:?}");
    for l in &ours {
        let (before, after) = l.split_once(" - ").unwrap();
        assert!(
            before.contains(" ro,") || before.contains(" ro "),
            "not ro: {l}"
        );
        assert!(before.contains("nosuid") && before.contains("nodev"), "{l}");
        assert!(!before.contains("shared:"), "not private: {l}");
        assert!(!after.is_empty());
    }
    // In the namespace the container's cache is hpcc's file: the
    // dependency first, the image's own entries kept. Read with the host's
    // ldconfig -p -C (it only reads the file it is given).
    let (ok, listed) = ns.sh(&format!("/sbin/ldconfig -p -C {}", image_cache.display()));
    assert!(ok, "{listed}");
    assert!(
        listed.contains("libhwloc.so.15 (libc6,x86-64) => /opt/hpcc/lib/mpi/libhwloc.so.15"),
        "{listed}"
    );
    assert!(
        listed.contains("libmpich.so.12"),
        "image entries lost: {listed}"
    );
    // The host: no mount, the image's files on disk untouched (its cache
    // was never rewritten).
    assert!(lines_mentioning(&host_mountinfo(), rootfs.to_str().unwrap()).is_empty());
    assert_eq!(sha(image_lib.to_str().unwrap()), image_sha);
    assert_eq!(sha(image_cache.to_str().unwrap()), image_cache_sha);
    // After the namespace dies, nothing anywhere.
    drop(ns);
    assert!(lines_mentioning(&host_mountinfo(), rootfs.to_str().unwrap()).is_empty());
}

#[test]
fn helper_never_follows_an_image_symlink_onto_the_host() {
    require_root();
    assert!(
        !Path::new(ESCAPE_TARGET).exists(),
        "{ESCAPE_TARGET} exists on the host before the test: remove it"
    );
    let rootfs = copy_rootfs("escape", "apply-helper-escape");
    let ns = NsProcess::start();
    let before = host_mountinfo();
    // /usr/lib/x86_64-linux-gnu -> /tmp/hpcc-escape-target (absolute) in the
    // image: the mount and the created directory must land in the rootfs.
    let reply = helper(
        tweaks(
            vec![
                mount(HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12"),
                mount(
                    HOST_HWLOC,
                    "/usr/lib/x86_64-linux-gnu/hpcc-new/libhwloc.so.15",
                ),
            ],
            &[],
        ),
        &rootfs,
        ns.pid(),
    );
    assert!(reply["Applied"].is_object(), "{reply}");
    assert!(
        !Path::new(ESCAPE_TARGET).exists(),
        "the helper created {ESCAPE_TARGET} on the host"
    );
    assert!(rootfs
        .join("tmp/hpcc-escape-target/hpcc-new/libhwloc.so.15")
        .is_file());
    let (_, info) = ns.sh("cat /proc/self/mountinfo");
    let ours = lines_mentioning(&info, rootfs.to_str().unwrap());
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(
        ours.iter().all(|l| l.contains("/tmp/hpcc-escape-target/")),
        "{ours:?}"
    );
    assert_eq!(before, host_mountinfo());
}

#[test]
fn helper_refuses_a_target_in_its_own_namespace() {
    require_root();
    let rootfs = copy_rootfs("mpich-app", "apply-helper-shared");
    let before = host_mountinfo();
    // Our own pid: the "container" shares the helper's namespace, as at
    // createContainer or without a mount namespace.
    let reply = helper(
        tweaks(
            vec![mount(HOST_HWLOC, "/opt/hpcc/lib/x/libhwloc.so.15")],
            &[],
        ),
        &rootfs,
        std::process::id() as i32,
    );
    let msg = reply["Failed"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("shares the hook's mount namespace"), "{reply}");
    assert!(!rootfs.join("opt/hpcc").exists());
    assert_eq!(before, host_mountinfo());
}

#[test]
fn helper_rolls_back_a_failed_apply() {
    require_root();
    let rootfs = copy_rootfs("mpich-app", "apply-helper-rollback");
    let ns = NsProcess::start();
    let image_lib = rootfs.join("usr/lib/x86_64-linux-gnu/libmpich.so.12.0.0");
    let image_sha = sha(image_lib.to_str().unwrap());
    let reply = helper(
        tweaks(
            vec![
                mount(HOST_HWLOC, "/opt/hpcc/lib/x/libhwloc.so.15"),
                mount(HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12"),
                mount(
                    "/nonexistent/hpcc/libnothing.so.1",
                    "/opt/hpcc/lib/y/libnothing.so.1",
                ),
            ],
            &[],
        ),
        &rootfs,
        ns.pid(),
    );
    let msg = reply["Failed"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("/nonexistent/hpcc/libnothing.so.1") && msg.contains("undone"),
        "{reply}"
    );
    // Both mounts made before the failure are gone from the container's
    // namespace (undone by their handles); the image's library is its own
    // again there.
    let (_, info) = ns.sh("cat /proc/self/mountinfo");
    assert!(
        lines_mentioning(&info, rootfs.to_str().unwrap()).is_empty(),
        "{info}"
    );
    let (ok, out) = ns.sh(&format!("sha256sum {}", image_lib.display()));
    assert!(ok && out.starts_with(&image_sha), "{out}");
    // Mount targets hpcc created stay, empty (another launch of the same
    // image may be using them); nothing else in the image changed.
    let made = rootfs.join("opt/hpcc/lib/x/libhwloc.so.15");
    assert_eq!(std::fs::metadata(&made).map(|m| m.len()).ok(), Some(0));
}

/// A bundle whose prestart hook applies `tweaks` through hpcc-hook's apply
/// helper (tests/setup/apply-tweaks-hook.sh): the apply layer with a real
/// runtime at the real stage, without the planner.
fn bundle_applying(name: &str, fixture: &str, tweaks: Value, script: &str) -> (Bundle, PathBuf) {
    require("jq");
    let mut b = Bundle::new(name, &fixture_rootfs(fixture));
    let tw = b.dir.join("tweaks.json");
    std::fs::write(&tw, tweaks.to_string()).unwrap();
    let reply = b.dir.join("reply.json");
    b.args(&["/bin/sh", "-c", script]);
    b.config_mut()["hooks"] = json!({
        "prestart": [{
            "path": repo_root().join("tests/setup/apply-tweaks-hook.sh"),
            "args": ["apply-tweaks-hook.sh", bin("hpcc-hook"), tw, reply],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        }]
    });
    (b, reply)
}

/// runc and crun at prestart: library mounts and a device that runc's
/// default device cgroup denies (/dev/loop-control, 10:237), granted by
/// hpcc in the container's cgroup v1 `devices.allow`.
#[test]
fn runtimes_at_prestart_see_mounts_and_granted_device() {
    require_root();
    let host_sha = sha(HOST_MPICH);
    let tw = json!({
        "mounts": [
            mount(HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12"),
            mount(HOST_HWLOC, "/opt/hpcc/lib/mpi/libhwloc.so.15"),
        ],
        "devices": [{
            "path": "/dev/hpcc-test0", "host_path": "/dev/loop-control", "kind": "c",
            "major": 10, "minor": 237, "access": "rw", "reason": "e2e"
        }],
        "env": [],
        "ld_cache": [],
    });
    let script = "sha256sum /usr/lib/x86_64-linux-gnu/libmpich.so.12; \
        exec 3<>/dev/hpcc-test0 && echo device-open-ok";
    for runtime in ["runc", "crun"] {
        let (b, reply) = bundle_applying(
            &format!("apply-rt-{runtime}"),
            "mpich-app",
            tw.clone(),
            script,
        );
        let before = host_mountinfo();
        let r = if runtime == "runc" {
            run_runc(&b)
        } else {
            run_crun(&b)
        };
        let reply = std::fs::read_to_string(&reply).unwrap_or_default();
        assert!(r.ok(), "{runtime}: {r:?}\nreply: {reply}");
        assert!(
            r.stdout.contains(&host_sha),
            "{runtime}: not the host lib: {r:?}"
        );
        assert!(
            r.stdout.contains("device-open-ok"),
            "{runtime}: {r:?}\n{reply}"
        );
        let leaked: Vec<_> = host_mountinfo()
            .lines()
            .filter(|l| !before.contains(*l) && l.contains(b.dir.to_str().unwrap()))
            .map(str::to_owned)
            .collect();
        assert!(leaked.is_empty(), "{runtime}: {leaked:?}");
        if runtime == "crun" {
            // crun and its hooks ran in a namespace of their own (run_crun):
            // a leak would be there, not on the host.
            let added = crun_namespace_mounts(&b).added();
            assert!(added.is_empty(), "crun's namespace: {added:?}");
        }
        if runtime == "runc" {
            // The hybrid host: runc restricts devices through cgroup v1.
            assert!(reply.contains("\"Added\""), "{reply}");
        }
    }
}

/// The same device without hpcc's grant is refused by runc's device cgroup:
/// the grant above is what makes it usable (the test can fail).
#[test]
fn runc_denies_the_device_without_the_grant() {
    require_root();
    let (mut b, _) = bundle_applying(
        "apply-rt-nogrant",
        "mpich-app",
        json!({"mounts": [], "devices": [], "env": [], "ld_cache": []}),
        "exec 3<>/dev/hpcc-test0 && echo device-open-ok",
    );
    // Bind the node by hand in the container's namespace, no cgroup write.
    let hook = b.dir.join("bind-only.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\nstate=$(cat); pid=$(printf '%s' \"$state\" | jq -r .pid); b=$(printf '%s' \"$state\" | jq -r .bundle)\n\
         nsenter -t \"$pid\" -m sh -c \"touch $b/rootfs/dev/hpcc-test0 && mount --bind /dev/loop-control $b/rootfs/dev/hpcc-test0\"\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    b.config_mut()["hooks"] =
        json!({"prestart": [{"path": hook, "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}]});
    let r = run_runc(&b);
    assert!(!r.stdout.contains("device-open-ok"), "{r:?}");
    assert!(r.stderr.contains("Operation not permitted"), "{r:?}");
}
