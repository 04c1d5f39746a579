//! The apply layer against the recording double: order, flags, rollback,
//! refusals. No root needed.

use super::recording::{Call, RecordingSyscalls};
use super::*;
use crate::plan::{Device, EnvVar, Mount, Tweaks};

const HOST_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
const IMAGE_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
const HOST_DEP: &str = "/usr/lib/x86_64-linux-gnu/libhwloc.so.15";
const DEP_DEST: &str = "/usr/lib/hpcc/libhwloc.so.15";
const PROVIDERS: &str = "/usr/lib/x86_64-linux-gnu/libfabric";
const CACHE_FILE: &str = "/run/hpcc/ldcache/0123.cache";

fn target() -> Target {
    Target {
        rootfs: "/b/rootfs".into(),
        pid: 42,
        ld_cache: Some(CACHE_FILE.into()),
    }
}

fn no_cache() -> Target {
    Target {
        ld_cache: None,
        ..target()
    }
}

fn mount(src: &str, dst: &str) -> Mount {
    Mount {
        source: src.into(),
        destination: dst.into(),
        readonly: true,
        reason: "test".into(),
    }
}

fn mpi_tweaks() -> Tweaks {
    Tweaks {
        mounts: vec![
            mount(HOST_MPICH, IMAGE_MPICH),
            mount(HOST_DEP, DEP_DEST),
            mount(PROVIDERS, "/opt/hpcc/libfabric"),
        ],
        ld_cache: vec![crate::plan::CacheEntry {
            soname: "libhwloc.so.15".into(),
            path: DEP_DEST.into(),
            flags: 0x0303,
        }],
        ..Tweaks::default()
    }
}

fn sys() -> RecordingSyscalls {
    RecordingSyscalls::new()
        .with_entry(IMAGE_MPICH, EntryKind::File)
        .with_entry("/dev", EntryKind::Dir)
        .with_host(HOST_MPICH, HostKind::File)
        .with_host(HOST_DEP, HostKind::File)
        .with_host(PROVIDERS, HostKind::Dir)
        .with_host(CACHE_FILE, HostKind::File)
        .with_entry(LD_CACHE, EntryKind::File)
        .with_host("/dev/hpcc-test0", HostKind::Device('c', 1, 3))
}

fn ro(recursive: bool) -> BindOptions {
    BindOptions {
        readonly: true,
        recursive,
        device: false,
    }
}

fn bind(src: &str, dst: &str, opts: BindOptions) -> Call {
    Call::BindMount {
        source: src.into(),
        target: dst.into(),
        opts,
    }
}

fn device() -> Device {
    Device {
        path: "/dev/hpcc-test0".into(),
        host_path: "/dev/hpcc-test0".into(),
        kind: 'c',
        major: 1,
        minor: 3,
        access: "rwm".into(),
        cgroup_rule: true,
        reason: "CDI test".into(),
    }
}

#[test]
fn mounts_in_order_targets_created_then_the_linker_cache_last() {
    let s = sys();
    let a = apply(&mpi_tweaks(), &target(), &s).unwrap();
    assert_eq!(
        s.calls(),
        vec![
            Call::EnterMountNamespace(42),
            Call::OpenRootfs("/b/rootfs".into()),
            Call::MakeRslave,
            bind(HOST_MPICH, IMAGE_MPICH, ro(false)),
            Call::Mkdir("/usr/lib/hpcc".into()),
            Call::CreateFile(DEP_DEST.into()),
            bind(HOST_DEP, DEP_DEST, ro(false)),
            Call::Mkdir("/opt".into()),
            Call::Mkdir("/opt/hpcc".into()),
            Call::Mkdir("/opt/hpcc/libfabric".into()),
            bind(PROVIDERS, "/opt/hpcc/libfabric", ro(true)),
            bind(CACHE_FILE, LD_CACHE, ro(false)),
        ]
    );
    assert_eq!(a.mounts.len(), 3);
    assert_eq!(a.ld_cache, Some(PathBuf::from(CACHE_FILE)));
    assert_eq!(
        a.created,
        vec![
            PathBuf::from("/usr/lib/hpcc"),
            PathBuf::from(DEP_DEST),
            PathBuf::from("/opt"),
            PathBuf::from("/opt/hpcc"),
            PathBuf::from("/opt/hpcc/libfabric"),
        ]
    );
}

#[test]
fn writable_mount_stays_writable_and_no_cache_without_one() {
    let s = sys();
    let mut m = mount(HOST_MPICH, IMAGE_MPICH);
    m.readonly = false;
    let t = Tweaks {
        mounts: vec![m],
        ..Tweaks::default()
    };
    apply(&t, &no_cache(), &s).unwrap();
    let calls = s.calls();
    assert!(calls.contains(&bind(
        HOST_MPICH,
        IMAGE_MPICH,
        BindOptions {
            readonly: false,
            recursive: false,
            device: false
        }
    )));
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::BindMount { target, .. } if target == Path::new(LD_CACHE))));
}

#[test]
fn failure_in_the_middle_undoes_every_mount_in_reverse_by_handle() {
    let s = sys().fail_on(|c| matches!(c, Call::BindMount { target, .. } if target == Path::new("/opt/hpcc/libfabric")));
    let before = s.entries();
    let e = apply(&mpi_tweaks(), &target(), &s).unwrap_err();
    let calls = s.calls();
    let failed_at = calls
        .iter()
        .position(|c| matches!(c, Call::BindMount { target, .. } if target == Path::new("/opt/hpcc/libfabric")))
        .unwrap();
    assert_eq!(
        calls[failed_at + 1..].to_vec(),
        vec![
            Call::Unmount(DEP_DEST.into()),
            Call::Unmount(IMAGE_MPICH.into()),
        ]
    );
    assert!(s.mounted().is_empty(), "{:?}", s.mounted());
    // Created targets stay: created idempotently, another launch of the
    // same image may use them (see the module comment).
    let mut created = before.clone();
    for p in [
        "/usr/lib/hpcc",
        DEP_DEST,
        "/opt",
        "/opt/hpcc",
        "/opt/hpcc/libfabric",
    ] {
        created.insert(
            PathBuf::from(p),
            if p == DEP_DEST {
                EntryKind::File
            } else {
                EntryKind::Dir
            },
        );
    }
    assert_eq!(s.entries(), created);
    let msg = e.to_string();
    assert!(
        msg.contains("mounting /usr/lib/x86_64-linux-gnu/libfabric on /opt/hpcc/libfabric"),
        "{msg}"
    );
    assert!(msg.contains("everything done before was undone"), "{msg}");
}

fn cache_bind(c: &Call) -> bool {
    matches!(c, Call::BindMount { target, .. } if target == Path::new(LD_CACHE))
}

#[test]
fn cache_failure_rolls_back_mounts_and_device_grant() {
    let s = sys().fail_on(cache_bind);
    let mut t = mpi_tweaks();
    t.devices.push(device());
    let e = apply(&t, &target(), &s).unwrap_err();
    assert!(e.to_string().contains("linker cache"), "{e}");
    let calls = s.calls();
    let after: Vec<_> = calls
        .iter()
        .skip_while(|c| !cache_bind(c))
        .skip(1)
        .cloned()
        .collect();
    assert_eq!(after[0], Call::DenyDevice("c 1:3 rwm".into()));
    assert_eq!(after[1], Call::Unmount("/dev/hpcc-test0".into()));
    assert_eq!(after.last(), Some(&Call::Unmount(IMAGE_MPICH.into())));
    assert!(s.mounted().is_empty());
}

#[test]
fn incomplete_rollback_is_reported() {
    let s = sys()
        .fail_on(|c| cache_bind(c) || matches!(c, Call::Unmount(p) if p == Path::new(IMAGE_MPICH)));
    let e = apply(&mpi_tweaks(), &target(), &s).unwrap_err();
    let ApplyError::Step { rollback, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(rollback.len(), 1, "{rollback:?}");
    assert!(e.to_string().contains("rollback incomplete"), "{e}");
}

#[test]
fn nothing_is_done_for_empty_tweaks_or_env_only() {
    let s = sys();
    let a = apply(&Tweaks::default(), &target(), &s).unwrap();
    assert!(s.calls().is_empty());
    assert_eq!(a, Applied::default());
    let t = Tweaks {
        env: vec![EnvVar {
            name: "FI_PROVIDER".into(),
            value: "tcp".into(),
            reason: "libfabric".into(),
        }],
        ..Tweaks::default()
    };
    let a = apply(&t, &target(), &s).unwrap();
    assert!(s.calls().is_empty());
    assert_eq!(a.env_not_applied.len(), 1);
    assert!(a.notes.is_empty());
    let n = &a.env_not_applied[0];
    assert!(
        n.contains("FI_PROVIDER=tcp") && n.contains("cannot change"),
        "{n}"
    );
}

#[test]
fn shared_namespace_is_refused_before_any_change() {
    let s = sys().same_namespace();
    let e = apply(&mpi_tweaks(), &target(), &s).unwrap_err();
    assert!(
        matches!(e, ApplyError::SharedNamespace { pid: 42, .. }),
        "{e:?}"
    );
    assert!(s.calls().is_empty(), "{:?}", s.calls());
    assert!(e.to_string().contains("could stay on the host"));
}

#[test]
fn device_is_bound_not_created_and_granted() {
    let s = sys();
    let t = Tweaks {
        devices: vec![device()],
        ..Tweaks::default()
    };
    let a = apply(&t, &no_cache(), &s).unwrap();
    assert_eq!(
        s.calls()[3..].to_vec(),
        vec![
            Call::CreateFile("/dev/hpcc-test0".into()),
            bind(
                "/dev/hpcc-test0",
                "/dev/hpcc-test0",
                BindOptions {
                    readonly: false,
                    recursive: false,
                    device: true
                }
            ),
            Call::AllowDevice("c 1:3 rwm".into()),
        ]
    );
    assert!(matches!(a.devices[0].grant, CgroupGrant::Added(_)));
}

#[test]
fn cgroup_v2_is_noted_not_failed() {
    let s = sys().with_grant(CgroupGrant::NotApplicable("cgroup v2".into()));
    let t = Tweaks {
        devices: vec![device()],
        ..Tweaks::default()
    };
    let a = apply(&t, &target(), &s).unwrap();
    assert!(
        a.notes.iter().any(|n| n.contains("cgroup v2")),
        "{:?}",
        a.notes
    );
}

#[test]
fn device_numbers_must_match_the_host_node() {
    let s = sys();
    let mut d = device();
    d.minor = 5;
    let t = Tweaks {
        devices: vec![d],
        ..Tweaks::default()
    };
    let e = apply(&t, &target(), &s).unwrap_err();
    assert!(e.to_string().contains("1:5"), "{e}");
    assert!(!s
        .calls()
        .iter()
        .any(|c| matches!(c, Call::BindMount { .. } | Call::CreateFile(_))));
}

#[test]
fn kind_mismatch_and_symlink_targets_are_refused() {
    let s = sys().with_entry("/opt/dir-not-file", EntryKind::Dir);
    let t = Tweaks {
        mounts: vec![mount(HOST_MPICH, "/opt/dir-not-file")],
        ..Tweaks::default()
    };
    let e = apply(&t, &target(), &s).unwrap_err();
    assert!(
        e.to_string().contains("the image has a directory there"),
        "{e}"
    );
    assert!(s.mounted().is_empty());
    // An entry that does not resolve (dangling link) is never created through.
    let s = sys().with_entry("/usr/lib/dangling", EntryKind::Symlink);
    let t = Tweaks {
        mounts: vec![mount(HOST_MPICH, "/usr/lib/dangling")],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s).is_err());
    assert!(s.mounted().is_empty());
    assert!(!s.calls().iter().any(|c| matches!(c, Call::CreateFile(_))));
}

#[test]
fn host_source_must_exist_and_not_be_special() {
    let s = sys().with_host("/run/sock", HostKind::Other);
    let t = Tweaks {
        mounts: vec![mount("/nonexistent/libx.so", "/usr/lib/libx.so")],
        ..Tweaks::default()
    };
    let e = apply(&t, &target(), &s).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/libx.so"), "{e}");
    let t = Tweaks {
        mounts: vec![mount("/run/sock", "/run/sock")],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s).is_err());
    assert!(s.mounted().is_empty());
}

#[test]
fn malformed_tweaks_name_field_and_value() {
    let s = sys();
    let t = Tweaks {
        mounts: vec![mount(HOST_MPICH, "usr/lib/relative.so")],
        ..Tweaks::default()
    };
    let e = apply(&t, &target(), &s).unwrap_err().to_string();
    assert!(
        e.contains("mounts[0].destination") && e.contains("usr/lib/relative.so"),
        "{e}"
    );
    let t = Tweaks {
        mounts: vec![mount(HOST_MPICH, "/usr/../../etc/passwd")],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s)
        .unwrap_err()
        .to_string()
        .contains(".."));
    let mut d = device();
    d.access = "rwx".into();
    let t = Tweaks {
        devices: vec![d],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s)
        .unwrap_err()
        .to_string()
        .contains("devices[0].access"));
    let t = Tweaks {
        ld_cache: vec![crate::plan::CacheEntry {
            soname: "libx.so.1".into(),
            path: "/".into(),
            flags: 0x0303,
        }],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s).is_err());
    let relative_file = Target {
        ld_cache: Some("run/hpcc/x.cache".into()),
        ..target()
    };
    assert!(apply(&mpi_tweaks(), &relative_file, &s).is_err());
    assert!(s.calls().is_empty());
}

#[test]
fn kernel_files_are_never_mount_targets() {
    let s = sys();
    for dest in [
        "/proc/1/attr/apparmor/exec",
        "/proc/sys/kernel/core_pattern",
        "/sys/fs/cgroup/devices.allow",
        "//proc/./self/attr",
    ] {
        let t = Tweaks {
            mounts: vec![mount(HOST_MPICH, dest)],
            ..Tweaks::default()
        };
        let e = apply(&t, &target(), &s).unwrap_err().to_string();
        assert!(e.contains("never mount targets"), "{dest}: {e}");
    }
    let mut d = device();
    d.path = "/sys/devices/x".into();
    let t = Tweaks {
        devices: vec![d],
        ..Tweaks::default()
    };
    assert!(apply(&t, &target(), &s).is_err());
    // /proc-like names elsewhere are fine.
    assert!(check_not_kernel("x".into(), Path::new("/procfs/x")).is_ok());
    assert!(s.calls().is_empty());
}

#[test]
fn setup_failure_changes_nothing() {
    let s = sys().fail_on(|c| matches!(c, Call::EnterMountNamespace(_)));
    let e = apply(&mpi_tweaks(), &target(), &s).unwrap_err();
    assert!(matches!(e, ApplyError::Setup(_)));
    assert_eq!(s.calls(), vec![Call::EnterMountNamespace(42)]);
}

#[test]
fn a_namespace_that_cannot_be_read_is_refused_as_shared() {
    // At createContainer the state's pid may name no process the hook can
    // see: that must be the stage refusal, before anything is entered.
    let s = sys().unreadable_namespace();
    let e = apply(&mpi_tweaks(), &target(), &s).unwrap_err();
    assert!(
        matches!(e, ApplyError::SharedNamespace { pid: 42, .. }),
        "{e:?}"
    );
    assert!(s.calls().is_empty(), "{:?}", s.calls());
    assert!(e.to_string().contains("prestart or createRuntime"), "{e}");
}
