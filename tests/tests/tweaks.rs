//! Launch tweaks end to end (issue 3): real runc and crun run fixture
//! bundles with `hpcc-hook` as their prestart hook; the hook plans and
//! applies host MPI replacement, libfabric injection and CDI devices inside
//! the container, and refuses what cannot work.
//!
//! Needs root, runc, crun and the fixtures (built on demand); fails, never
//! skips.

use hpcc_e2e::{
    bin, crun_namespace_mounts, fixture_rootfs, host_mountinfo, host_mpich_version, require_root,
    run_crun, run_runc, scratch, Bundle, Run,
};
use std::path::Path;
use std::process::Command;

const ESCAPE_TARGET: &str = "/tmp/hpcc-escape-target";

const MPICH_POLICY: &str = r#"
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]

[log]
journald = false
"#;

const LIBFABRIC_POLICY: &str = r#"
[libfabric]
library = "/usr/lib/x86_64-linux-gnu/libfabric.so.1"
providers = "/usr/lib/x86_64-linux-gnu/libfabric"

[log]
journald = false
"#;

const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";

/// Runs a probe program of a fixture with the host's own libraries (as
/// build-fixtures.sh does): what the container must print after injection.
fn host_output(fixture: &str, program: &str) -> String {
    let exe = fixture_rootfs(fixture).join(program.trim_start_matches('/'));
    let out = Command::new(&exe).output().unwrap();
    assert!(
        out.status.success(),
        "{} on the host: {out:?}",
        exe.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// New host mount-table lines that mention any needle.
fn new_mounts(before: &str, after: &str, needles: &[&str]) -> Vec<String> {
    after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Runs a bundle with a runtime and checks that nothing of it stays in the
/// host's mount table afterwards (requirement 6, for every run here).
///
/// runc runs its prestart hooks in the host's mount namespace, so the
/// host's table is where a leaked mount would show. crun runs here in a
/// private namespace of its own (`run_crun`), and its hooks run there: for
/// crun the table of that namespace, read by the shell that ran crun just
/// before it exited, must be exactly what it was before crun started.
fn run_clean(b: &Bundle, runtime: &str) -> Run {
    let before = host_mountinfo();
    let r = match runtime {
        "runc" => run_runc(b),
        "crun" => run_crun(b),
        o => panic!("unknown runtime {o}"),
    };
    let leaked = new_mounts(
        &before,
        &host_mountinfo(),
        &[
            b.dir.to_str().unwrap(),
            "libmpich",
            "libfabric",
            "/opt/hpcc",
            "/dev/hpcc",
            ESCAPE_TARGET,
        ],
    );
    assert!(
        leaked.is_empty(),
        "mounts left on the host after {runtime}: {leaked:?}"
    );
    if runtime == "crun" {
        let added = crun_namespace_mounts(b).added();
        assert!(
            added.is_empty(),
            "mounts left in crun's own mount namespace (where its hooks run) after the run: {added:?}\n{r:?}"
        );
    }
    r
}

fn mpich_bundle(name: &str, fixture: &str) -> Bundle {
    let mut b = Bundle::new(name, &fixture_rootfs(fixture));
    b.annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"])
        .with_hook(MPICH_POLICY);
    b
}

fn assert_host_mpich(r: &Run, runtime: &str) {
    let host = host_output("mpich-app", "/usr/bin/mpi-version");
    assert!(
        host.contains("MPICH Version:") && host.contains(&host_mpich_version()),
        "host: {host}"
    );
    assert!(
        r.ok(),
        "{runtime} failed: code {:?}\nstdout: {}\nstderr: {}",
        r.code,
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("MPICH Version:") && r.stdout.contains(&host_mpich_version()),
        "{runtime}: the container did not load the host MPICH:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stdout.contains("stand-in"), "{}", r.stdout);
}

#[test]
fn mpi_replace_runc_prints_host_mpich() {
    require_root();
    let b = mpich_bundle("tw-mpi-runc", "mpich-app");
    let r = run_clean(&b, "runc");
    assert_host_mpich(&r, "runc");
    // The image's own file on disk is still the stand-in: only a mount changed.
    let out = Command::new("chroot")
        .arg(b.rootfs())
        .arg("/usr/bin/mpi-version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("stand-in"));
}

#[test]
fn mpi_replace_crun_prints_host_mpich() {
    require_root();
    let b = mpich_bundle("tw-mpi-crun", "mpich-app");
    let r = run_clean(&b, "crun");
    assert_host_mpich(&r, "crun");
}

/// An Open MPI image that allows `mpi_replace` on a node whose only host
/// MPI is MPICH: modes are allowances (docs/annotations.md, "Modes are
/// allowances"), so the image starts with its own Open MPI, nothing of the
/// host's is mounted, and the hook's log says why (the image's MPI, the
/// node's). Before that rule this image was refused; the refusal of an
/// impossible replacement now belongs to a user who asks for it
/// (`srun --hpcc-mpi=replace`).
#[test]
fn openmpi_image_on_mpich_node_runs_its_own_mpi_with_reason() {
    require_root();
    let mut b = Bundle::new("tw-ompi", &fixture_rootfs("openmpi-app"));
    b.annotate(MPI_IMPL, "openmpi")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"])
        .with_logged_hook(MPICH_POLICY);
    let r = run_clean(&b, "runc");
    let log = b.hook_log();
    assert!(r.ok(), "{r:?}\nhook log:\n{log}");
    assert!(
        r.stdout.contains("stand-in Open MPI"),
        "not the image's own Open MPI: {r:?}"
    );
    let decided = log
        .lines()
        .find(|l| l.contains("container may start") && l.contains(&b.id))
        .unwrap_or_else(|| panic!("the hook did not decide: {log}"));
    assert!(
        decided.contains("score=\"orange\"") && decided.contains("mounts=0"),
        "{decided}"
    );
    let mpi = log
        .lines()
        .find(|l| l.contains("check=\"mpi\""))
        .unwrap_or_else(|| panic!("no MPI finding: {log}"));
    assert!(
        mpi.contains("own Open MPI is used") && mpi.contains("mpich"),
        "the reason does not name both MPIs: {mpi}"
    );
}

#[test]
fn libfabric_inject_shows_host_libfabric() {
    require_root();
    let host = host_output("mpich-app", "/usr/bin/fabric-version");
    assert!(!host.contains("libfabric 1.0\n"), "host: {host}");
    for runtime in ["runc", "crun"] {
        let mut b = Bundle::new(
            &format!("tw-fabric-{runtime}"),
            &fixture_rootfs("mpich-app"),
        );
        b.annotate(MPI_IMPL, "mpich")
            .annotate("org.supercontainers.communication.framework", "libfabric")
            .annotate(MPI_MODE, "libfabric_inject")
            .args(&["/usr/bin/fabric-version"])
            .with_hook(LIBFABRIC_POLICY);
        let r = run_clean(&b, runtime);
        assert!(r.ok(), "{runtime}: {r:?}");
        assert_eq!(r.stdout.trim(), host.trim(), "{runtime}: {r:?}");
    }
}

/// A CDI spec exposing a character device that runc's default device
/// cgroup denies: 10:237 (`/dev/loop-control`'s numbers; the node itself is
/// made for the test). runc's defaults allow /dev/null, zero, full,
/// random, urandom, tty, console, ptmx and pts, never 10:237, so the
/// container can open the node only because hpcc granted it in the
/// container's device cgroup (v1 on this hybrid host): with the grant
/// removed, runc's run fails with "Operation not permitted"
/// (`apply_helper::runc_denies_the_device_without_the_grant` shows that
/// denial without hpcc). crun runs here with `--cgroup-manager=disabled`
/// (ENVIRONMENT.md): it has no device cgroup at all, so for crun the test
/// proves the node's exposure, and the hook's log says that no grant was
/// made, never that one was.
#[test]
fn cdi_device_is_usable_in_the_container() {
    require_root();
    let dir = scratch("tw-cdi");
    let node = dir.join("hpcc-test0");
    let st = Command::new("mknod")
        .arg(&node)
        .args(["c", "10", "237"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod failed");
    let cdi = dir.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(
        cdi.join("hpcc-test.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "hpcc.test/dev",
            "devices": [{
                "name": "test0",
                "containerEdits": {
                    "deviceNodes": [{
                        "path": "/dev/hpcc-test0",
                        "hostPath": node,
                        "type": "c",
                        "major": 10,
                        "minor": 237,
                        "permissions": "rw"
                    }]
                }
            }]
        })
        .to_string(),
    )
    .unwrap();
    // The annotation asks; the policy grants (an annotation alone never
    // does: tests/tests/hostile.rs).
    let policy = format!(
        "[gpu]\ncdi_spec_dirs = [\"{}\"]\nallowed = [\"hpcc.test/dev=test0\"]\n\n[log]\njournald = false\n",
        cdi.display()
    );
    for runtime in ["runc", "crun"] {
        let mut b = Bundle::new(&format!("tw-cdi-{runtime}"), &fixture_rootfs("busybox"));
        // The CDI standard annotation asks for the device by qualified name.
        b.annotate("cdi.k8s.io/hpcc-test", "hpcc.test/dev=test0")
            .args(&[
                "/bin/sh",
                "-c",
                "test -c /dev/hpcc-test0 && exec 3<>/dev/hpcc-test0 && echo device-open-ok",
            ])
            .with_logged_hook(&policy);
        let r = run_clean(&b, runtime);
        let log = b.hook_log();
        assert!(
            r.ok() && r.stdout.contains("device-open-ok"),
            "{runtime}: {r:?}\nhook log:\n{log}"
        );
        let exposed = log
            .lines()
            .find(|l| l.contains("device exposed") && l.contains("/dev/hpcc-test0"))
            .unwrap_or_else(|| panic!("{runtime}: the hook did not log the device:\n{log}"));
        if runtime == "runc" {
            assert!(exposed.contains("grant=Added("), "{exposed}");
        } else {
            assert!(exposed.contains("grant=NotApplicable("), "{exposed}");
        }
    }
}

#[test]
fn symlink_escape_image_cannot_touch_the_host() {
    require_root();
    assert!(
        !Path::new(ESCAPE_TARGET).exists() && !Path::new(ESCAPE_TARGET).is_symlink(),
        "{ESCAPE_TARGET} exists on the host before the test: remove it"
    );
    for (fixture, runtime) in [
        ("escape", "runc"),
        ("escape-file", "runc"),
        ("escape", "crun"),
    ] {
        let b = mpich_bundle(&format!("tw-{fixture}-{runtime}"), fixture);
        let before = host_mountinfo();
        let r = run_clean(&b, runtime);
        assert!(
            !Path::new(ESCAPE_TARGET).exists() && !Path::new(ESCAPE_TARGET).is_symlink(),
            "{fixture}/{runtime}: the hook created {ESCAPE_TARGET} on the host ({r:?})"
        );
        let added = new_mounts(&before, &host_mountinfo(), &[ESCAPE_TARGET, "hpcc-escape"]);
        assert!(
            added.is_empty(),
            "{fixture}/{runtime}: new host mounts {added:?}"
        );
        // Resolved inside the image, the replacement is legitimate: the
        // container sees the host MPICH through its own (in-root) link.
        assert_host_mpich(&r, &format!("{fixture}/{runtime}"));
    }
}

/// Registered as a createContainer hook (which runs in the container's own
/// mount namespace), the hook must not mount there: those mounts would be
/// made in the namespace it shares with the container's setup and, for a
/// hook run in the host namespace, outlive the container. It refuses to
/// apply and, with `on_error = "refuse"`, stops the start.
#[test]
fn hook_in_the_containers_namespace_refuses_to_mount() {
    require_root();
    let mut b = mpich_bundle("tw-create-container", "mpich-app");
    let hooks = b.config_mut()["hooks"]["prestart"].clone();
    b.config_mut()["hooks"] = serde_json::json!({ "createContainer": hooks });
    let r = run_clean(&b, "runc");
    assert!(!r.ok(), "started: {r:?}");
    // runc runs createContainer hooks inside the container's namespaces,
    // where the state's pid may not even be visible: the shared-namespace
    // guard must be what refuses (it runs before anything else of the
    // apply layer), never another error on the way.
    assert!(
        r.stderr.contains("applying the launch tweaks failed")
            && r.stderr.contains("shares the hook's mount namespace")
            && r.stderr
                .contains("register hpcc-hook as a prestart or createRuntime hook"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("exit status 4"), "{}", r.stderr);
    assert!(!b.rootfs().join("opt/hpcc").exists(), "mount targets left");
    assert!(!b.rootfs().join("dev/hpcc").exists(), "mount targets left");
}

/// Stretch goal: a two-rank MPI job inside the container on the replaced
/// library. The policy also binds the host's Hydra launcher (and the
/// libslurm it links, as a dependency); ranks are started with the fork
/// launcher inside the container and both report the host MPICH.
#[test]
fn two_rank_mpi_run_inside_the_container() {
    require_root();
    let policy = r#"
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
dependencies = ["/usr/lib/x86_64-linux-gnu/libslurm.so.38"]
mounts = ["/usr/bin/mpiexec.hydra", "/usr/bin/hydra_pmi_proxy"]

[log]
journald = false
"#;
    let mut b = Bundle::new("tw-mpi-2ranks", &fixture_rootfs("mpich-app"));
    b.annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&[
            "/usr/bin/mpiexec.hydra",
            "-launcher",
            "fork",
            "-n",
            "2",
            "/usr/bin/mpi-version",
        ])
        .with_hook(policy);
    let r = run_clean(&b, "runc");
    assert!(r.ok(), "{r:?}");
    for rank in ["rank 0 of 2", "rank 1 of 2"] {
        assert!(r.stdout.contains(rank), "{rank} missing: {}", r.stdout);
    }
    assert_eq!(
        r.stdout
            .matches(&format!("MPICH Version:\t{}", host_mpich_version()))
            .count(),
        2,
        "{}",
        r.stdout
    );
}

#[test]
fn hook_binary_is_the_apply_helper() {
    // The hidden helper mode answers a malformed request with a clean
    // failure, not a panic (the hook re-executes itself this way).
    let out = Command::new(bin("hpcc-hook"))
        .arg("--hpcc-apply-child")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid request"));
}

/// Where the real loader found each library, from `LD_DEBUG=libs`:
/// soname -> (how it searched: `search path=...` or `search cache=...`,
/// the file it loaded). A library found is the last `trying file=` of its
/// `find library=` block.
fn loader_finds(ld_debug: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<(String, String, String)> = None;
    let mut flush = |c: &mut Option<(String, String, String)>| {
        if let Some((name, via, file)) = c.take() {
            if !file.is_empty() {
                out.insert(name, (via, file));
            }
        }
    };
    for l in ld_debug.lines() {
        let l = l.split_once(':').map_or(l, |(_, r)| r).trim();
        if let Some(rest) = l.strip_prefix("find library=") {
            flush(&mut cur);
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            cur = Some((name, String::new(), String::new()));
        } else if let Some(c) = cur.as_mut() {
            if l.starts_with("search ") {
                c.1 = l.to_owned();
            } else if let Some(f) = l.strip_prefix("trying file=") {
                c.2 = f.trim().to_owned();
            } else if l.starts_with("calling init") {
                flush(&mut cur);
            }
        }
    }
    flush(&mut cur);
    out
}

/// An image whose program names its own MPI directory (RUNPATH
/// `/opt/mpich/lib`, as Spack and vendor builds do): the loader looks
/// there before any linker cache, so hpcc still binds the host MPICH over
/// that very file, and everything else it brings comes from its host
/// library stack, one directory bound at `/dev/hpcc/lib`, found through
/// hpcc's linker cache. The real loader (`LD_DEBUG=libs`) shows each
/// library where the plan says it is.
#[test]
fn runpath_image_loads_host_mpich_over_its_own_file_and_the_rest_from_the_stack() {
    require_root();
    let mut b = Bundle::new("tw-mpi-runpath", &fixture_rootfs("mpich-runpath"));
    b.annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"])
        .with_logged_hook(MPICH_POLICY);
    b.config_mut()["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("LD_DEBUG=libs"));
    let r = run_clean(&b, "runc");
    let log = b.hook_log();
    assert_host_mpich(&r, "runc");

    // Two binds, not one per library: the image's own file and the stack.
    let mounted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mounted:") && l.contains(&b.id))
        .collect();
    assert_eq!(mounted.len(), 2, "hook log:\n{log}");
    assert!(
        mounted.iter().any(
            |l| l.contains("destination=/opt/mpich/lib/libmpich.so.12.0.0")
                && l.contains("source=/usr/lib/x86_64-linux-gnu/libmpich.so.12")
        ),
        "the image's RUNPATH file is not replaced: {mounted:?}"
    );
    assert!(
        mounted
            .iter()
            .any(|l| l.contains("destination=/dev/hpcc/lib ")
                && l.contains("source=/run/hpcc/stack/")),
        "no stack bind: {mounted:?}"
    );

    let found = loader_finds(&r.stderr);
    let (via, file) = found
        .get("libmpich.so.12")
        .unwrap_or_else(|| panic!("libmpich not loaded:\n{}", r.stderr));
    assert!(
        via.contains("RUNPATH") && file == "/opt/mpich/lib/libmpich.so.12",
        "libmpich: {via} -> {file}"
    );
    // Every library the plan gives the linker cache and the loader looked
    // up was found in the cache at the planned path.
    let plan = Command::new(bin("hpcc"))
        .env("HPCC_CONFIG", b.dir.join("hook.toml"))
        .args(["match", "--plan", "--json", "--bundle"])
        .arg(&b.dir)
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout)
        .unwrap_or_else(|e| panic!("hpcc match --plan: {e}: {plan:?}"));
    let mut checked = Vec::new();
    for e in plan["tweaks"]["ld_cache"].as_array().unwrap() {
        let soname = e["soname"].as_str().unwrap();
        let Some((via, file)) = found.get(soname) else {
            continue;
        };
        assert_eq!(
            (via.as_str(), file.as_str()),
            ("search cache=/etc/ld.so.cache", e["path"].as_str().unwrap()),
            "{soname}"
        );
        checked.push(soname);
    }
    for needed in ["libhwloc.so.15", "libucp.so.0", "libucs.so.0"] {
        assert!(
            checked.contains(&needed),
            "{needed} not loaded from the stack: {checked:?}\n{}",
            r.stderr
        );
    }
    // UCX's transport modules, looked for next to libucs, come from the
    // stack's copy of the host's module directory.
    assert!(
        r.stderr
            .contains("calling init: /dev/hpcc/lib/mpich/ucx/libuct_"),
        "no UCX module loaded from the stack:\n{}",
        r.stderr
    );
    // The image's glibc is its own.
    let (_, libc) = found.get("libc.so.6").expect("libc.so.6 loaded");
    assert!(!libc.starts_with("/dev/hpcc"), "libc from {libc}");
}
