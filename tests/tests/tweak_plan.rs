//! `hpcc match --plan` shows the launch tweaks the hook would apply (issue
//! 3): planned from the real fixture rootfs and the host's real Debian
//! MPICH, libfabric and linker cache, without starting anything.

use hpcc_e2e::{bin, fixture_rootfs, Bundle};
use std::path::Path;
use std::process::Command;

const POLICY: &str = r#"
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
env = { MPICH_E2E = "1" }

[libfabric]
library = "/usr/lib/x86_64-linux-gnu/libfabric.so.1"

[cache]
enabled = false

[log]
journald = false
"#;

fn hpcc(policy: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("hpcc"))
        .args(args)
        .env("HPCC_CONFIG", policy)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn bundle(name: &str, fixture: &str, modes: &str, implementation: &str) -> Bundle {
    let mut b = Bundle::new(name, &fixture_rootfs(fixture));
    b.annotate(
        "org.supercontainers.hardware.cpu.optimized.version",
        "x86_64",
    )
    .annotate("org.supercontainers.mpi.implementation", implementation)
    .annotate("org.supercontainers.mpi.portability.mode", modes)
    .with_hook(POLICY)
    .write();
    b
}

#[test]
fn plan_shows_mpi_and_libfabric_tweaks_from_the_rootfs() {
    let b = bundle(
        "tp-mpich",
        "mpich-app",
        "mpi_replace,libfabric_inject",
        "mpich",
    );
    let policy = b.dir.join("hook.toml");
    let dir = b.dir.display().to_string();
    let (code, out, err) = hpcc(&policy, &["match", "--plan", "--bundle", &dir]);
    assert!(code == 0 || code == 1, "exit {code}: {out}{err}");
    assert!(out.contains("decision: start"), "{out}");
    // The host library over the image's own file (resolved in the rootfs).
    let line = out
        .lines()
        .find(|l| l.contains("mount  /usr/lib/x86_64-linux-gnu/libmpich.so.12 -> "))
        .unwrap_or_else(|| panic!("no MPICH mount in:\n{out}"));
    assert!(
        line.contains("-> /usr/lib/x86_64-linux-gnu/libmpich.so.12") && line.contains("(ro)"),
        "{line}"
    );
    // Its dependencies found through the host linker cache, glibc skipped.
    // runc spec mounts a tmpfs at /dev: hpcc's own directories go there,
    // so nothing is created in the image.
    assert!(out.contains("/dev/hpcc/lib/mpich/libhwloc.so.15"), "{out}");
    assert!(!out.contains("/dev/hpcc/lib/mpich/libc.so.6"), "{out}");
    assert!(
        out.contains("-> /usr/lib/x86_64-linux-gnu/libfabric.so.1"),
        "{out}"
    );
    assert!(out.contains("env    MPICH_E2E=1"), "{out}");
    assert!(
        out.contains("ld.so  libhwloc.so.15 => /dev/hpcc/lib/mpich/libhwloc.so.15"),
        "{out}"
    );
    // The same as JSON.
    let (_, json, _) = hpcc(&policy, &["match", "--plan", "--json", "--bundle", &dir]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["tweaks"]["mounts"].as_array().unwrap().len() > 3,
        "{json}"
    );
}

#[test]
fn plan_refuses_an_image_without_its_mpi_library() {
    // busybox carries no libmpich.so.12 and no ld.so.cache.
    let b = bundle("tp-nompi", "busybox", "mpi_replace", "mpich");
    let policy = b.dir.join("hook.toml");
    let dir = b.dir.display().to_string();
    let (code, out, err) = hpcc(&policy, &["match", "--plan", "--bundle", &dir]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("decision: REFUSE"), "{out}");
    assert!(
        out.contains("libmpi.so.12 or libmpich.so.12 was not found")
            && out.contains("ld.so.cache: absent"),
        "{out}"
    );
}

#[test]
fn plan_from_annotations_only_says_the_image_was_not_inspected() {
    let dir = hpcc_e2e::scratch("tp-annotations");
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let ann = dir.join("image.json");
    std::fs::write(
        &ann,
        r#"{"org.supercontainers.hardware.cpu.optimized.version":"x86_64",
            "org.supercontainers.mpi.implementation":"mpich",
            "org.supercontainers.mpi.portability.mode":"mpi_replace"}"#,
    )
    .unwrap();
    let (_, out, err) = hpcc(
        &policy,
        &["match", "--plan", "--annotations", ann.to_str().unwrap()],
    );
    assert!(out.contains("was not inspected"), "{out}{err}");
    assert!(
        out.contains("-> /dev/hpcc/lib/mpich/libmpich.so.12"),
        "{out}"
    );
}
