//! `hpcc match --plan` shows the launch tweaks the hook would apply (issue
//! 3): planned from the real fixture rootfs and the host's real Debian
//! MPICH, libfabric and linker cache, without starting anything.

use hpcc_e2e::{bin, fixture_rootfs, node_cpu, Bundle};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host UCX transport modules (Debian: libucx0).
const HOST_UCX_MODULES: &str = "/usr/lib/x86_64-linux-gnu/ucx";
/// The host's Debian MPICH and libfabric, caches off.
const POLICY: &str = hpcc_e2e::MPICH_FABRIC_POLICY;

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
    // Orange (docs/cli.md: 0 green, 1 orange, 2 red): the image is a
    // generic x86_64 build, degraded on any newer x86_64 node, and both
    // tweaks are possible. Green would mean the CPU check vanished, red a
    // refusal.
    let (want_code, want_score) = (
        node_cpu::family_build_exit(),
        node_cpu::family_build_score().to_uppercase(),
    );
    assert_eq!(code, want_code, "exit {code}: {out}{err}");
    assert!(out.contains(&format!("score: {want_score}")), "{out}");
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
    // The same as JSON, with the same exit code: exactly the host
    // libraries and their dependency closure as the host's own loader
    // resolves it (`ldd`, glibc's libraries left out: the image's glibc
    // serves them), each in its component's directory under /dev/hpcc,
    // each read-only, each with its entry in the container's linker cache.
    let (code, json, err) = hpcc(&policy, &["match", "--plan", "--json", "--bundle", &dir]);
    assert_eq!(code, 1, "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mounts: Vec<(PathBuf, String, bool)> = v["tweaks"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                canonical(m["source"].as_str().unwrap()),
                m["destination"].as_str().unwrap().to_owned(),
                m["readonly"] == true,
            )
        })
        .collect();
    let mut expected = vec![
        (
            canonical(HOST_MPICH),
            "/usr/lib/x86_64-linux-gnu/libmpich.so.12.0.0".to_owned(),
            true,
        ),
        (
            canonical(HOST_LIBFABRIC),
            "/usr/lib/x86_64-linux-gnu/libfabric.so.1.0.0".to_owned(),
            true,
        ),
    ];
    for (lib, component) in [(HOST_MPICH, "mpich"), (HOST_LIBFABRIC, "libfabric")] {
        for (soname, path) in ldd_closure(lib) {
            expected.push((path, format!("/dev/hpcc/lib/{component}/{soname}"), true));
        }
    }
    // Debian's MPICH is built on UCX: its transport modules come along,
    // next to the host libucs in hpcc's directory (where libucs looks),
    // with what they need that the MPI's own closure lacks.
    expected.push((
        canonical(HOST_UCX_MODULES),
        "/dev/hpcc/lib/mpich/ucx".to_owned(),
        true,
    ));
    for module in std::fs::read_dir(HOST_UCX_MODULES).unwrap().flatten() {
        let p = module.path();
        if !p.to_string_lossy().ends_with(".so") {
            continue;
        }
        for (soname, path) in ldd_closure(p.to_str().unwrap()) {
            let dest = format!("/dev/hpcc/lib/mpich/{soname}");
            // A module another one needs is in the same directory, found
            // there through its RUNPATH ($ORIGIN): already mounted with it.
            let in_modules = path.starts_with(canonical(HOST_UCX_MODULES));
            if !in_modules && !expected.iter().any(|(_, d, _)| *d == dest) {
                expected.push((path, dest, true));
            }
        }
    }
    let sorted = |mut v: Vec<(PathBuf, String, bool)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(mounts), sorted(expected), "{json}");
    // The text shows the same mounts: one `mount` line per JSON mount.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  mount  ")).count(),
        v["tweaks"]["mounts"].as_array().unwrap().len(),
        "{out}"
    );
    // Every library hpcc puts in its own directory is in the container's
    // linker cache under that path, and nothing else is.
    let mut in_dev: Vec<String> = v["tweaks"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .filter(|d| d.starts_with("/dev/hpcc/lib/") && !d.ends_with("/ucx"))
        .map(str::to_owned)
        .collect();
    let mut cached: Vec<String> = v["tweaks"]["ld_cache"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect();
    in_dev.sort();
    cached.sort();
    assert_eq!(in_dev, cached, "{json}");
}

const HOST_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
const HOST_LIBFABRIC: &str = "/usr/lib/x86_64-linux-gnu/libfabric.so.1";

/// glibc's own libraries: the image's glibc provides them, hpcc never
/// mounts the host's.
const GLIBC: &[&str] = &[
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
];

fn canonical(p: &str) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A host library's dependencies, transitively, as the host's `ldd` lists
/// them (`soname => path`), glibc's left out.
fn ldd_closure(lib: &str) -> Vec<(String, PathBuf)> {
    let out = Command::new("ldd").arg(lib).output().unwrap();
    assert!(out.status.success(), "ldd {lib}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (soname, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            (!GLIBC.contains(&soname)).then(|| (soname.to_owned(), canonical(path)))
        })
        .collect()
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
    let (code, out, err) = hpcc(
        &policy,
        &["match", "--plan", "--annotations", ann.to_str().unwrap()],
    );
    // Orange: generic x86_64 build, MPI replacement possible.
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("decision: start"), "{out}");
    assert!(out.contains("was not inspected"), "{out}{err}");
    assert!(
        out.contains("-> /dev/hpcc/lib/mpich/libmpich.so.12"),
        "{out}"
    );
}

/// Runs a bounded host command, failing the test with its output.
fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

#[test]
fn plan_replaces_every_libfabric_of_an_ngc_shaped_image_and_injects_the_nccl_plugin() {
    // A stand-in for the host's aws-ofi-nccl plugin (Debian 12 packages
    // none): a real shared object with the plugin's soname, linked against
    // the host libfabric.
    let dir = hpcc_e2e::scratch("tp-nccl-host");
    let src = dir.join("plugin.c");
    std::fs::write(
        &src,
        "extern unsigned int fi_version(void);\nunsigned int hpcc_e2e_plugin(void) { return fi_version(); }\n",
    )
    .unwrap();
    let plugin = dir.join("libnccl-net.so");
    sh(Command::new("timeout")
        .args([
            "60",
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libnccl-net.so",
            "-o",
        ])
        .arg(&plugin)
        .arg(&src)
        .arg(HOST_LIBFABRIC));
    // The mpich-app fixture (libfabric in /usr/lib/x86_64-linux-gnu and a
    // linker cache), grown into the NGC/AWS PyTorch layout with real ELF
    // files: EFA's libfabric, a wheel's libfabric and NCCL, aws-ofi-nccl's
    // plugin, and the LD_LIBRARY_PATH those images set.
    let mut b = Bundle::new("tp-nccl", &fixture_rootfs("mpich-app"));
    let root = b.rootfs();
    let wheel = "usr/local/lib/python3.10/dist-packages";
    for (from, to) in [
        (
            HOST_LIBFABRIC.to_string(),
            "opt/amazon/efa/lib/libfabric.so.1".to_string(),
        ),
        (
            HOST_LIBFABRIC.into(),
            format!("{wheel}/torch/lib/libfabric.so.1"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libz.so.1".into(),
            format!("{wheel}/torch/lib/libnccl.so.2"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libz.so.1".into(),
            "opt/amazon/aws-ofi-nccl/lib/libnccl-net.so".into(),
        ),
    ] {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    b.annotate(
        "org.supercontainers.hardware.cpu.optimized.version",
        "x86_64",
    )
    .annotate("org.supercontainers.mpi.portability.mode", "libfabric_inject")
    .env(&["LD_LIBRARY_PATH=/opt/amazon/efa/lib:/opt/amazon/aws-ofi-nccl/lib"])
    .with_hook(&format!(
        "[libfabric]\nlibrary = \"{HOST_LIBFABRIC}\"\nnccl_plugin = \"{}\"\nnccl_net = \"AWS Libfabric\"\n\n[cache]\nenabled = false\n\n[log]\njournald = false\n",
        plugin.display()
    ))
    .write();
    let policy = b.dir.join("hook.toml");
    let (code, json, err) = hpcc(
        &policy,
        &[
            "match",
            "--plan",
            "--json",
            "--bundle",
            b.dir.to_str().unwrap(),
        ],
    );
    assert!(code == 0 || code == 1, "exit {code}: {json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let source_of = |dest: &str| -> Option<PathBuf> {
        v["tweaks"]["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
            .map(|m| canonical(m["source"].as_str().unwrap()))
    };
    let host_lf = canonical(HOST_LIBFABRIC);
    // mpich-app's own libfabric.so.1 resolves to its versioned file.
    let system =
        std::fs::canonicalize(root.join("usr/lib/x86_64-linux-gnu/libfabric.so.1")).unwrap();
    let system = Path::new("/").join(
        system
            .strip_prefix(std::fs::canonicalize(&root).unwrap())
            .unwrap(),
    );
    for dest in [
        system.display().to_string(),
        "/opt/amazon/efa/lib/libfabric.so.1".into(),
        format!("/{wheel}/torch/lib/libfabric.so.1"),
    ] {
        assert_eq!(source_of(&dest).as_ref(), Some(&host_lf), "{dest}: {json}");
    }
    for dest in [
        "/dev/hpcc/lib/libfabric/libnccl-net-ofi.so",
        "/dev/hpcc/lib/libfabric/libnccl-net.so",
        "/opt/amazon/aws-ofi-nccl/lib/libnccl-net.so",
    ] {
        assert_eq!(
            source_of(dest).as_ref(),
            Some(&canonical(plugin.to_str().unwrap())),
            "{dest}: {json}"
        );
    }
    let env: Vec<(String, String)> = v["tweaks"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        env.contains(&("NCCL_NET_PLUGIN".into(), "ofi".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("NCCL_NET".into(), "AWS Libfabric".into())),
        "{env:?}"
    );
    assert!(
        v["tweaks"]["ld_cache"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["soname"] == "libnccl-net-ofi.so"),
        "{json}"
    );
}
