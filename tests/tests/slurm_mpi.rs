//! End-to-end tests of MPI in `srun --container` steps on the two-node
//! Slurm rig (`tests/setup/slurm2.sh`, measured spec in
//! `tests/setup/MPI-RIG.md`): the freshly built `hpcc_spank.so` loaded as
//! `required`, `hpcc-runtime --hpcc-slurm --hpcc-node=%n` as oci.conf's
//! RunTimeRun, node n2 made to look like an older CPU (the features of the
//! highest generic level this machine runs, and any AVX-512 or AMX, taken
//! out of its `/proc/cpuinfo`: `slurm2::older_cpuinfo`). They fail, never
//! skip, when Slurm, runc, the MPIs or root are missing.
//!
//! Between hpcc-runtime and runc sits a one-line spy (`runc-spy.sh`) that
//! keeps a copy of the config hpcc-runtime wrote, then `exec`s runc: no
//! process of its own stays around (an extra holder of the PMI socket
//! would change what is tested).
//!
//! The tests share the rig and run one at a time (a lock): two MPI jobs
//! busy-polling on two cores would only measure each other. The rig is
//! stopped at exit, whatever the tests did.

use hpcc_e2e::slurm2::{self, Knobs};
use hpcc_e2e::{
    host_mpich_version, host_ompi_version, repo_root, require, require_root, work_dir, Bundle,
};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";
const TAG: &str = "org.example.hpcc-test";
/// Bound on one MPI step (a healthy one takes 1-3 s here).
const STEP_BOUND: Duration = Duration::from_secs(45);
const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

struct Env {
    dir: PathBuf,
}

use hpcc_e2e::slurm2::serial;
use hpcc_e2e::target_debug;

extern "C" fn stop_rig() {
    slurm2::stop_keeping_logs("slurm-mpi");
}

/// The site policy of these tests: both host MPIs offered. Open MPI needs
/// more than the closure of `libmpi.so.40`: its components (dlopen'ed from
/// its compiled-in directories `openmpi/lib/openmpi3` and
/// `pmix2/lib/pmix`, bound at the same paths by `mounts`), the libraries
/// those components need and `libmpi` does not (`dependencies`: they are
/// then in the container's linker cache; without them Open MPI prints
/// `mca_base_component_repository_open: unable to open ...` or fails in
/// PMIx), its help texts (`/usr/share/openmpi`) and `/etc/openmpi`
/// (Debian's defaults: no UCX PML, no openib BTL).
fn policy_text() -> String {
    format!(
        "# hpcc policy of the two-node MPI e2e tests\n\
         [users]\nmay_relax_to = \"warn\"\n\
         [mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"{LIBDIR}/libmpich.so.12\"]\n\
         [mpi.openmpi]\nabi = \"openmpi\"\nlibraries = [\"{LIBDIR}/libmpi.so.40\"]\n\
         dependencies = [\"{LIBDIR}/libpmix.so.2\", \"{LIBDIR}/libmunge.so.2\", \
         \"{LIBDIR}/libnl-3.so.200\", \"{LIBDIR}/libmca_common_sm.so.40\", \
         \"{LIBDIR}/libmca_common_ompio.so.41\", \"{LIBDIR}/libmca_common_monitoring.so.50\", \
         \"{LIBDIR}/libpsm2.so.2\", \"{LIBDIR}/libpsm_infinipath.so.1\"]\n\
         mounts = [\"{LIBDIR}/openmpi/lib\", \"{LIBDIR}/pmix2/lib/pmix\", \
         \"/usr/share/openmpi\", \"/etc/openmpi\"]\n\
         [log]\njournald = false\n"
    )
}

/// Builds the plugin and the runtime, the MPI fixtures, writes the policy,
/// plugstack.conf and the spy, and starts the rig (stopped at exit). A
/// failure is kept, so every test reports it without trying again.
fn env() -> &'static Env {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    match ENV.get_or_init(setup) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn setup() -> Result<Env, String> {
    require_root();
    for tool in [
        "srun",
        "scancel",
        "slurmctld",
        "slurmd",
        "munged",
        "runc",
        "nsenter",
        "jq",
        "mpicc.mpich",
        "mpicc.openmpi",
    ] {
        require(tool);
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "hpcc-spank", "-p", "hpcc-runtime"])
        .current_dir(repo_root())
        .status()
        .expect("cargo build runs");
    assert!(
        status.success(),
        "building hpcc-spank and hpcc-runtime failed"
    );
    slurm2::mpi_fixtures();
    let t = target_debug();
    let (so, runtime) = (t.join("libhpcc_spank.so"), t.join("hpcc-runtime"));
    for p in [&so, &runtime] {
        assert!(p.exists(), "{} was not built", p.display());
    }
    let dir = work_dir().join("slurm-mpi");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, policy_text()).unwrap();
    let spy = dir.join("runc-spy.sh");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\n# Keeps the config hpcc-runtime wrote (by the bundle's test tag), then\n\
             # becomes runc: nothing of the spy stays around.\n\
             b=; prev=; for a; do [ \"$prev\" = -b ] && b=$a; prev=$a; done\n\
             tag=$(jq -r '.annotations[\"{TAG}\"] // empty' \"$b/config.json\" 2>/dev/null)\n\
             [ -n \"$tag\" ] && cp \"$b/config.json\" \"{dir}/edited-$tag-$SLURMD_NODENAME.json\"\n\
             exec /usr/sbin/runc \"$@\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugstack = dir.join("plugstack.conf");
    std::fs::write(
        &plugstack,
        format!(
            "required {} config={} default_mpi=auto\n",
            so.display(),
            policy.display()
        ),
    )
    .unwrap();
    let cpuinfo = dir.join("cpuinfo-older");
    std::fs::write(&cpuinfo, slurm2::older_cpuinfo()).unwrap();
    let knobs = Knobs {
        runtime: Some(format!(
            "{} --hpcc-slurm --hpcc-config={} --hpcc-node=%n --hpcc-runtime={}",
            runtime.display(),
            policy.display(),
            spy.display()
        )),
        plugstack: Some(plugstack),
        n2_cpuinfo: Some(cpuinfo),
        kill_signal: Some("KILL".into()),
        ..Knobs::default()
    };
    match slurm2::start(&knobs) {
        Ok(()) => {}
        // Never stop a rig this process did not get: another holder of
        // the lock may be using it.
        Err(e) if e.contains("could not take") => return Err(e),
        Err(e) => {
            stop_rig();
            return Err(e);
        }
    }
    // SAFETY: registering a plain extern "C" fn.
    unsafe { libc::atexit(stop_rig) };
    Ok(Env { dir })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A bundle of a fixture image (`mpich-ring`, `ompi-ring`) with these
/// annotations and a unique test tag.
fn bundle(name: &str, image: &str, annotations: &[(&str, &str)]) -> (Bundle, String) {
    // The fixtures are built by the rig's setup: in a fresh clone the first
    // test to run must not look for them before that.
    env();
    let rootfs = work_dir().join("rootfs").join(image);
    assert!(rootfs.is_dir(), "{} was not built", rootfs.display());
    let mut b = Bundle::new(&format!("slurm-mpi-{name}"), &rootfs);
    let tag = format!("{name}-{}", std::process::id());
    b.annotate(TAG, &tag);
    for (k, v) in annotations {
        b.annotate(k, v);
    }
    b.args(&["/usr/bin/ring"]);
    b.write();
    (b, tag)
}

fn mpich_bundle(name: &str) -> (Bundle, String) {
    bundle(
        name,
        "mpich-ring",
        &[(MPI_IMPL, "mpich"), (MPI_MODE, "mpi_replace")],
    )
}

/// The config hpcc-runtime wrote for a bundle's tag on a node.
fn edited(tag: &str, node: &str) -> Value {
    let p = env().dir.join(format!("edited-{tag}-{node}.json"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn env_of(cfg: &Value) -> Vec<String> {
    cfg["process"]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn namespaces(cfg: &Value) -> Vec<String> {
    cfg["linux"]["namespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["type"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn srun(args: &[&str]) -> (Output, Duration) {
    env();
    let r = slurm2::srun(args, STEP_BOUND);
    if !r.0.status.success() {
        slurm2::cancel_all();
    }
    r
}

/// The ring's line of rank `rank` of 2 (each rank prints one).
fn ring_line(stdout: &str, rank: u32) -> Option<String> {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("rank {rank} of 2 sum 3 ok ")))
        .map(str::to_owned)
}

/// Asserts a right 2-rank ring on n1 and n2 with the library `lib`.
fn assert_ring(out: &Output, lib: &[&str]) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the ring failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let mut nodes = Vec::new();
    for rank in [0, 1] {
        let line = ring_line(&stdout, rank)
            .unwrap_or_else(|| panic!("no `rank {rank} of 2 sum 3 ok` line:\n{stdout}"));
        for l in lib {
            assert!(line.contains(l), "{l:?} missing: {line}");
        }
        assert!(!line.contains("stand-in"), "the image's MPI ran: {line}");
        nodes.push(
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("node="))
                .unwrap_or("")
                .to_owned(),
        );
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "one rank per node expected");
}

const N2: [&str; 2] = ["-N2", "--ntasks-per-node=1"];

#[test]
fn mpich_pmi2_ring_runs_on_the_host_mpich() {
    let _s = serial();
    let (b, tag) = mpich_bundle("mpich");
    let container = format!("--container={}", b.dir.display());
    let (out, _) = srun(&[N2[0], N2[1], "--mpi=pmi2", &container, "/usr/bin/ring"]);
    assert_ring(&out, &["lib=MPICH Version:", &host_mpich_version()]);
    for node in slurm2::NODES {
        let cfg = edited(&tag, node);
        // hpcc-runtime applied the plugin's decision, wired PMI-2 (fd 3)
        // and gave the container the node's network and IPC.
        assert_eq!(
            cfg["annotations"]["run.hpcc.decided-by"], "hpcc_spank.so",
            "{node}"
        );
        let env = env_of(&cfg);
        for want in ["PMI_FD=3", "PMI_SIZE=2", &format!("SLURMD_NODENAME={node}")] {
            assert!(
                env.iter().any(|e| e == want),
                "{node}: {want} not in {env:?}"
            );
        }
        let rank = if node == "n1" {
            "PMI_RANK=0"
        } else {
            "PMI_RANK=1"
        };
        assert!(env.iter().any(|e| e == rank), "{node}: {rank}: {env:?}");
        let ns = namespaces(&cfg);
        assert!(
            !ns.iter().any(|n| n == "network" || n == "ipc"),
            "{node}: {ns:?}"
        );
        assert!(
            cfg["process"]["args"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "/usr/bin/ring")),
            "{cfg}"
        );
    }
}

#[test]
fn open_mpi_pmix_ring_runs_on_the_host_open_mpi() {
    let _s = serial();
    let (b, tag) = bundle(
        "ompi",
        "ompi-ring",
        &[(MPI_IMPL, "openmpi"), (MPI_MODE, "mpi_replace")],
    );
    let container = format!("--container={}", b.dir.display());
    let (out, _) = srun(&[N2[0], N2[1], "--mpi=pmix", &container, "/usr/bin/ring"]);
    assert_ring(&out, &[&format!("lib=Open MPI v{}", host_ompi_version())]);
    let err = text(&out.stderr);
    // Every component Open MPI opens finds its libraries (the policy's
    // dependencies), and nothing of PMIx complains.
    for noise in [
        "PMIX ERROR",
        "ORTE_ERROR_LOG",
        "OPAL ERROR",
        "mca_base_component_repository_open",
        "help file",
    ] {
        assert!(!err.contains(noise), "{noise} in stderr:\n{err}");
    }
    for node in slurm2::NODES {
        let env = env_of(&edited(&tag, node));
        assert!(
            env.iter().any(|e| e.starts_with("PMIX_SERVER_URI")),
            "{node}: the task's PMIX_* were not passed: {env:?}"
        );
        assert!(!env.iter().any(|e| e.starts_with("PMI_FD=")), "{env:?}");
    }
}

#[test]
fn a_node_that_cannot_run_the_image_ends_the_whole_step_at_once() {
    let _s = serial();
    // The highest generic level this machine runs: n1 (this CPU) runs it,
    // n2 has its features masked (slurm2::older_cpuinfo).
    let (level, masked) = slurm2::n2_masked_level();
    eprintln!("image level {level}; masked on n2: {}", masked.join(" "));
    let (b, _) = bundle(
        "avx512",
        "mpich-ring",
        &[
            (CPU, &level),
            (MPI_IMPL, "mpich"),
            (MPI_MODE, "mpi_replace"),
        ],
    );
    let container = format!("--container={}", b.dir.display());
    let (out, took) = srun(&[N2[0], N2[1], "--mpi=pmi2", &container, "/usr/bin/ring"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "the step must fail");
    // n1 could run it and waits in MPI_Init for n2: the refusal on n2 ends
    // the whole step, not a time limit.
    assert!(
        took < Duration::from_secs(30),
        "the step took {took:?}: n1's rank waited for n2"
    );
    assert!(!stdout.contains("rank "), "{stdout}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("hpcc: refused"))
        .collect();
    assert!(!refusals.is_empty(), "no refusal line:\n{stderr}");
    for line in &refusals {
        // The node as Slurm knows it (both nodes share this host's name).
        assert!(line.contains(" on n2: "), "the node is not named: {line}");
        assert!(line.contains(&level), "{line}");
        assert!(
            masked.iter().any(|f| line.contains(f.as_str())),
            "the missing features ({masked:?}): {line}"
        );
    }
    // Nothing of the step is left on the nodes.
    let mut q = std::process::Command::new("squeue");
    q.args(["-h", "-o", "%i %T"])
        .env("SLURM_CONF", slurm2::CONF);
    let (sq, _) = slurm2::bounded(&mut q, Duration::from_secs(15));
    eprintln!("squeue after the refusal: {}", text(&sq.stdout));
}

#[test]
fn more_than_one_task_per_node_fails_at_once_with_hpccs_line() {
    let _s = serial();
    let (b, _) = mpich_bundle("ntasks");
    let container = format!("--container={}", b.dir.display());
    let (out, took) = srun(&["-N2", "-n4", "--mpi=pmi2", &container, "/usr/bin/ring"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains("hpcc: --container runs one task per node")
            && stderr.contains("4 tasks on 2 node")
            && stderr.contains("--ntasks-per-node=1"),
        "{stderr}"
    );
    assert!(!stderr.contains("Unspecified error"), "{stderr}");
    assert!(!text(&out.stdout).contains("rank "));
}

/// Every file of a tree with its size and modification time.
fn tree(root: &Path) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg(root)
        .args(["-printf", "%P %s %T@ %m\\n"])
        .output()
        .unwrap();
    let mut v: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// `n` pmi2 ring steps from one bundle; all must pass (the PMI-2 finalize
/// hang of the prototype would show up here as a bounded failure).
fn ring_steps(b: &Bundle, n: usize) {
    let container = format!("--container={}", b.dir.display());
    let mut times = Vec::new();
    let mut failed = Vec::new();
    for i in 0..n {
        let (out, took) = srun(&[N2[0], N2[1], "--mpi=pmi2", &container, "/usr/bin/ring"]);
        times.push(took.as_secs_f64());
        let stdout = text(&out.stdout);
        let good = out.status.success()
            && [0, 1]
                .iter()
                .all(|&r| ring_line(&stdout, r).is_some_and(|l| l.contains("MPICH Version:")));
        if !good {
            failed.push(format!(
                "step {i}: exit {:?} after {took:?}\n{stdout}{}",
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "{n} steps: min {:.2} s, median {:.2} s, max {:.2} s",
        sorted[0],
        sorted[n / 2],
        sorted[n - 1]
    );
    assert!(
        failed.is_empty(),
        "{} of {n} steps failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn twenty_pmi2_steps_in_a_row_from_one_bundle() {
    let _s = serial();
    let (b, _) = mpich_bundle("twenty");
    let before = tree(&b.rootfs());
    ring_steps(&b, 20);
    // hpcc wrote nothing into the image (its mount targets are in the
    // container's /dev, its linker cache under /run/hpcc).
    assert_eq!(before, tree(&b.rootfs()), "the image was written to");
}

#[test]
fn twenty_pmi2_steps_from_a_read_only_rootfs() {
    let _s = serial();
    let (b, _) = mpich_bundle("readonly");
    let rootfs = b.rootfs();
    let r = rootfs.display().to_string();
    // On both nodes (their own mount namespaces), the image is bound over
    // itself read-only: the plugin, hpcc-runtime and runc see it so.
    for node in slurm2::NODES {
        slurm2::in_node(
            node,
            &format!(
                "mount --bind '{r}' '{r}' && mount -o remount,bind,ro '{r}' && \
                 ! touch '{r}/.hpcc-write-probe' 2>/dev/null"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    ring_steps(&b, 20);
    for node in slurm2::NODES {
        let _ = slurm2::in_node(node, &format!("umount '{r}'"));
    }
}

#[test]
fn steps_without_mpi_are_left_alone() {
    let _s = serial();
    env();
    let probe = "echo net=$(readlink /proc/self/ns/net) ipc=$(readlink /proc/self/ns/ipc) \
                 pmi=$(env | grep -c -E '^PMIX?_')";
    // The nodes' own namespaces, from bare tasks.
    let (bare, _) = srun(&[N2[0], N2[1], "-l", "/bin/sh", "-c", probe]);
    assert!(bare.status.success());
    let bare = text(&bare.stdout);
    let field = |line: &str, k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .unwrap_or_default()
    };
    let node_net: Vec<String> = bare.lines().map(|l| field(l, "net")).collect();
    let node_ipc: Vec<String> = bare.lines().map(|l| field(l, "ipc")).collect();
    assert_eq!(node_net.len(), 2, "{bare}");

    let (b, tag) = mpich_bundle("nompi");
    let container = format!("--container={}", b.dir.display());
    for mpi in [Some("--mpi=none"), None] {
        let mut args = vec![N2[0], N2[1], "-l"];
        args.extend(mpi);
        args.extend([container.as_str(), "/bin/sh", "-c", probe]);
        let (out, _) = srun(&args);
        assert!(out.status.success());
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 2, "{stdout}");
        for line in stdout.lines() {
            assert_eq!(field(line, "pmi"), "0", "PMI variables set: {line}");
            assert!(
                !node_net.contains(&field(line, "net")),
                "node's network: {line}"
            );
            assert!(
                !node_ipc.contains(&field(line, "ipc")),
                "node's IPC: {line}"
            );
        }
        for node in slurm2::NODES {
            let cfg = edited(&tag, node);
            let ns = namespaces(&cfg);
            assert!(
                ns.iter().any(|n| n == "network") && ns.iter().any(|n| n == "ipc"),
                "{node}: {ns:?}"
            );
            assert!(
                !env_of(&cfg).iter().any(|e| e.starts_with("PMI_")),
                "{node}"
            );
        }
    }
    // The same probe in an MPI step: the node's namespaces, PMI set.
    let (out, _) = srun(&[
        N2[0],
        N2[1],
        "-l",
        "--mpi=pmi2",
        &container,
        "/bin/sh",
        "-c",
        probe,
    ]);
    assert!(out.status.success());
    for line in text(&out.stdout).lines() {
        assert!(node_net.contains(&field(line, "net")), "{line}");
        assert!(node_ipc.contains(&field(line, "ipc")), "{line}");
        assert_ne!(field(line, "pmi"), "0", "{line}");
    }
}
