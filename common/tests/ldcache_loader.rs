//! The caches `write_cache` writes, read by glibc's real loader.
//!
//! Each test builds a tiny root filesystem (the host's loader and libc, a
//! program and shared libraries compiled here with `gcc`, the libraries in
//! directories the loader never searches by itself), writes a cache into
//! its `/etc/ld.so.cache`, and runs the loader chrooted into it: `ld.so
//! --list` shows where each library resolved, and the program's output
//! shows which copy ran. Negative controls (no cache, the entry removed)
//! prove that the cache is what resolves the library. Root is needed for
//! `chroot`; without it the commands run in a user namespace (`unshare
//! -r`).

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use hpcc_common::ldcache::{flags_for, merge, native_flags, write_cache, CacheEntry, LdCache};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// A directory removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "hpcc-ldloader-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Temp(p)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

fn gcc(args: &[&str]) {
    let out = run(Command::new("gcc").args(args));
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles a shared library `soname` whose `hpcc_test()` returns `text`,
/// into `build/<tag>/soname`.
fn library(build: &Temp, tag: &str, soname: &str, text: &str) -> PathBuf {
    let dir = build.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("lib.c");
    std::fs::write(
        &src,
        format!("const char *hpcc_test(void) {{ return \"{text}\"; }}\n"),
    )
    .unwrap();
    let out = dir.join(soname);
    gcc(&[
        "-shared",
        "-fPIC",
        &format!("-Wl,-soname,{soname}"),
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    out
}

/// Compiles a program that prints `hpcc_test()` of `lib` (linked by its
/// soname), or just prints `hello` with no library.
fn program(build: &Temp, name: &str, lib: Option<&Path>) -> PathBuf {
    let src = build.join(&format!("{name}.c"));
    let body = if lib.is_some() {
        "#include <stdio.h>\nconst char *hpcc_test(void);\nint main(void) { puts(hpcc_test()); return 0; }\n"
    } else {
        "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n"
    };
    std::fs::write(&src, body).unwrap();
    let out = build.join(name);
    let mut args = vec![
        "-o".to_string(),
        out.display().to_string(),
        src.display().to_string(),
    ];
    if let Some(l) = lib {
        args.push(l.display().to_string());
    }
    gcc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out
}

/// Copies `src` (symlinks followed) to `path` in the root.
fn install(root: &Temp, src: &Path, path: &str) {
    let dst = root.join(path);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, &dst)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), dst.display()));
}

/// A root with the host's loader and libc (in its standard place) and
/// `/bin/prog`.
fn base_root(prog: &Path) -> Temp {
    let root = Temp::new("root");
    install(&root, &std::fs::canonicalize(LOADER).unwrap(), LOADER);
    install(&root, &std::fs::canonicalize(LIBC).unwrap(), LIBC);
    install(&root, prog, "/bin/prog");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    root
}

fn write_root_cache(root: &Temp, entries: &[CacheEntry]) {
    let bytes = write_cache(entries).unwrap();
    std::fs::write(root.join("/etc/ld.so.cache"), bytes).unwrap();
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `args` chrooted into `root`, with `env` only.
fn chrooted(root: &Temp, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        Command::new("/usr/sbin/chroot")
    } else {
        let mut c = Command::new("/usr/bin/unshare");
        c.args(["-r", "chroot"]);
        c
    };
    cmd.env_clear()
        .envs(env.iter().copied())
        .arg(&root.0)
        .args(args);
    run(&mut cmd)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn entry(soname: &str, path: &str) -> CacheEntry {
    CacheEntry {
        soname: soname.into(),
        path: path.into(),
        flags: flags_for(62, true).unwrap(),
    }
}

fn libc_entry() -> CacheEntry {
    entry("libc.so.6", LIBC)
}

#[test]
fn the_loader_resolves_a_library_outside_its_search_path_through_our_cache() {
    let build = Temp::new("build");
    let lib = library(&build, "x", "libhpcctest.so.1", "from /opt/x/lib");
    let prog = program(&build, "prog", Some(&lib));
    let root = base_root(&prog);
    install(&root, &lib, "/opt/x/lib/libhpcctest.so.1");

    // Negative control: no cache, the library is not found.
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("libhpcctest.so.1: cannot open shared object file"),
        "{}",
        text(&out)
    );

    // Our cache: the loader finds it there.
    write_root_cache(
        &root,
        &[
            entry("libhpcctest.so.1", "/opt/x/lib/libhpcctest.so.1"),
            libc_entry(),
        ],
    );
    let out = chrooted(&root, &[], &[LOADER, "--list", "/bin/prog"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("libhpcctest.so.1 => /opt/x/lib/libhpcctest.so.1"),
        "{}",
        text(&out)
    );
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from /opt/x/lib\n");

    // The loader's own trace: found by the cache lookup.
    let out = chrooted(&root, &[("LD_DEBUG", "libs")], &["/bin/prog"]);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains("trying file=/opt/x/lib/libhpcctest.so.1"),
        "{trace}"
    );

    // The same cache without that entry: not found again.
    write_root_cache(&root, &[libc_entry()]);
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert!(!out.status.success(), "{}", text(&out));

    // An entry for another architecture (i386 flags) is not used.
    let mut i386 = entry("libhpcctest.so.1", "/opt/x/lib/libhpcctest.so.1");
    i386.flags = flags_for(3, false).unwrap();
    write_root_cache(&root, &[i386, libc_entry()]);
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn injected_entries_win_over_the_images_for_the_same_soname() {
    let build = Temp::new("build");
    let a = library(&build, "a", "libhpccprio.so.1", "image copy");
    let b = library(&build, "b", "libhpccprio.so.1", "injected copy");
    let prog = program(&build, "prog", Some(&a));
    let root = base_root(&prog);
    install(&root, &a, "/opt/a/lib/libhpccprio.so.1");
    install(&root, &b, "/opt/b/lib/libhpccprio.so.1");
    // Many other names around it, so the loader's binary search has to
    // find the first of the equal entries, not stumble on one.
    let mut image_entries: Vec<CacheEntry> = (0..200)
        .map(|i| {
            entry(
                &format!("libfill{i}.so.{}", i % 7),
                &format!("/opt/fill/lib{i}.so"),
            )
        })
        .collect();
    image_entries.push(entry("libhpccprio.so.1", "/opt/a/lib/libhpccprio.so.1"));
    image_entries.push(libc_entry());

    // The image's cache alone: its copy.
    write_root_cache(&root, &image_entries);
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "image copy\n",
        "{}",
        text(&out)
    );

    // Merged with an injected entry for the same soname: the injected one.
    let image = LdCache::parse(&write_cache(&image_entries).unwrap()).unwrap();
    let injected = [entry("libhpccprio.so.1", "/opt/b/lib/libhpccprio.so.1")];
    let merged = merge(&injected, Some(&image));
    assert_eq!(merged.len(), image_entries.len() + 1);
    write_root_cache(&root, &merged);
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "injected copy\n",
        "{}",
        text(&out)
    );
    let out = chrooted(&root, &[], &[LOADER, "--list", "/bin/prog"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("libhpccprio.so.1 => /opt/b/lib/libhpccprio.so.1"),
        "{}",
        text(&out)
    );

    // Equal sonames keep the caller's order whatever their place among
    // the others: swapping the two swaps the winner.
    let mut swapped = merged.clone();
    let (i, j) = (
        swapped
            .iter()
            .position(|e| e.path.starts_with("/opt/b"))
            .unwrap(),
        swapped
            .iter()
            .position(|e| e.path.starts_with("/opt/a"))
            .unwrap(),
    );
    swapped.swap(i, j);
    write_root_cache(&root, &swapped);
    let out = chrooted(&root, &[], &["/bin/prog"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "image copy\n",
        "{}",
        text(&out)
    );
}

#[test]
fn the_hosts_cache_rewritten_by_us_still_resolves_libc() {
    let host_bytes = std::fs::read("/etc/ld.so.cache").unwrap();
    let host = LdCache::parse(&host_bytes).unwrap();
    let entries: Vec<CacheEntry> = host
        .entries()
        .filter(|e| e.hwcap == 0)
        .map(CacheEntry::from)
        .collect();
    assert!(entries.len() > 100, "{}", entries.len());
    let ours = write_cache(&entries).unwrap();
    // Parsed back: the same entries in the same order. The host's file is
    // sorted by glibc's ldconfig, so an order that differed anywhere would
    // mean our comparison is not glibc's.
    let back: Vec<CacheEntry> = LdCache::parse(&ours)
        .unwrap()
        .entries()
        .map(CacheEntry::from)
        .collect();
    assert_eq!(back, entries);

    // The host's loader, chrooted into a root that has our rewrite of the
    // host cache, finds libc by the cache.
    let build = Temp::new("build");
    let prog = program(&build, "hello", None);
    let root = base_root(&prog);
    let libc = host.find("libc.so.6", native_flags()).unwrap();
    if libc != Path::new(LIBC) {
        install(
            &root,
            &std::fs::canonicalize(&libc).unwrap(),
            libc.to_str().unwrap(),
        );
    }
    std::fs::write(root.join("/etc/ld.so.cache"), &ours).unwrap();
    let out = chrooted(&root, &[("LD_DEBUG", "libs")], &["/bin/prog"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let trace = String::from_utf8_lossy(&out.stderr);
    // LD_DEBUG traces `chroot` itself too (with the host's cache), and
    // the program keeps its pid: the program's part is the last lookup of
    // libc before "initialize program: /bin/prog".
    let lines: Vec<&str> = trace
        .lines()
        .map(|l| l.split_once(':').map_or(l, |(_, r)| r).trim())
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == "initialize program: /bin/prog")
        .unwrap_or_else(|| panic!("{trace}"));
    let find = lines[..start]
        .iter()
        .rposition(|l| l.starts_with("find library=libc.so.6"))
        .unwrap_or_else(|| panic!("{trace}"));
    assert!(
        !lines[find..start]
            .iter()
            .any(|l| l.starts_with("initialize program")),
        "{trace}"
    );
    assert_eq!(lines[find + 1], "search cache=/etc/ld.so.cache", "{trace}");
    assert_eq!(
        lines[find + 2],
        format!("trying file={}", libc.display()),
        "{trace}"
    );
}
