//! hpcc's CDI specs through a real podman 4.3 (docs/cdi.md): `hpcc cdi
//! generate` writes them, podman reads them (`--device hpcc.io/mpi=mpich`)
//! and the container runs the host's MPICH; an annotated image still goes
//! through hpcc's decision, the hooks.d entry stands aside for the CDI
//! entry (no double mount), and a musl image gets no linker cache.
//!
//! podman 4.3 reads CDI specs only from `/etc/cdi` and `/var/run/cdi` (no
//! `cdi_spec_dirs` in its containers.conf): each podman runs in a private
//! mount namespace where the test's own spec directory is bound over
//! `/run/cdi`, so no spec is ever visible to the node's other containers.
//! Root, podman, runc, `unshare`.

use hpcc_e2e::{
    bin, fixture_rootfs, host_mpich_version, logged_hook_entry, require, require_root, scratch, Run,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const POLICY: &str = "[mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n[cache]\nenabled = false\n[log]\njournald = false\nstderr = \"info\"\n";

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";

/// A scratch directory with the policy and the specs `hpcc cdi generate`
/// wrote for the static hook (or `hook`).
struct Site {
    dir: PathBuf,
    policy: PathBuf,
    cdi: PathBuf,
}

fn site(name: &str, hook: Option<&Path>) -> Site {
    require_root();
    require("podman");
    require("unshare");
    let dir = scratch(name);
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let cdi = dir.join("cdi");
    let hook = hook.map_or_else(|| bin("hpcc-hook"), Path::to_owned);
    let out = Command::new("timeout")
        .arg("60")
        .arg(bin("hpcc"))
        .arg("--config")
        .arg(&policy)
        .args(["cdi", "generate", "--output-dir"])
        .arg(&cdi)
        .arg("--hook")
        .arg(&hook)
        .output()
        .unwrap();
    assert!(out.status.success(), "hpcc cdi generate: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("offered  hpcc.io/mpi=mpich"), "{text}");
    Site { dir, policy, cdi }
}

/// podman on a copy of a fixture rootfs, in a mount namespace where the
/// site's specs are `/run/cdi`; with a hooks.d entry of the static hook
/// (its stderr kept) when `hooks_d`.
fn podman(
    s: &Site,
    fixture: &str,
    devices: &[&str],
    annotations: &[(&str, &str)],
    hooks_d: bool,
    script: &str,
) -> (Run, String) {
    let hooks = s.dir.join("hooks.d");
    let _ = std::fs::remove_dir_all(&hooks);
    std::fs::create_dir_all(&hooks).unwrap();
    let log = s.dir.join("hooks-d.log");
    let _ = std::fs::remove_file(&log);
    if hooks_d {
        let entry = logged_hook_entry(
            &serde_json::json!({
                "path": bin("hpcc-hook"),
                "args": ["hpcc-hook", "prestart", format!("--config={}", s.policy.display())],
            }),
            &log,
        );
        let hook = serde_json::json!({
            "version": "1.0.0", "hook": entry, "when": {"always": true}, "stages": ["prestart"],
        });
        std::fs::write(hooks.join("hpcc.json"), hook.to_string()).unwrap();
    }
    let rootfs = s.dir.join("rootfs");
    let _ = Command::new("rm").arg("-rf").arg(&rootfs).status();
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture_rootfs(fixture))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    if fixture == "busybox" {
        // An Alpine-shaped image: musl's loader where musl installs it.
        std::fs::create_dir_all(rootfs.join("lib")).unwrap();
        std::fs::copy(
            rootfs.join("bin/busybox"),
            rootfs.join("lib/ld-musl-x86_64.so.1"),
        )
        .unwrap();
    }
    let mut podman = vec![
        "podman".to_string(),
        "--runtime".into(),
        "runc".into(),
        "--cgroup-manager".into(),
        "cgroupfs".into(),
        "--hooks-dir".into(),
        hooks.display().to_string(),
        "run".into(),
        "--rm".into(),
        "--net=none".into(),
        "--ulimit".into(),
        "nofile=20000:20000".into(),
        "--ulimit".into(),
        "nproc=1000:1000".into(),
    ];
    for d in devices {
        podman.push("--device".into());
        podman.push(d.to_string());
    }
    for (k, v) in annotations {
        podman.push("--annotation".into());
        podman.push(format!("{k}={v}"));
    }
    podman.push("--rootfs".into());
    podman.push(rootfs.display().to_string());
    podman.extend(["/bin/sh".into(), "-c".into(), script.into()]);
    // /run/cdi must exist to be bound over; made (and removed) here only
    // when the node has none. One podman at a time in this binary (`cargo
    // test` runs its tests on threads): another's removal of the directory
    // would race this one's bind.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let made = !Path::new("/run/cdi").exists();
    if made {
        std::fs::create_dir(Path::new("/run/cdi")).unwrap();
    }
    let out = hpcc_e2e::private_mount_ns_sh(&["180"], r#"mount --bind "$0" /run/cdi && exec "$@""#)
        .arg(&s.cdi)
        .args(&podman)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if made {
        let _ = std::fs::remove_dir(Path::new("/run/cdi"));
    }
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Prints the MPI the program loads, how many of the container's mounts
/// are the host libmpich and its libhwloc in hpcc's directory (the plan of
/// an annotated image mounts libhwloc there too, the CDI spec does), and
/// whether its linker cache is bound.
const PROBE: &str = "/usr/bin/mpi-version | head -1; \
echo libmpich-mounts=$(grep -c ' /dev/hpcc/lib/mpich/libmpich.so.12 ' /proc/self/mountinfo); \
echo libhwloc-mounts=$(grep -c ' /dev/hpcc/lib/mpich/libhwloc.so.15 ' /proc/self/mountinfo); \
echo ldcache-mounts=$(grep -c ' /etc/ld.so.cache ' /proc/self/mountinfo)";

#[test]
fn generated_specs_are_root_owned_0644_at_the_lowest_version() {
    let s = site("cdi-generate", None);
    let f = s.cdi.join("hpcc.io-mpi.json");
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o644, 0, 0));
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    assert_eq!(spec["cdiVersion"], "0.3.0");
    assert_eq!(spec["kind"], "hpcc.io/mpi");
    let hooks = &spec["devices"][0]["containerEdits"]["hooks"];
    assert_eq!(hooks[0]["hookName"], "createRuntime");
    assert_eq!(hooks[0]["path"], bin("hpcc-hook").display().to_string());
    // Nothing but the spec (no temporary file left), and no other kind.
    let names: Vec<String> = std::fs::read_dir(&s.cdi)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hpcc.io-mpi.json"]);
}

#[test]
fn podman_device_gives_the_host_mpich_and_without_it_the_images_own() {
    let s = site("cdi-podman", None);
    // The control: the same image without the device runs its stand-in.
    let (r, _) = podman(&s, "mpich-app", &[], &[], false, PROBE);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("hpcc stand-in MPICH"), "{r:?}");
    assert!(r.stdout.contains("ldcache-mounts=0"), "{r:?}");
    let (r, _) = podman(&s, "mpich-app", &["hpcc.io/mpi=mpich"], &[], false, PROBE);
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.contains("MPICH Version:") && r.stdout.contains(&host_mpich_version()),
        "{r:?}"
    );
    assert!(r.stdout.contains("libmpich-mounts=1"), "{r:?}");
    assert!(r.stdout.contains("libhwloc-mounts=1"), "{r:?}");
    assert!(r.stdout.contains("ldcache-mounts=1"), "{r:?}");
}

#[test]
fn annotated_image_still_goes_through_the_decision_once() {
    let s = site("cdi-annotated", None);
    // An image this node cannot run is refused by the CDI hook entry,
    // with no hooks.d at all.
    let (r, _) = podman(
        &s,
        "mpich-app",
        &["hpcc.io/mpi=mpich"],
        &[(CPU, "a64fx")],
        false,
        "echo must-not-run",
    );
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("must-not-run"), "{r:?}");
    assert!(
        r.stderr.contains("hpcc: refused") && r.stderr.contains("a64fx"),
        "{r:?}"
    );
    // With hooks.d too, an image annotated for mpi_replace: the hooks.d
    // entry stands aside, the CDI entry decides and applies; each host
    // library is mounted once.
    let (r, log) = podman(
        &s,
        "mpich-app",
        &["hpcc.io/mpi=mpich"],
        &[
            (CPU, "x86_64"),
            (MPI_IMPL, "mpich"),
            (MPI_MODE, "mpi_replace"),
        ],
        true,
        PROBE,
    );
    assert!(r.ok(), "{r:?}\n{log}");
    assert!(r.stdout.contains(&host_mpich_version()), "{r:?}");
    assert!(
        log.contains("the launch is decided by hpcc's CDI hook entry"),
        "{log}"
    );
    assert!(r.stdout.contains("libmpich-mounts=1"), "{r:?}");
    assert!(r.stdout.contains("libhwloc-mounts=1"), "{r:?}");
    assert!(r.stdout.contains("ldcache-mounts=1"), "{r:?}");
}

#[test]
fn musl_image_gets_no_linker_cache_from_a_device() {
    // The hook's stderr kept through a wrapper named as the spec's hook.
    let dir = scratch("cdi-musl-hook");
    let log = dir.join("cdi-hook.log");
    let wrapper = dir.join("hook.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\" 2>>{}\n",
            bin("hpcc-hook").display(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let s = site("cdi-musl", Some(&wrapper));
    let (r, _) = podman(
        &s,
        "busybox",
        &["hpcc.io/mpi=mpich"],
        &[],
        false,
        "echo started; echo ldcache-mounts=$(grep -c ' /etc/ld.so.cache ' /proc/self/mountinfo)",
    );
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("started"), "{r:?}");
    assert!(r.stdout.contains("ldcache-mounts=0"), "{r:?}");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains("the image uses musl") && log.contains("/lib/ld-musl-x86_64.so.1"),
        "{log}"
    );
}
