//! Image I/O of one `mpi_replace` start (issue 19, item 3): the image lives
//! on a shared file system that 10,000 nodes read at the same moment, so
//! what one launch asks of it is bounded whatever the image's size. The
//! count is strace's, of `hpcc-runtime` planning the start (the real
//! runtime is `/bin/true`): every open, read and directory read of a path
//! in the image's rootfs, and every write.
//!
//! Needs root, strace and the fixtures; fails, never skips.

use hpcc_e2e::*;
use std::path::Path;
use std::process::Command;

/// The bounds of BENCHMARKS.md ("Image I/O per launch").
const MAX_OPENS: usize = 20;
const MAX_READ_BYTES: u64 = 64 << 10;
/// Files added to the image's library directory.
const FILES: usize = 10_000;
const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

const POLICY: &str = r#"[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
[log]
journald = false
"#;

/// What strace saw of the image.
#[derive(Debug, Default)]
struct Io {
    opens: usize,
    reads: usize,
    read_bytes: u64,
    getdents: usize,
    libdir_getdents: usize,
    writes: Vec<String>,
}

/// The result of a syscall line (`... = 123</path>` -> 123).
fn result(line: &str) -> u64 {
    line.rsplit_once(" = ")
        .and_then(|(_, r)| r.split(['<', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn count(trace: &str, rootfs: &Path) -> Io {
    let root = rootfs.display().to_string();
    let mut io = Io::default();
    for line in trace.lines().filter(|l| l.contains(&root)) {
        // `PID syscall(...)`
        let call = line
            .split_once(' ')
            .map(|(_, rest)| rest.trim_start())
            .unwrap_or(line);
        let name = call.split('(').next().unwrap_or("");
        match name {
            "openat" | "openat2" | "open" => {
                io.opens += 1;
                if ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                    .iter()
                    .any(|f| call.contains(f))
                {
                    io.writes.push(call.to_owned());
                }
            }
            "read" | "pread64" | "readv" | "preadv" => {
                io.reads += 1;
                io.read_bytes += result(call);
            }
            "getdents64" => {
                io.getdents += 1;
                if call.contains(&format!("{root}/{LIBDIR}>")) {
                    io.libdir_getdents += 1;
                }
            }
            "write" | "pwrite64" | "writev" | "mkdir" | "mkdirat" | "unlinkat" | "renameat"
            | "renameat2" | "symlinkat" | "linkat" | "fchmodat" | "fchownat" | "utimensat"
            | "ftruncate" => io.writes.push(call.to_owned()),
            _ => {}
        }
    }
    io
}

/// A copy of mpich-app with [`FILES`] small libraries added to its library
/// directory; `fresh`: the linker cache is rewritten after them (as
/// `ldconfig` would), else they are newer than the cache.
fn big_image(name: &str, fresh: bool) -> Bundle {
    require_root();
    require("strace");
    ensure_fixtures();
    let mut b = Bundle::new(name, &fixture_rootfs("mpich-app"));
    b.args(&["/usr/bin/mpi-version"])
        .annotate("org.supercontainers.mpi.implementation", "mpich")
        .annotate("org.supercontainers.mpi.portability.mode", "mpi_replace")
        .annotate(
            "org.supercontainers.hardware.cpu.optimized.version",
            "x86_64",
        );
    b.write();
    let dir = b.rootfs().join(LIBDIR);
    for i in 0..FILES {
        std::fs::write(dir.join(format!("libdummy{i}.so.1")), b"not an ELF").unwrap();
    }
    // Past a coarse clock tick, so the order of the times is the order of
    // the events.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let cache = b.rootfs().join("etc/ld.so.cache");
    if fresh {
        let bytes = std::fs::read(&cache).unwrap();
        std::fs::write(&cache, bytes).unwrap();
    }
    b
}

/// Runs the start under strace and counts the image's I/O.
fn traced_start(b: &Bundle) -> Io {
    let policy = b.dir.with_extension("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let trace = b.dir.with_extension("strace");
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=open,openat,openat2,read,pread64,readv,preadv,getdents64,write,pwrite64,writev,mkdir,mkdirat,unlinkat,renameat,renameat2,symlinkat,linkat,fchmodat,fchownat,utimensat,ftruncate",
            "-o",
        ])
        .arg(&trace)
        .arg(bin("hpcc-runtime"))
        .arg(format!("--hpcc-config={}", policy.display()))
        .args(["--hpcc-runtime=/bin/true", "--root"])
        .arg(b.dir.with_extension("runc-root"))
        .args(["run", "--bundle"])
        .arg(&b.dir)
        .arg(&b.id)
        .output()
        .unwrap();
    assert!(out.status.success(), "the start failed: {out:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    // The plan was made: the mpich library is replaced in the private
    // bundle, which the runtime was handed.
    assert!(
        text.contains("libmpich.so.12.0.0"),
        "the planner never looked at the image's libmpich"
    );
    count(&text, &b.rootfs())
}

fn assert_bounded(io: &Io) {
    assert!(
        io.opens <= MAX_OPENS,
        "{} opens of image files: {io:?}",
        io.opens
    );
    assert!(
        io.read_bytes <= MAX_READ_BYTES,
        "{} bytes read of image files: {io:?}",
        io.read_bytes
    );
    assert!(
        io.writes.is_empty(),
        "writes to the image: {:#?}",
        io.writes
    );
}

#[test]
fn a_start_on_an_image_with_10000_libraries_and_a_fresh_cache_is_bounded() {
    let b = big_image("io-fresh", true);
    let io = traced_start(&b);
    eprintln!("fresh cache, {FILES} files: {io:?}");
    assert_bounded(&io);
    // The cache vouches for the directory: it is never listed.
    assert_eq!(io.libdir_getdents, 0, "{io:?}");
}

#[test]
fn a_start_on_an_image_with_10000_libraries_newer_than_its_cache_is_bounded() {
    let b = big_image("io-stale", false);
    let io = traced_start(&b);
    eprintln!("stale cache, {FILES} files: {io:?}");
    assert_bounded(&io);
    // The cache is older than the directory: it is listed (that is how a
    // library missing from a stale cache is found), once.
    assert!(io.libdir_getdents > 0, "{io:?}");
}

/// Opens of the image by the hook's apply helper: the rootfs, each bind
/// target looked up three times (its kind, then without following a last
/// symlink, then for the mount) and the directories of hpcc's targets in
/// the container's `/dev` tmpfs. With the host library stack an MPICH
/// start has three binds (the image's libmpich, the stack, the linker
/// cache): 11 here, whatever the image's size.
const MAX_HELPER_OPENS: usize = 12;

/// The same start with `hpcc-hook` as runc's prestart hook, strace around
/// the hook alone: what the hook's own process read (planning, through the
/// same per-launch snapshot as hpcc-runtime), and what its apply helper
/// (forked, in the container's mount namespace) opened for the mount
/// targets. What runc itself does with the rootfs is not counted, nor
/// what is under the container's `/dev`, `/proc` and `/sys` (runc's own
/// mounts, not the image).
fn traced_hook_start(b: &mut Bundle) -> (Io, Io) {
    let policy = b.dir.with_extension("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let trace = b.dir.with_extension("hook.strace");
    let _ = std::fs::remove_file(&trace);
    b.config_mut()["hooks"] = serde_json::json!({
        "prestart": [{
            "path": "/usr/bin/strace",
            "args": [
                "strace", "-f", "-y", "-e",
                "trace=open,openat,openat2,read,pread64,readv,preadv,getdents64,write,pwrite64,writev,mkdir,mkdirat,unlinkat,renameat,renameat2,symlinkat,linkat,fchmodat,fchownat,utimensat,ftruncate",
                "-o", trace,
                bin("hpcc-hook"), "prestart", format!("--config={}", policy.display()),
            ],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        }]
    });
    b.write();
    let r = run_runc(b);
    assert!(r.ok(), "the start failed: {r:?}");
    assert!(
        r.stdout.contains("MPICH Version:") && !r.stdout.contains("stand-in"),
        "the hook did not put the host MPICH in place: {r:?}"
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let root = b.rootfs().display().to_string();
    let runtimes: Vec<String> = ["dev", "proc", "sys"]
        .iter()
        .flat_map(|d| {
            [
                format!("{root}/{d}/"),
                format!("{root}/{d}>"),
                format!("{root}/{d}\""),
            ]
        })
        .collect();
    // The hook's own process is the first one strace names.
    let hook_pid = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let (mut own, mut helper) = (String::new(), String::new());
    for l in text.lines() {
        if runtimes.iter().any(|r| l.contains(r)) {
            continue;
        }
        let to = if l.split_whitespace().next() == Some(hook_pid.as_str()) {
            &mut own
        } else {
            &mut helper
        };
        to.push_str(l);
        to.push('\n');
    }
    assert!(
        own.contains("libmpich.so.12.0.0"),
        "the hook never looked at the image's libmpich"
    );
    assert!(
        helper.contains("libmpich.so.12.0.0"),
        "no apply helper mounted over the image's libmpich"
    );
    (count(&own, &b.rootfs()), count(&helper, &b.rootfs()))
}

fn assert_helper_bounded(io: &Io) {
    assert!(io.opens <= MAX_HELPER_OPENS, "{io:?}");
    assert_eq!((io.reads, io.getdents), (0, 0), "{io:?}");
    assert!(
        io.writes.is_empty(),
        "writes to the image: {:#?}",
        io.writes
    );
}

#[test]
fn a_hook_start_under_runc_on_an_image_with_10000_libraries_is_bounded() {
    let mut b = big_image("io-hook", true);
    let (own, helper) = traced_hook_start(&mut b);
    eprintln!("hpcc-hook, fresh cache, {FILES} files: hook {own:?}, helper {helper:?}");
    assert_bounded(&own);
    assert_eq!(own.libdir_getdents, 0, "{own:?}");
    assert_helper_bounded(&helper);
}

#[test]
fn a_hook_start_under_runc_on_the_plain_image_is_bounded() {
    require_root();
    require("strace");
    let mut b = Bundle::new("io-hook-plain", &fixture_rootfs("mpich-app"));
    b.args(&["/usr/bin/mpi-version"])
        .annotate("org.supercontainers.mpi.implementation", "mpich")
        .annotate("org.supercontainers.mpi.portability.mode", "mpi_replace")
        .annotate(
            "org.supercontainers.hardware.cpu.optimized.version",
            "x86_64",
        );
    let (own, helper) = traced_hook_start(&mut b);
    eprintln!("hpcc-hook, mpich-app: hook {own:?}, helper {helper:?}");
    assert_bounded(&own);
    assert_helper_bounded(&helper);
}
