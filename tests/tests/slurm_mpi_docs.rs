//! MPI in `srun --container` steps on a two-node Slurm set up only from
//! what docs/slurm.md tells an admin to do (`tests/setup/slurm2.sh` in
//! "docs" mode):
//! - oci.conf is `packaging/slurm/oci.conf` with the rootless runc options
//!   the docs give for non-root jobs on every line (only the installed
//!   path of hpcc-runtime is replaced by the build's); no `--hpcc-config`,
//!   no spy between hpcc-runtime and runc;
//! - plugstack.conf is the `required` line of
//!   `packaging/slurm/plugstack.conf` (the plugin's path and `config=`
//!   replaced);
//! - the policy is the `[mpi.*]` block of docs/slurm.md, read from the
//!   docs at run time, so the docs and this test cannot drift apart;
//! - slurm.conf has the keys of the docs (a `TmpFS` private to each node).
//!
//! Root's Open MPI job over PMIx (the issue's failure 1), and a normal
//! user's 2-rank MPICH and Open MPI jobs across both nodes (failure 2:
//! rootless runc in the node's IPC namespace). They fail, never skip,
//! when Slurm, runc, the MPIs or root are missing.

use hpcc_e2e::slurm2::{self, Knobs};
use hpcc_e2e::{repo_root, require, require_root, user_bundle, work_dir, Bundle, USER};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";
/// Bound on one MPI step (a healthy one takes 1-3 s here).
const STEP_BOUND: Duration = Duration::from_secs(45);

use hpcc_e2e::slurm2::serial;
use hpcc_e2e::target_debug;

extern "C" fn stop_rig() {
    slurm2::stop_keeping_logs("slurm-mpi-docs");
}

/// The policy block of docs/slurm.md ("The policy offers the host MPIs"),
/// unindented.
fn docs_policy() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/slurm.md")).unwrap();
    // The page has other toml blocks (scheduling): the one that offers the
    // MPIs is the one with an [mpi.*] table.
    let block = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().expect("split yields one piece"))
        .find(|b| b.contains("[mpi."))
        .expect("docs/slurm.md has no ```toml block with an [mpi.*] table");
    let block: String = block
        .lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        block.contains("[mpi.mpich]") && block.contains("[mpi.openmpi]"),
        "the docs' policy block changed:\n{block}"
    );
    format!("# the [mpi.*] block of docs/slurm.md\n{block}\n")
}

/// The `required` line of packaging/slurm/plugstack.conf, for the build.
fn docs_plugstack(so: &str, policy: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("packaging/slurm/plugstack.conf")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("required "))
        .expect("packaging/slurm/plugstack.conf has no `required` line");
    let installed = "/usr/lib/x86_64-linux-gnu/slurm-wlm/hpcc_spank.so";
    assert!(line.contains(installed), "{line}");
    assert!(line.contains("config=/etc/hpcc/hook.toml"), "{line}");
    format!(
        "{}\n",
        line.replace(installed, so)
            .replace("config=/etc/hpcc/hook.toml", &format!("config={policy}"))
    )
}

struct Env {
    policy: PathBuf,
}

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
        "slurmctld",
        "slurmd",
        "munged",
        "runc",
        "nsenter",
        "su",
    ] {
        require(tool);
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "hpcc-spank",
            "-p",
            "hpcc-runtime",
            "-p",
            "hpcc-hook",
        ])
        .current_dir(repo_root())
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "building hpcc failed");
    slurm2::mpi_fixtures();
    hpcc_e2e::ensure_user();
    let t = target_debug();
    let (so, runtime) = (t.join("libhpcc_spank.so"), t.join("hpcc-runtime"));
    let dir = work_dir().join("slurm-mpi-docs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, docs_policy()).unwrap();
    let plugstack = dir.join("plugstack.conf");
    std::fs::write(
        &plugstack,
        docs_plugstack(&so.display().to_string(), &policy.display().to_string()),
    )
    .unwrap();
    let knobs = Knobs {
        plugstack: Some(plugstack),
        docs: Some(runtime),
        rootless: true,
        ..Knobs::default()
    };
    match slurm2::start(&knobs) {
        Ok(()) => {}
        Err(e) if e.contains("could not take") => return Err(e),
        Err(e) => {
            stop_rig();
            return Err(e);
        }
    }
    // SAFETY: registering a plain extern "C" fn.
    unsafe { libc::atexit(stop_rig) };
    Ok(Env { policy })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `srun ARGS` as `user` (root: directly), bounded; a failed step is
/// cancelled so that it does not hold the nodes.
fn srun_as(user: &str, args: &[&str]) -> Output {
    env();
    let (out, _) = if user == "root" {
        slurm2::srun(args, STEP_BOUND)
    } else {
        let line = format!(
            "cd /tmp && SLURM_CONF={} exec srun {}",
            slurm2::CONF,
            args.join(" ")
        );
        let mut cmd = Command::new("su");
        cmd.args([user, "-s", "/bin/sh", "-c", &line]);
        let r = slurm2::bounded(&mut cmd, STEP_BOUND);
        eprintln!(
            "$ su {user} -c '{line}'\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            r.0.status.code(),
            text(&r.0.stdout),
            text(&r.0.stderr)
        );
        r
    };
    if !out.status.success() {
        let mut c = Command::new("scancel");
        c.args(["-u", user]).env("SLURM_CONF", slurm2::CONF);
        let _ = slurm2::bounded(&mut c, Duration::from_secs(15));
    }
    out
}

/// A right 2-rank ring, one rank per node, on the host library `lib`.
fn assert_ring(out: &Output, lib: &str) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the ring failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let mut nodes = Vec::new();
    for rank in [0, 1] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("rank {rank} of 2 sum 3 ok ")))
            .unwrap_or_else(|| panic!("no `rank {rank} of 2 sum 3 ok` line:\n{stdout}"));
        assert!(line.contains(lib), "{lib:?} missing: {line}");
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

fn annotations(impl_: &'static str) -> [(&'static str, &'static str); 2] {
    [(MPI_IMPL, impl_), (MPI_MODE, "mpi_replace")]
}

/// The host Open MPI's line, from its own `ompi_info` (not Debian 12's
/// number).
fn open_mpi() -> String {
    format!("lib=Open MPI v{}", hpcc_e2e::host_ompi_version())
}
const MPICH: &str = "lib=MPICH Version:";

#[test]
fn the_docs_policy_passes_hpcc_doctors_open_mpi_check() {
    let _s = serial();
    let e = env();
    let out = Command::new(target_debug().join("hpcc"))
        .args(["doctor", "--no-dry-run", "--config"])
        .arg(&e.policy)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let open_mpi: Vec<&str> = report
        .lines()
        .skip_while(|l| l.trim() != "open-mpi")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert!(!open_mpi.is_empty(), "no open-mpi section:\n{report}");
    assert!(
        open_mpi.iter().all(|l| !l.contains("FAIL")),
        "{}",
        open_mpi.join("\n")
    );
    assert!(
        open_mpi.iter().any(|l| l.contains("pmix2/lib/pmix")),
        "{}",
        open_mpi.join("\n")
    );
}

#[test]
fn roots_open_mpi_job_over_pmix_runs_on_the_host_open_mpi() {
    let _s = serial();
    env();
    let rootfs = work_dir().join("rootfs/ompi-ring");
    let mut b = Bundle::new("slurm-docs-ompi", &rootfs);
    for (k, v) in annotations("openmpi") {
        b.annotate(k, v);
    }
    b.args(&["/usr/bin/ring"]);
    b.write();
    let container = format!("--container={}", b.dir.display());
    let out = srun_as(
        "root",
        &[
            "-N2",
            "--ntasks-per-node=1",
            "--mpi=pmix",
            &container,
            "/usr/bin/ring",
        ],
    );
    assert_ring(&out, &open_mpi());
    let err = text(&out.stderr);
    for noise in ["PMIX ERROR", "ORTE_ERROR_LOG", "OPAL ERROR", "Local abort"] {
        assert!(!err.contains(noise), "{noise} in stderr:\n{err}");
    }
}

/// A normal user's 2-rank job across both nodes: rootless runc in the
/// node's IPC namespace (the node's /dev/mqueue bound, or removed).
fn rootless_ring(test: &str, image: &str, implementation: &'static str, mpi: &str, lib: &str) {
    hpcc_e2e::require_unmasked_proc(test);
    let _s = serial();
    env();
    let dir = user_bundle(
        &format!("docs-{image}"),
        image,
        &annotations(implementation),
        &["/usr/bin/ring"],
    );
    let container = format!("--container={}", dir.display());
    let mpi = format!("--mpi={mpi}");
    let out = srun_as(
        USER,
        &[
            "-N2",
            "--ntasks-per-node=1",
            &mpi,
            &container,
            "/usr/bin/ring",
        ],
    );
    assert!(
        !text(&out.stderr).contains("mqueue"),
        "{}",
        text(&out.stderr)
    );
    assert_ring(&out, lib);
    let _ = std::fs::remove_dir_all(&dir);
}

/// MPICH over PMI-2, rootless.
#[test]
fn a_normal_users_mpich_job_runs_rootless_across_both_nodes() {
    rootless_ring(
        "a_normal_users_mpich_job_runs_rootless_across_both_nodes",
        "mpich-ring",
        "mpich",
        "pmi2",
        MPICH,
    );
}

/// Open MPI over PMIx, rootless.
#[test]
fn a_normal_users_open_mpi_job_runs_rootless_across_both_nodes() {
    rootless_ring(
        "a_normal_users_open_mpi_job_runs_rootless_across_both_nodes",
        "ompi-ring",
        "openmpi",
        "pmix",
        &open_mpi(),
    );
}

/// The issue's site: an `[mpi.openmpi]` table with the library and the
/// Open MPI directories, but neither PMIx's plugin directory nor the
/// libraries Open MPI's PMIx component dlopens. The plan is made (slurmd
/// logs "may start"), every rank stops before `MPI_Init` completes, and
/// `hpcc doctor` fails on that table, naming what to add.
#[test]
fn a_short_open_mpi_table_fails_the_job_and_hpcc_doctor_names_the_gap() {
    let _s = serial();
    let e = env();
    let full = std::fs::read_to_string(&e.policy).unwrap();
    let lib = "/usr/lib/x86_64-linux-gnu";
    let short = format!(
        "[mpi.openmpi]\nabi = \"openmpi\"\nlibraries = [\"{lib}/libmpi.so.40\"]\n\
         mounts = [\"{lib}/openmpi/lib\", \"/usr/share/openmpi\", \"/etc/openmpi\"]\n"
    );
    // The plugin reads its policy per step: swapped for this test only.
    struct Restore<'a>(&'a std::path::Path, String);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            std::fs::write(self.0, &self.1).unwrap();
        }
    }
    let _restore = Restore(&e.policy, full);
    std::fs::write(&e.policy, &short).unwrap();

    let rootfs = work_dir().join("rootfs/ompi-ring");
    let mut b = Bundle::new("slurm-docs-ompi-short", &rootfs);
    for (k, v) in annotations("openmpi") {
        b.annotate(k, v);
    }
    b.args(&["/usr/bin/ring"]);
    b.write();
    let container = format!("--container={}", b.dir.display());
    let out = srun_as(
        "root",
        &[
            "-N2",
            "--ntasks-per-node=1",
            "--mpi=pmix",
            &container,
            "/usr/bin/ring",
        ],
    );
    assert!(!out.status.success(), "the short table must fail the job");
    let err = text(&out.stderr);
    assert!(
        err.contains("Local abort before MPI_INIT"),
        "not the issue's failure:\n{err}"
    );
    let doctor = Command::new(target_debug().join("hpcc"))
        .args(["doctor", "--no-dry-run", "--config"])
        .arg(&e.policy)
        .output()
        .unwrap();
    let report = text(&doctor.stdout);
    let fail = report
        .lines()
        .find(|l| l.contains("FAIL") && l.contains("mpi.openmpi: Open MPI cannot start"))
        .unwrap_or_else(|| panic!("doctor does not fail the table:\n{report}"));
    assert!(fail.contains("pmix2/lib/pmix"), "{fail}");
    assert!(fail.contains("libpmix.so.2"), "{fail}");
    assert_ne!(doctor.status.code(), Some(0), "{report}");
}
