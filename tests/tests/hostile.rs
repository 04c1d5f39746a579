//! Hostile images end to end: the security review's findings and the
//! earlier attack classes, each launched with real runc (crun where its own
//! behaviour matters) and the hook that ships, the statically linked
//! `hpcc-hook` of `tests/setup/build-static-hook.sh`.
//!
//! Every launch asserts the same four things (`Launch::contained`):
//! host files the attack aims at are unchanged, no mount of the launch is
//! left in the host's mount table, the launch ended within its bound, and
//! nothing panicked. Each test then checks what its attack was about.
//!
//! The table of attacks, with the test of each, is in docs/security.md.
//! Needs root, runc, crun and the fixtures (built on demand); fails, never
//! skips. Run it under `flock /tmp/hpcc-e2e.lock` on a shared machine.

#[path = "../../common/tests/crafted/mod.rs"]
mod crafted;

use hpcc_e2e::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CPU_KEY: &str = "org.supercontainers.hardware.cpu.optimized.version";
const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";

/// A whole launch, runtime start to exit, in a debug build on a shared
/// two-core machine. The hook's own deadlines are far below it (the apply
/// helper 5 s, the GPU helper 10 s by default).
const LAUNCH_BOUND: Duration = Duration::from_secs(30);

/// Peak resident memory allowed to the whole hook process (its own pages
/// and its apply helper included) on crafted input: 64 MiB. The debug
/// build of the static hook uses about 53 MiB on a plain image.
const HOOK_RSS_BOUND_KB: u64 = 64 << 10;

const MPICH_POLICY: &str = r#"
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]

[cache]
enabled = false

[log]
journald = false
"#;

const CPU_POLICY: &str =
    "[checks]\ncpu = \"enforce\"\n[cache]\nenabled = false\n[log]\njournald = false\n";

/// An aarch64 target: impossible on this x86_64 node, so the hook refuses.
const IMPOSSIBLE: &str = "a64fx";

/// The hook that ships (static), with the fixtures of these tests.
fn static_hook() -> PathBuf {
    static FIXTURES: OnceLock<()> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/setup/build-hostile-fixtures.sh"))
            .arg(work_dir())
            .output()
            .expect("build-hostile-fixtures.sh runs");
        assert!(out.status.success(), "build-hostile-fixtures.sh: {out:?}");
    });
    hpcc_e2e::static_hook()
}

/// The negative control of the loader tests: a dynamically linked program
/// in the hook's place. No dynamic hpcc-hook can be built any more (its
/// [[bin]] needs the feature `static-hook` and crt-static), so the control
/// is the dynamic `hpcc` of the same build, copied under a name of its own:
/// the loader runs the payload before `main`, whatever the program.
fn dynamic_hook() -> PathBuf {
    let dir = scratch("dynamic-control").join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(DYNAMIC_CONTROL);
    std::fs::copy(bin("hpcc"), &p).unwrap();
    p
}

/// The name of [`dynamic_hook`]'s program, which the payload's marker names.
const DYNAMIC_CONTROL: &str = "dynamic-control";

/// One hook entry of `config.json`.
struct Hook<'a> {
    exe: &'a Path,
    stage: &'a str,
    env: Option<Vec<String>>,
    timeout: Option<u64>,
    /// Wrap the hook in GNU time writing its peak RSS (KiB) to this file.
    rss_to: Option<PathBuf>,
}

impl<'a> Hook<'a> {
    fn new(exe: &'a Path, stage: &'a str) -> Hook<'a> {
        Hook {
            exe,
            stage,
            env: Some(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]),
            timeout: None,
            rss_to: None,
        }
    }
}

/// A bundle of `fixture` with `policy` and one hook.
fn bundle(name: &str, fixture: &str, policy: &str, hook: &Hook<'_>) -> Bundle {
    require_root();
    let mut b = Bundle::new(name, &fixture_rootfs(fixture));
    set_hook(&mut b, policy, hook);
    b
}

fn set_hook(b: &mut Bundle, policy: &str, hook: &Hook<'_>) {
    let policy_path = b.dir.join("hook.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let mut args: Vec<String> = vec![
        "hpcc-hook".into(),
        hook.stage.into(),
        format!("--config={}", policy_path.display()),
    ];
    let mut path = hook.exe.to_owned();
    if let Some(rss) = &hook.rss_to {
        let mut wrapped: Vec<String> = vec![
            "time".into(),
            "-f".into(),
            "%M".into(),
            "-o".into(),
            rss.display().to_string(),
            hook.exe.display().to_string(),
        ];
        wrapped.extend(args.drain(1..));
        args = wrapped;
        path = PathBuf::from("/usr/bin/time");
    }
    let mut entry = json!({ "path": path, "args": args });
    if let Some(env) = &hook.env {
        entry["env"] = json!(env);
    }
    if let Some(t) = hook.timeout {
        entry["timeout"] = json!(t);
    }
    b.config_mut()["hooks"] = json!({ hook.stage: [entry] });
}

/// What a watched host path looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Absent,
    File {
        len: u64,
        mtime: i64,
        bytes: Vec<u8>,
    },
    Dir(BTreeMap<String, Seen>),
    Link(PathBuf),
    Other(u32),
}

fn snapshot(p: &Path) -> Seen {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return Seen::Absent;
    };
    let ft = m.file_type();
    if ft.is_symlink() {
        Seen::Link(std::fs::read_link(p).unwrap_or_default())
    } else if ft.is_file() {
        Seen::File {
            len: m.len(),
            mtime: m.mtime(),
            bytes: std::fs::read(p).unwrap_or_default(),
        }
    } else if ft.is_dir() {
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(p).unwrap().flatten() {
            entries.insert(
                e.file_name().to_string_lossy().into_owned(),
                snapshot(&e.path()),
            );
        }
        Seen::Dir(entries)
    } else {
        Seen::Other(m.mode())
    }
}

/// One launch and what it left.
struct Launch {
    run: Run,
    took: Duration,
}

/// Runs `b` with `runtime` and checks the four promises: the `watched`
/// host paths unchanged, no mount of the launch left in the host's table,
/// the launch within [`LAUNCH_BOUND`], no panic.
fn launch(b: &Bundle, runtime: &str, watched: &[&Path]) -> Launch {
    let before: Vec<Seen> = watched.iter().map(|p| snapshot(p)).collect();
    let mounts_before = host_mountinfo();
    let t0 = Instant::now();
    let run = match runtime {
        "runc" => run_runc(b),
        "crun" => run_crun(b),
        o => panic!("unknown runtime {o}"),
    };
    let took = t0.elapsed();
    for (p, was) in watched.iter().zip(before) {
        assert_eq!(
            snapshot(p),
            was,
            "{}: the launch changed the host path {} ({run:?})",
            b.id,
            p.display()
        );
    }
    let leaked: Vec<String> = host_mountinfo()
        .lines()
        .filter(|l| !mounts_before.lines().any(|o| o == *l))
        .filter(|l| {
            l.contains(b.dir.to_str().unwrap())
                || l.contains("hpcc")
                || watched.iter().any(|w| l.contains(w.to_str().unwrap()))
        })
        .map(str::to_owned)
        .collect();
    assert!(leaked.is_empty(), "{}: host mounts left: {leaked:?}", b.id);
    assert!(
        took < LAUNCH_BOUND,
        "{}: the launch took {took:?} ({run:?})",
        b.id
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "{}: panic: {run:?}",
            b.id
        );
    }
    Launch { run, took }
}

/// The refusal line hpcc printed (runc shows the hook's stderr).
fn refused_by_hpcc(l: &Launch) -> bool {
    !l.run.ok() && l.run.stderr.contains("hpcc: refused to start ")
}

/// The hook answered: it did not fail (the container started, and may
/// then fail on its own broken files), or it refused in an hpcc line.
fn hook_answered(l: &Launch) -> bool {
    !l.run.stderr.contains("error running hook") || refused_by_hpcc(l)
}

/// Every line is one of hpcc's: its refusal line or a log record (a level
/// first), never something the image wrote.
fn only_hpcc_lines(text: &str) -> Result<(), String> {
    for line in text.lines() {
        let l = line.trim_start();
        let ours = l.starts_with("hpcc: refused to start ")
            || ["ERROR ", "WARN ", "INFO "]
                .iter()
                .any(|p| l.starts_with(p));
        if !ours {
            return Err(format!("a line not of hpcc's: {line:?}"));
        }
    }
    Ok(())
}

fn peak_rss_kb(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS figure in {}: {text:?}", file.display()))
}

// ---------------------------------------------------------------------------
// Finding 5: the image's environment and the dynamic loader.
// ---------------------------------------------------------------------------

/// The image's `process.env` carries `LD_PRELOAD` of a library in its own
/// rootfs (through `/proc/self/cwd`, the rootfs being the cwd of a
/// createContainer hook: CVE-2025-23266's path) and the marker file its
/// constructor appends to. Returns the marker path.
fn preload_image(b: &mut Bundle) -> PathBuf {
    let marker = b.dir.join("preload-marker");
    let env = b.config_mut()["process"]["env"].as_array_mut().unwrap();
    env.push(json!("LD_PRELOAD=/proc/self/cwd/hpcc-preload.so"));
    env.push(json!(format!("HPCC_PRELOAD_MARKER={}", marker.display())));
    marker
}

#[test]
fn image_ld_preload_never_runs_in_the_static_hook_at_create_container() {
    let hook = static_hook();
    for (target, expect_start) in [(IMPOSSIBLE, false), ("x86_64", true)] {
        let mut h = Hook::new(&hook, "createContainer");
        // runc gives a createContainer hook without `env` the container's
        // own environment: the attack needs no help from the admin.
        h.env = None;
        let mut b = bundle(
            &format!("hs-preload-cc-{target}"),
            "preload",
            CPU_POLICY,
            &h,
        );
        b.annotate(CPU_KEY, target);
        let marker = preload_image(&mut b);
        let l = launch(&b, "runc", &[&marker]);
        assert!(
            !marker.exists(),
            "the payload ran: {:?}",
            std::fs::read_to_string(&marker)
        );
        // The decision still happens.
        if expect_start {
            assert!(
                l.run.ok() && l.run.stdout.contains("started"),
                "{:?}",
                l.run
            );
        } else {
            assert!(refused_by_hpcc(&l), "{:?}", l.run);
            assert!(l.run.stderr.contains(IMPOSSIBLE), "{:?}", l.run);
        }
    }
}

#[test]
fn loader_variables_in_the_hook_env_are_inert_for_the_static_hook_at_prestart() {
    let hook = static_hook();
    let mut b = bundle(
        "hs-preload-pre",
        "preload",
        CPU_POLICY,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate(CPU_KEY, IMPOSSIBLE);
    let marker = b.dir.join("preload-marker");
    let so = b.rootfs().join("hpcc-preload.so");
    let mut h = Hook::new(&hook, "prestart");
    h.env = Some(vec![
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
        format!("LD_PRELOAD={}", so.display()),
        format!("LD_AUDIT={}", so.display()),
        format!("LD_LIBRARY_PATH={}", b.rootfs().display()),
        format!("HPCC_PRELOAD_MARKER={}", marker.display()),
        "HPCC_LOG=trace".into(),
    ]);
    set_hook(&mut b, CPU_POLICY, &h);
    let l = launch(&b, "runc", &[&marker]);
    assert!(
        !marker.exists(),
        "the payload ran: {:?}",
        std::fs::read_to_string(&marker)
    );
    assert!(refused_by_hpcc(&l), "{:?}", l.run);
    // HPCC_LOG from the environment chose nothing: no trace records.
    assert!(
        !l.run.stderr.contains("TRACE") && !l.run.stderr.contains("DEBUG"),
        "{:?}",
        l.run
    );
}

/// The negative control: the same two attacks against a dynamically
/// linked program in the hook's place run the image's code as root. If
/// this test fails, the two above prove nothing.
#[test]
fn the_same_attacks_run_the_payload_in_a_dynamic_hook() {
    let hook = dynamic_hook();
    let mut h = Hook::new(&hook, "createContainer");
    h.env = None;
    let mut b = bundle("hs-preload-dyn-cc", "preload", CPU_POLICY, &h);
    b.annotate(CPU_KEY, IMPOSSIBLE);
    let marker = preload_image(&mut b);
    run_runc(&b);
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        got.contains(DYNAMIC_CONTROL),
        "createContainer: marker {got:?}"
    );

    let mut b = bundle(
        "hs-preload-dyn-pre",
        "preload",
        CPU_POLICY,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate(CPU_KEY, IMPOSSIBLE);
    let marker = b.dir.join("preload-marker");
    let mut h = Hook::new(&hook, "prestart");
    h.env = Some(vec![
        format!(
            "LD_PRELOAD={}",
            b.rootfs().join("hpcc-preload.so").display()
        ),
        format!("HPCC_PRELOAD_MARKER={}", marker.display()),
    ]);
    set_hook(&mut b, CPU_POLICY, &h);
    run_runc(&b);
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(got.contains(DYNAMIC_CONTROL), "prestart: marker {got:?}");
}

/// A copy of the static hook with a fake GPU helper `hpcc` beside it
/// (a shell script: `body`), in a root-owned directory.
fn hook_with_helper(name: &str, body: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name).join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = dir.join("hpcc-hook");
    std::fs::copy(static_hook(), &hook).unwrap();
    let helper = dir.join("hpcc");
    std::fs::write(&helper, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (hook, dir)
}

fn alive(pid: i32) -> bool {
    // A zombie has no cmdline; a live process has its `status` and is not Z.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn gpu_helper_runs_with_an_empty_environment_from_root() {
    let probe = scratch("hs-gpu-env").join("seen");
    let (hook, _) = hook_with_helper(
        "hs-gpu-env",
        &format!(
            "{{ env; echo cwd=$(pwd); }} > {}\nprintf '{{\"nvidia\":null,\"nvml_note\":\"fake helper\"}}'",
            probe.display()
        ),
    );
    let mut h = Hook::new(&hook, "createContainer");
    h.env = None;
    let mut b = bundle("hs-gpu-env-b", "preload", CPU_POLICY, &h);
    b.annotate(CPU_KEY, "x86_64");
    let marker = preload_image(&mut b);
    let l = launch(&b, "runc", &[&marker]);
    assert!(l.run.ok(), "{:?}", l.run);
    let seen = std::fs::read_to_string(&probe).expect("the GPU helper ran");
    assert!(!marker.exists());
    assert!(seen.contains("cwd=/\n"), "{seen}");
    for l in seen.lines().filter(|l| !l.starts_with("cwd=")) {
        assert!(l.starts_with("PWD="), "the helper got {l:?} ({seen})");
    }
}

#[test]
fn a_hook_killed_by_the_runtime_leaves_nothing_running() {
    let pidfile = scratch("hs-killed").join("helper.pid");
    let (hook, _) = hook_with_helper(
        "hs-killed",
        &format!("echo $$ > {}\nexec sleep 600", pidfile.display()),
    );
    // Policy deadline far away; runc's hook timeout (2 s) kills the hook.
    let policy = CPU_POLICY.replace("[log]", "[limits]\nprobe_timeout_ms = 600000\n[log]");
    let mut h = Hook::new(&hook, "prestart");
    h.timeout = Some(2);
    let mut b = bundle("hs-killed-b", "busybox", &policy, &h);
    b.annotate(CPU_KEY, "x86_64");
    let l = launch(&b, "runc", &[]);
    assert!(!l.run.ok(), "runc should have killed the hook: {:?}", l.run);
    assert!(l.run.stderr.contains("timeout"), "{:?}", l.run);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the helper started")
        .trim()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the hook's helper {pid} survived the hook");
}

#[test]
fn the_policy_deadline_bounds_a_stuck_gpu_helper() {
    let pidfile = scratch("hs-stuck").join("helper.pid");
    let (hook, _) = hook_with_helper(
        "hs-stuck",
        &format!("echo $$ > {}\nexec sleep 600", pidfile.display()),
    );
    let policy = CPU_POLICY.replace("[log]", "[limits]\nprobe_timeout_ms = 1000\n[log]");
    let mut b = bundle(
        "hs-stuck-b",
        "busybox",
        &policy,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate(CPU_KEY, "x86_64");
    let l = launch(&b, "runc", &[]);
    // Started as on a node without NVIDIA GPU, within the deadline.
    assert!(
        l.run.ok() && l.run.stdout.contains("started"),
        "{:?}",
        l.run
    );
    assert!(l.took < Duration::from_secs(15), "{:?}", l.took);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the stuck helper {pid} is still running");
}

// ---------------------------------------------------------------------------
// Finding 1: root writes onto the host through the image's /etc and
// ld.so.conf (/proc/1/root is the host's root at prestart).
// ---------------------------------------------------------------------------

/// An MPICH image asking for mpi_replace, its program printing which MPI
/// it loaded, launched by the static hook at prestart.
fn mpich_image(name: &str, fixture: &str) -> Bundle {
    mpich_image_at(name, fixture, "prestart")
}

/// [`mpich_image`] with the hook at `stage`. At createContainer the hook
/// runs in the container's mount namespace before pivot_root, where the
/// runtime's /proc, /sys and /dev are mounted in the rootfs (at prestart
/// the hook's own namespace does not see them) and /proc/1/root is the
/// host's root.
fn mpich_image_at(name: &str, fixture: &str, stage: &str) -> Bundle {
    let hook = static_hook();
    let mut h = Hook::new(&hook, stage);
    if stage == "createContainer" {
        h.env = None;
    }
    let mut b = bundle(name, fixture, MPICH_POLICY, &h);
    b.annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"]);
    b
}

/// A host directory for an attack to aim at, with a file in it.
fn host_victim(name: &str) -> PathBuf {
    let d = scratch(name);
    std::fs::write(d.join("victim"), "host data\n").unwrap();
    d
}

fn through_proc1(host: &Path) -> String {
    format!("/proc/1/root{}", host.display())
}

const STAGES: [&str; 2] = ["prestart", "createContainer"];

#[test]
fn etc_aimed_at_the_host_through_proc_1_root_is_never_written() {
    let host_etc = host_victim("hs-etc-host");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture_rootfs("mpich-app").join("etc/."))
        .arg(&host_etc)
        .status()
        .unwrap();
    assert!(st.success());
    for stage in STAGES {
        let b = mpich_image_at(&format!("hs-etc-{stage}"), "mpich-app", stage);
        let etc = b.rootfs().join("etc");
        std::fs::remove_dir_all(&etc).unwrap();
        symlink(through_proc1(&host_etc), &etc).unwrap();
        let l = launch(
            &b,
            "runc",
            &[
                &host_etc,
                Path::new("/etc/ld.so.cache"),
                Path::new("/etc/ld.so.conf"),
            ],
        );
        // Started without its cache, or refused in an hpcc line.
        assert!(l.run.ok() || refused_by_hpcc(&l), "{stage}: {:?}", l.run);
    }
}

#[test]
fn ld_so_conf_naming_host_dirs_through_proc_1_root_reads_nothing_there() {
    let host = host_victim("hs-ldconf-host");
    std::fs::copy(
        work_dir().join("build/mpich/libmpich.so.12"),
        host.join("libmpich.so.12"),
    )
    .unwrap();
    std::fs::write(host.join("more.conf"), format!("{}\n", host.display())).unwrap();
    for stage in STAGES {
        let b = mpich_image_at(&format!("hs-ldconf-{stage}"), "mpich-app", stage);
        std::fs::write(
            b.rootfs().join("etc/ld.so.conf"),
            format!(
                "{p}\ninclude {p}/*.conf\n/usr/lib/x86_64-linux-gnu\n",
                p = through_proc1(&host)
            ),
        )
        .unwrap();
        let l = launch(&b, "runc", &[&host]);
        if stage == "prestart" {
            // The image's own library is replaced; nothing of the host
            // directory was mounted (launch() checks the mount table).
            assert!(l.run.ok(), "{:?}", l.run);
            assert!(l.run.stdout.contains("MPICH Version:"), "{:?}", l.run);
        } else {
            // In the container's namespace nothing is mounted: refused.
            assert!(refused_by_hpcc(&l), "{:?}", l.run);
        }
    }
}

// ---------------------------------------------------------------------------
// Finding 2: unbounded waits on what the hook reads in the image.
// ---------------------------------------------------------------------------

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", p.display());
}

#[test]
fn fifos_devices_and_kernel_files_in_the_image_never_hold_the_hook() {
    type Setup = fn(&Path);
    let variants: [(&str, Setup); 10] = [
        ("fifo-conf", |r| mkfifo(&r.join("etc/ld.so.conf"))),
        ("fifo-include", |r| {
            std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
            mkfifo(&r.join("etc/ld.so.conf.d/a.conf"));
        }),
        ("include-dev-zero", |r| {
            std::fs::write(
                r.join("etc/ld.so.conf"),
                "include /dev/zero\ninclude /dev/stdin\n",
            )
            .unwrap()
        }),
        ("conf-is-dev-zero", |r| {
            std::fs::remove_file(r.join("etc/ld.so.conf")).unwrap();
            symlink("/dev/zero", r.join("etc/ld.so.conf")).unwrap();
        }),
        ("fifo-cache", |r| mkfifo(&r.join("etc/ld.so.cache"))),
        // At prestart the runtime's /proc is mounted in the rootfs: a read
        // of /proc/kmsg would wait for the next kernel message (and take it
        // from the host's syslog).
        ("conf-is-kmsg", |r| {
            std::fs::remove_file(r.join("etc/ld.so.conf")).unwrap();
            symlink("/proc/kmsg", r.join("etc/ld.so.conf")).unwrap();
        }),
        ("include-kmsg", |r| {
            std::fs::write(r.join("etc/ld.so.conf"), "include /proc/kmsg\n").unwrap()
        }),
        ("cache-is-kmsg", |r| {
            std::fs::remove_file(r.join("etc/ld.so.cache")).unwrap();
            symlink("/proc/kmsg", r.join("etc/ld.so.cache")).unwrap();
        }),
        ("lib-is-kmsg", |r| {
            let lib = r.join(LIB_DIR).join("libmpich.so.12");
            std::fs::remove_file(&lib).unwrap();
            symlink("/proc/kmsg", &lib).unwrap();
        }),
        ("libc-is-fifo", |r| {
            let lib = r.join(LIB_DIR).join("libc.so.6");
            std::fs::remove_file(&lib).unwrap();
            mkfifo(&lib);
        }),
    ];
    for ((variant, setup), stage) in variants.iter().flat_map(|v| STAGES.map(|stage| (v, stage))) {
        let name = format!("{variant}-{stage}");
        let mut b = mpich_image_at(&format!("hs-wait-{name}"), "mpich-app", stage);
        // The container itself runs static busybox: a dynamic program
        // would wait on the image's own FIFO libc, which is its business.
        b.args(&["/bin/busybox", "echo", "container-ran"]);
        setup(&b.rootfs());
        let l = launch(&b, "runc", &[]);
        eprintln!("{name}: {:?}, exit {:?}", l.took, l.run.code);
        // The hook answered: the container started (and may fail on its
        // own broken files), or hpcc refused it in one line.
        assert!(hook_answered(&l), "{name}: {:?}", l.run);
    }
}

// ---------------------------------------------------------------------------
// Findings 3 and 4: memory bombs in the parsers, quadratic planning.
// ---------------------------------------------------------------------------

/// Launches with the hook's peak RSS measured; returns it (KiB).
fn launch_measured(name: &str, prepare: impl FnOnce(&Path)) -> (Launch, u64) {
    let hook = static_hook();
    let rss = scratch(name).join("rss");
    let mut h = Hook::new(&hook, "prestart");
    h.rss_to = Some(rss.clone());
    let mut b = bundle(&format!("{name}-b"), "mpich-app", MPICH_POLICY, &h);
    b.annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"]);
    prepare(&b.rootfs());
    let l = launch(&b, "runc", &[]);
    let kb = peak_rss_kb(&rss);
    eprintln!(
        "{name}: {:?}, hook peak RSS {kb} KiB, exit {:?}",
        l.took, l.run.code
    );
    assert!(kb < HOOK_RSS_BOUND_KB, "{name}: hook peak RSS {kb} KiB");
    (l, kb)
}

#[test]
fn crafted_linker_caches_and_elf_objects_stay_within_budget() {
    let (base, base_kb) = launch_measured("hs-bomb-none", |_| {});
    assert!(base.run.ok(), "{:?}", base.run);
    let flags = 0x0303; // x86-64 libc6
    let (l, _) = launch_measured("hs-bomb-cache", |r| {
        // 8 MiB (the parser's size limit): ~349,000 entries sharing one
        // 4 KiB string.
        let c = crafted::shared_string_cache(8 << 20, 4000, flags);
        std::fs::write(r.join("etc/ld.so.cache"), c).unwrap();
    });
    assert!(hook_answered(&l), "{:?}", l.run);
    let (l, kb) = launch_measured("hs-bomb-elf", |r| {
        // 4096 Verneed x 65535 Vernaux: 268 million version needs in 1 MiB,
        // as the image's MPI library and as its libc.
        let elf = crafted::verneed_bomb(4096, 65535);
        for f in ["libmpich.so.12.0.0", "libc.so.6"] {
            let p = r.join(LIB_DIR).join(f);
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, &elf).unwrap();
        }
    });
    assert!(hook_answered(&l), "{:?}", l.run);
    eprintln!("ELF bomb: {kb} KiB against {base_kb} KiB for the plain image");
}

#[test]
fn sixty_thousand_candidates_plan_in_bounded_time() {
    let (l, _) = launch_measured("hs-60k", |r| {
        let lib = r.join(LIB_DIR).join("libmpich.so.12.0.0");
        let dir = r.join("srv/mpi");
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = (0..60_000)
            .map(|i| PathBuf::from(format!("/srv/mpi/c{i}")))
            .collect();
        for p in &paths {
            std::fs::hard_link(&lib, r.join(p.strip_prefix("/").unwrap())).unwrap();
        }
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let c = crafted::one_name_cache("libmpich.so.12", &refs, 0x0303);
        std::fs::write(r.join("etc/ld.so.cache"), c).unwrap();
    });
    assert!(hook_answered(&l), "{:?}", l.run);
}

// ---------------------------------------------------------------------------
// Finding 6: forged lines.
// ---------------------------------------------------------------------------

const FORGED: &str = "hpcc: container may start (policy ok)";

/// Whether any line of `text` starts with the forged text (after the
/// prefixes runc and tracing put in front of a line).
fn forged_line(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches([' ', '\t']);
        l.starts_with(FORGED) || l.starts_with("WARN forged") || l.contains('\u{1b}')
    })
}

#[test]
fn image_text_cannot_forge_lines_in_stderr_or_in_a_file_it_names() {
    let hook = static_hook();
    let values = [
        (
            CPU_KEY,
            format!("a64fx\n{FORGED}\nWARN forged\r\u{1b}[2K\u{202e}"),
        ),
        ("cdi.k8s.io/x", format!("hpcc.test/dev=a\n{FORGED}")),
        (
            "org.supercontainers.mpi.implementation",
            format!("mpich\n{FORGED}"),
        ),
    ];
    for (i, (key, value)) in values.iter().enumerate() {
        // runc prints the hook's stderr inside its own error line.
        let mut b = bundle(
            &format!("hs-forge-runc-{i}"),
            "busybox",
            CPU_POLICY,
            &Hook::new(&hook, "prestart"),
        );
        b.annotate(key, value);
        b.annotate(&format!("org.supercontainers.x\n{FORGED}"), "1");
        let l = launch(&b, "runc", &[]);
        assert!(!forged_line(&l.run.stderr), "runc {key}: {}", l.run.stderr);
        // crun writes the hook's stderr into the file the annotation
        // names: the image chooses the file, never the lines.
        let log = scratch(&format!("hs-forge-crun-{i}")).join("hook-stderr.log");
        let mut b = bundle(
            &format!("hs-forge-crun-{i}"),
            "busybox",
            CPU_POLICY,
            &Hook::new(&hook, "prestart"),
        );
        b.annotate(key, value);
        b.annotate("run.oci.hooks.stderr", log.to_str().unwrap());
        let l = launch(&b, "crun", &[]);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!forged_line(&text), "crun {key}: {text:?} ({:?})", l.run);
        if let Err(e) = only_hpcc_lines(&text) {
            panic!("crun {key}: {e}");
        }
    }
}

#[test]
fn huge_many_and_invalid_annotations_are_bounded() {
    let hook = static_hook();
    // 4 MiB value, 64 KiB key, 20,000 keys.
    let mut b = bundle(
        "hs-huge-ann",
        "busybox",
        CPU_POLICY,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate(CPU_KEY, &"x".repeat(4 << 20));
    b.annotate(
        &format!("org.supercontainers.{}", "k".repeat(64 << 10)),
        "1",
    );
    for i in 0..20_000 {
        b.annotate(
            &format!("org.supercontainers.hardware.cpu.x{i}"),
            "zen4\u{202e}",
        );
    }
    let l = launch(&b, "runc", &[]);
    assert!(
        refused_by_hpcc(&l) || l.run.ok(),
        "{:?}",
        &l.run.stderr[..l.run.stderr.len().min(2000)]
    );
    // The one line is bounded too: no 4 MiB echo of the value.
    assert!(
        l.run.stderr.len() < 1 << 20,
        "{} bytes of stderr",
        l.run.stderr.len()
    );

    // Not UTF-8: runc's decoder replaces the bytes, hpcc's refuses the
    // file. The hook fails closed, in one line.
    let mut b = bundle(
        "hs-bad-utf8",
        "busybox",
        CPU_POLICY,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate(CPU_KEY, "PLACEHOLDER");
    b.write();
    let cfg = b.dir.join("config.json");
    let text = std::fs::read(&cfg).unwrap();
    let pos = text.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    let mut bad = text[..pos].to_vec();
    bad.extend_from_slice(b"x86_64\xff\xfe\xc0\xaf");
    bad.extend_from_slice(&text[pos + 11..]);
    std::fs::write(&cfg, bad).unwrap();
    let l = launch_dir(&b, &[]);
    assert!(refused_by_hpcc(&l), "{:?}", l.run);
    assert!(l.run.stderr.contains("exit status 4"), "{:?}", l.run);
}

/// Runs the bundle's `config.json` as it is on disk (not rewritten).
fn launch_dir(b: &Bundle, watched: &[&Path]) -> Launch {
    let mounts_before = host_mountinfo();
    let before: Vec<Seen> = watched.iter().map(|p| snapshot(p)).collect();
    let t0 = Instant::now();
    let run = run_runc_dir(&b.dir, &b.id);
    let took = t0.elapsed();
    for (p, was) in watched.iter().zip(before) {
        assert_eq!(snapshot(p), was, "{}", p.display());
    }
    let after = host_mountinfo();
    let leaked: Vec<&str> = after
        .lines()
        .filter(|l| !mounts_before.lines().any(|o| o == *l))
        .filter(|l| l.contains(b.dir.to_str().unwrap()) || l.contains("hpcc"))
        .collect();
    assert!(leaked.is_empty(), "host mounts left: {leaked:?}");
    assert!(
        took < LAUNCH_BOUND && !run.stderr.contains("panicked"),
        "{run:?}"
    );
    Launch { run, took }
}

// ---------------------------------------------------------------------------
// Finding 7: unannotated = "refuse" counts only requirements hpcc could
// check (issue 24: also a known key whose value cannot be read, a
// misspelt namespace, a trailing space), at prestart and createContainer.
// ---------------------------------------------------------------------------

#[test]
fn unknown_and_look_alike_keys_do_not_make_an_image_annotated() {
    let hook = static_hook();
    // Every check at warn: only the `unannotated` rule may refuse.
    let policy = "unannotated = \"refuse\"\n[checks]\ncpu = \"warn\"\nmpi = \"warn\"\nlibc = \"warn\"\n[cache]\nenabled = false\n[log]\njournald = false\n";
    for (i, (key, value)) in [
        ("org.supercontainers.nonsense.key", "x86_64"),
        ("org.supercontainers.zzz", "x86_64"),
        // Cyrillic і (U+0456) for the Latin i of `version`.
        (
            "org.supercontainers.hardware.cpu.optimized.vers\u{456}on",
            "x86_64",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.\u{200b}version",
            "x86_64",
        ),
        (
            "ORG.SUPERCONTAINERS.HARDWARE.CPU.OPTIMIZED.VERSION",
            "x86_64",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.version ",
            "x86_64",
        ),
        (
            "org.supercontainer.hardware.cpu.optimized.version",
            "x86_64",
        ),
        ("org.supercontainers.mpi.implementation", "zzz"),
        ("org.supercontainers.libc.implementation", "zzz"),
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "pentium9000",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for stage in ["prestart", "createContainer"] {
            let mut h = Hook::new(&hook, stage);
            h.env = Some(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]);
            let mut b = bundle(
                &format!("hs-unannotated-{i}-{stage}"),
                "busybox",
                policy,
                &h,
            );
            b.annotate(key, value);
            let l = launch(&b, "runc", &[]);
            assert!(refused_by_hpcc(&l), "{key:?} {stage}: {:?}", l.run);
            assert!(
                l.run.stderr.contains("unannotated")
                    && l.run.stderr.contains("none could be checked"),
                "{key:?} {stage}: {}",
                l.run.stderr
            );
            // A non-ASCII letter of a key is shown as an escape.
            assert!(
                !l.run.stderr.contains('\u{456}'),
                "{key:?}: {}",
                l.run.stderr
            );
            assert!(!l.run.stdout.contains("started"));
        }
    }
}

// ---------------------------------------------------------------------------
// Finding 8: devices chosen by the image.
// ---------------------------------------------------------------------------

#[test]
fn a_cdi_annotation_alone_binds_no_device() {
    let dir = scratch("hs-cdi");
    let node = dir.join("hpcc-test0");
    assert!(Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success());
    let cdi = dir.join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::write(
        cdi.join("hpcc-test.json"),
        json!({
            "cdiVersion": "0.6.0",
            "kind": "hpcc.test/dev",
            "devices": [{"name": "test0", "containerEdits": {"deviceNodes": [
                {"path": "/dev/hpcc-test0", "hostPath": node, "type": "c", "major": 1, "minor": 3}
            ]}}]
        })
        .to_string(),
    )
    .unwrap();
    let policy = format!(
        "[gpu]\ncdi_spec_dirs = [\"{}\"]\n[cache]\nenabled = false\n[log]\njournald = false\n",
        cdi.display()
    );
    let hook = static_hook();
    let mut b = bundle(
        "hs-cdi-b",
        "busybox",
        &policy,
        &Hook::new(&hook, "prestart"),
    );
    b.annotate("cdi.k8s.io/image", "hpcc.test/dev=test0")
        .args(&[
            "/bin/sh",
            "-c",
            "if [ -e /dev/hpcc-test0 ]; then echo DEVICE-PRESENT; else echo DEVICE-ABSENT; fi",
        ]);
    let l = launch(&b, "runc", &[&node]);
    assert!(l.run.ok(), "{:?}", l.run);
    assert!(l.run.stdout.contains("DEVICE-ABSENT"), "{:?}", l.run);
}

// ---------------------------------------------------------------------------
// Finding 9 and the earlier classes: symlink swaps raced against the hook,
// rollback, mount targets on /proc, /sys and /dev, symlinked library dirs.
// ---------------------------------------------------------------------------

#[test]
fn a_symlink_swapped_in_a_loop_never_redirects_a_mount_onto_the_host() {
    let host = host_victim("hs-race-host");
    let host_lib = host.join("libmpich.so.12");
    std::fs::write(&host_lib, "host library, must not change\n").unwrap();
    let b = mpich_image("hs-race", "mpich-app");
    let lib_dir = b.rootfs().join(LIB_DIR);
    let lib = lib_dir.join("libmpich.so.12");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let (lib, lib_dir, evil) = (lib.clone(), lib_dir.clone(), through_proc1(&host_lib));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Atomic swaps of the library's symlink between the image's
                // file, the host through /proc/1/root, and a plain absolute
                // host path, by rename over it.
                for target in ["libmpich.so.12.0.0", evil.as_str(), "/tmp/../etc/hostname"] {
                    let tmp = lib_dir.join(".swap");
                    let _ = std::fs::remove_file(&tmp);
                    symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, &lib).unwrap();
                    n += 1;
                }
            }
            n
        })
    };
    for round in 0..6 {
        let l = launch(&b, "runc", &[&host, Path::new("/etc/hostname")]);
        eprintln!("race round {round}: {:?} exit {:?}", l.took, l.run.code);
        assert!(hook_answered(&l), "{:?}", l.run);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    eprintln!("{swaps} symlink swaps during the launches");
    assert!(swaps > 100);
}

#[test]
fn a_failed_apply_is_undone_by_handle_and_the_start_refused() {
    // The policy binds a host path that turns out not to be a file or a
    // directory: the apply helper has mounted the MPI library by then, and
    // must take it off again.
    let dir = scratch("hs-rollback");
    let fifo = dir.join("not-a-file");
    mkfifo(&fifo);
    let policy = MPICH_POLICY.replace(
        "libraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]",
        &format!(
            "libraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\nmounts = [\"{}\"]",
            fifo.display()
        ),
    );
    let mut b = mpich_image("hs-rollback-b", "mpich-app");
    set_hook(&mut b, &policy, &Hook::new(&static_hook(), "prestart"));
    let l = launch(&b, "runc", &[&dir]);
    assert!(refused_by_hpcc(&l), "{:?}", l.run);
    assert!(
        l.run.stderr.contains("everything done before was undone"),
        "{}",
        l.run.stderr
    );
}

#[test]
fn library_links_into_proc_sys_and_dev_never_become_mount_targets() {
    for (i, target) in [
        "/proc/sys/kernel/core_pattern",
        "/proc/1/attr/current",
        "/sys/kernel/uevent_seqnum",
        "/dev/null",
        "/dev/pts/ptmx",
    ]
    .iter()
    .enumerate()
    {
        let mut b = mpich_image(&format!("hs-kernel-{i}"), "mpich-app");
        let lib = b.rootfs().join(LIB_DIR).join("libmpich.so.12");
        std::fs::remove_file(&lib).unwrap();
        symlink(target, &lib).unwrap();
        if target.starts_with("/proc/") || target.starts_with("/sys/") {
            // The image ships a file there too: hidden by the runtime's
            // /proc or /sys in the container, but what the hook's own
            // namespace sees at prestart, so the link resolves.
            let f = b.rootfs().join(&target[1..]);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::copy(b.rootfs().join(LIB_DIR).join("libmpich.so.12.0.0"), &f).unwrap();
        }
        // In the container, after the start: the kernel file is the
        // kernel's, not a library bound over it. (Device nodes are not
        // read: a read of ptmx waits.)
        b.args(&[
            "/bin/sh",
            "-c",
            &format!(
                "if [ -c {target} ]; then echo DEVICE; \
                 elif grep -q MPICH {target} 2>/dev/null; then echo BOUND; else echo KERNEL; fi"
            ),
        ]);
        let l = launch(&b, "runc", &[]);
        eprintln!(
            "{target}: exit {:?}: {} {}",
            l.run.code,
            l.run.stdout.trim(),
            l.run.stderr.lines().last().unwrap_or("")
        );
        assert!(l.run.ok() || refused_by_hpcc(&l), "{target}: {:?}", l.run);
        assert!(
            !l.run.stdout.contains("BOUND"),
            "{target}: bound over: {:?}",
            l.run
        );
    }
}

#[test]
fn symlinked_library_dirs_resolve_in_the_image_with_the_static_hook() {
    const ESCAPE_TARGET: &str = "/tmp/hpcc-escape-target";
    for fixture in ["escape", "escape-file"] {
        let b = mpich_image(&format!("hs-{fixture}"), fixture);
        let l = launch(&b, "runc", &[Path::new(ESCAPE_TARGET)]);
        assert!(
            l.run.ok() && l.run.stdout.contains("MPICH Version:"),
            "{fixture}: {:?}",
            l.run
        );
    }
}

// ---------------------------------------------------------------------------
// Truncated or huge state and config.json, an untrusted policy: the hook
// alone, fed what a broken or hostile runtime and bundle would give it.
// ---------------------------------------------------------------------------

/// Runs the static hook with `stdin`; returns (exit code, stderr, time).
fn hook_alone(policy: &Path, stdin: Vec<u8>) -> (Option<i32>, String, Duration) {
    use std::io::Write;
    let t0 = Instant::now();
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(static_hook())
        .arg("prestart")
        .arg(format!("--config={}", policy.display()))
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code(), err, t0.elapsed())
}

#[test]
fn truncated_huge_and_strange_state_and_config_fail_closed() {
    let dir = scratch("hs-input");
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, CPU_POLICY).unwrap();
    let bundle_dir = dir.join("bundle");
    std::fs::create_dir_all(bundle_dir.join("rootfs")).unwrap();
    let state = |bundle: &Path| {
        json!({"ociVersion": "1.0.2", "id": "x", "status": "creating", "pid": 1, "bundle": bundle})
            .to_string()
            .into_bytes()
    };
    let good_config = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "annotations": {CPU_KEY: IMPOSSIBLE}})
    .to_string();
    let cfg = bundle_dir.join("config.json");
    type Case = (&'static str, Vec<u8>, Box<dyn Fn()>);
    let mut cases: Vec<Case> = Vec::new();
    let s = state(&bundle_dir);
    cases.push((
        "truncated state",
        s[..s.len() / 2].to_vec(),
        Box::new(|| {}),
    ));
    let mut huge = s.clone();
    huge.extend(std::iter::repeat_n(b' ', 4 << 20));
    cases.push(("4 MiB state", huge, Box::new(|| {})));
    cases.push((
        "state not JSON",
        b"\x00\xff\xfe{{{{".to_vec(),
        Box::new(|| {}),
    ));
    {
        let (cfg, good) = (cfg.clone(), good_config.clone());
        cases.push((
            "truncated config.json",
            s.clone(),
            Box::new(move || std::fs::write(&cfg, &good.as_bytes()[..good.len() / 2]).unwrap()),
        ));
    }
    {
        let (cfg, good) = (cfg.clone(), good_config.clone());
        cases.push((
            "20 MiB config.json",
            s.clone(),
            Box::new(move || {
                let mut b = good.clone().into_bytes();
                b.pop();
                b.extend(std::iter::repeat_n(b' ', 20 << 20));
                b.push(b'}');
                std::fs::write(&cfg, b).unwrap()
            }),
        ));
    }
    {
        let cfg = cfg.clone();
        cases.push((
            "config.json is a FIFO",
            s.clone(),
            Box::new(move || mkfifo(&cfg)),
        ));
    }
    {
        let cfg = cfg.clone();
        cases.push((
            "config.json is /dev/zero",
            s.clone(),
            Box::new(move || {
                let _ = std::fs::remove_file(&cfg);
                symlink("/dev/zero", &cfg).unwrap()
            }),
        ));
    }
    {
        let cfg = cfg.clone();
        cases.push((
            "deeply nested config.json",
            s.clone(),
            Box::new(move || {
                // Unknown keys are still parsed: depth, not type, is the test.
                let mut b = b"{\"ociVersion\":\"1.0.2\",\"x\":".to_vec();
                b.extend(std::iter::repeat_n(b'[', 100_000));
                std::fs::write(&cfg, b).unwrap()
            }),
        ));
    }
    for (what, stdin, setup) in cases {
        let _ = std::fs::remove_file(&cfg);
        std::fs::write(&cfg, &good_config).unwrap();
        setup();
        let (code, err, took) = hook_alone(&policy, stdin);
        eprintln!(
            "{what}: exit {code:?} in {took:?}: {}",
            err.lines().last().unwrap_or("")
        );
        assert_eq!(code, Some(4), "{what}: {err}");
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(last.starts_with("hpcc: refused to start"), "{what}: {err}");
        only_hpcc_lines(&err).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
}

#[test]
fn a_policy_others_can_write_or_not_root_owned_is_refused() {
    let hook = static_hook();
    for (i, (uid, mode)) in [(0u32, 0o666u32), (0, 0o620), (1000, 0o644)]
        .iter()
        .enumerate()
    {
        let mut b = bundle(
            &format!("hs-policy-{i}"),
            "busybox",
            CPU_POLICY,
            &Hook::new(&hook, "prestart"),
        );
        b.annotate(CPU_KEY, "x86_64");
        let p = b.dir.join("hook.toml");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        std::os::unix::fs::chown(&p, Some(*uid), None).unwrap();
        let l = launch(&b, "runc", &[]);
        assert!(refused_by_hpcc(&l), "uid {uid} mode {mode:o}: {:?}", l.run);
        assert!(l.run.stderr.contains("not trusted"), "{}", l.run.stderr);
        assert!(!l.run.stdout.contains("started"));
    }
}
