//! Test fixtures shared by the unit tests of every module: nodes as
//! archspec describes them, host libraries, temporary directories, image
//! root filesystems made of real host files, policies and launch contexts.

use crate::fingerprint::*;
use crate::oci::LaunchContext;
use crate::version::Version;
use hpcc_config::{HostMpi, MpiAbi, Policy};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "hpcc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flags_of(name: &str) -> BTreeSet<String> {
    archspec::cpu::Microarchitecture::known_targets()[name]
        .all_features()
        .into_iter()
        .collect()
}

/// A node as archspec would describe `micro`, with exactly its features.
pub fn node(micro: &str) -> NodeFingerprint {
    let m = &archspec::cpu::Microarchitecture::known_targets()[micro];
    NodeFingerprint {
        schema: SCHEMA,
        hostname: "node001".into(),
        cpu: CpuFingerprint {
            platform: m.family().name().into(),
            microarchitecture: micro.into(),
            vendor: m.vendor().into(),
            model: "test CPU".into(),
            flags: flags_of(micro),
        },
        kernel: KernelFingerprint {
            release: "6.1.0-18-amd64".into(),
            version: Version::parse_prefix("6.1.0"),
            user_namespaces: true,
            modules: ["overlay".to_string()].into(),
        },
        libc: LibcFingerprint {
            implementation: "glibc".into(),
            version: Version::parse_prefix("2.36"),
        },
        gpu: GpuFingerprint {
            nvidia: None,
            nvml_note: Some("no NVIDIA GPU: NVML unavailable".into()),
        },
        mpi: vec![],
        libfabric: None,
        ucx: vec![],
    }
}

/// A host library as the fingerprint records it.
pub fn lib(path: &str) -> HostLibrary {
    HostLibrary {
        path: PathBuf::from(path),
        real_path: None,
        soname: Some(path.rsplit('/').next().unwrap().into()),
        version_defs: BTreeSet::new(),
        error: None,
    }
}

/// The node with Debian's MPICH as its host MPI.
pub fn with_mpich(mut n: NodeFingerprint) -> NodeFingerprint {
    n.mpi.push(HostMpiFingerprint {
        name: "mpich".into(),
        abi: MpiAbi::Mpich,
        libraries: vec![lib("/usr/lib/x86_64-linux-gnu/libmpich.so.12")],
    });
    n
}

/// A rootfs with copies of real host files under chosen names, and
/// symbolic links (`(target, link)`).
pub fn rootfs_with(files: &[(&str, &str)], links: &[(&str, &str)]) -> TempDir {
    let t = TempDir::new("tweaks");
    for (src, dst) in files {
        let d = t.0.join(dst.trim_start_matches('/'));
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(src, &d).unwrap();
    }
    for (target, link) in links {
        let l = t.0.join(link.trim_start_matches('/'));
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        symlink(target, l).unwrap();
    }
    t
}

/// A policy whose host MPI `mpich` is these libraries.
pub fn policy_mpich(libs: &[&str]) -> Policy {
    let mut p = Policy::default();
    p.mpi.insert(
        "mpich".into(),
        HostMpi {
            abi: MpiAbi::Mpich,
            libraries: libs.iter().map(PathBuf::from).collect(),
            dependencies: vec![],
            mounts: vec![],
            env: [("MPICH_TEST".to_string(), "1".to_string())].into(),
        },
    );
    p
}

/// A launch context with this process environment and these annotations.
pub fn ctx(env: &[&str], annotations: &[(&str, &str)]) -> LaunchContext {
    LaunchContext {
        id: "c1".into(),
        bundle: "/b".into(),
        rootfs: "/b/rootfs".into(),
        pid: None,
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        process_env: env.iter().map(|s| s.to_string()).collect(),
        dev_tmpfs: true,
        allocated_devices: vec![],
        env_from_scheduler: false,
        slurm_constrain_devices: false,
        rootless: false,
    }
}
