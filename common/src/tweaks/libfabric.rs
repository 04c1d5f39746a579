//! `libfabric_inject`: the host's `libfabric.so.1` in place of the image's,
//! its provider directory at the same path (`FI_PROVIDER_PATH`), and the
//! check that makes it safe: the host library must define every
//! `FABRIC_1.x` symbol version the MPI in the container needs.

use super::replace::{self, Component, LibSpec};
use super::{Inputs, Part, TweakError};
use crate::elf::ElfInfo;
use crate::matcher::{Check, Level};
use std::collections::BTreeSet;

/// The soname MPI libraries need libfabric under.
pub const LIBFABRIC: &str = "libfabric.so.1";

/// Most provider libraries inspected in the provider directory.
const MAX_PROVIDERS: usize = 64;

/// `FABRIC_*` versions that `needers` require from `libfabric.so.1` and
/// `defs` lacks, as `(library, version)`.
pub fn missing_fabric_versions(
    needers: &[(String, ElfInfo)],
    defs: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, info) in needers {
        for (lib, v) in &info.version_needs {
            if lib == LIBFABRIC && v.starts_with("FABRIC_") && !defs.contains(v) {
                out.push((name.clone(), v.clone()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The MPI libraries that will run in the container: the host MPI when it
/// replaces the image's, else the image's own.
fn mpi_libraries(input: &Inputs<'_>) -> Vec<(String, ElfInfo)> {
    if let Some(name) = &input.selection.mpi {
        if let Some(m) = input.policy.mpi.get(name) {
            return m
                .libraries
                .iter()
                .filter_map(|p| Some((p.display().to_string(), input.host.elf(p).ok()?)))
                .collect();
        }
    }
    let Some(image) = input.image else {
        return vec![];
    };
    let mut out = Vec::new();
    for stem in ["libmpi", "libmpich", "libmpi_abi"] {
        for major in image.majors(stem) {
            for l in image.find_major(stem, major) {
                if let Ok(info) = image.elf(&l.path) {
                    out.push((format!("the image's {}", l.path.display()), info));
                }
            }
        }
    }
    out
}

/// Plans libfabric injection.
pub(crate) fn plan(input: &Inputs<'_>) -> Result<Part, TweakError> {
    let lf = input
        .policy
        .libfabric
        .as_ref()
        .ok_or_else(|| TweakError::Policy {
            key: "libfabric".into(),
            value: String::new(),
            reason: "libfabric injection was selected but the policy has no [libfabric] table"
                .into(),
        })?;
    let deps_dir = input.ctx.lib_root().join("libfabric");
    let comp = Component {
        what: "host libfabric".into(),
        check: Check::Mpi,
        deps_dir: deps_dir.clone(),
        libs: vec![LibSpec {
            host_path: lf.library.clone(),
            key: "libfabric.library".into(),
            stems: vec!["libfabric".into()],
            required: false,
        }],
        extra_deps: lf.dependencies.clone(),
        extra_key: "libfabric.dependencies".into(),
    };
    let mut part = Part::default();
    let provided = replace::plan(input, &comp, &mut part)?;
    let defs = provided
        .first()
        .map(|(_, i)| i.version_defs.clone())
        .unwrap_or_default();
    let needers = mpi_libraries(input);
    let missing = missing_fabric_versions(&needers, &defs);
    if !missing.is_empty() {
        let have: Vec<&str> = defs
            .iter()
            .filter(|d| d.starts_with("FABRIC_"))
            .map(String::as_str)
            .collect();
        let f = part.finding(
            Check::Mpi,
            Level::Fatal,
            format!(
                "{} the host libfabric ({}) does not define: it would fail to load",
                missing
                    .iter()
                    .map(|(l, v)| format!("{l} needs {v} from {LIBFABRIC},"))
                    .collect::<Vec<_>>()
                    .join(" "),
                lf.library.display()
            ),
        );
        f.image = Some(
            missing
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(" "),
        );
        f.node = Some(if have.is_empty() {
            "no FABRIC_* versions".into()
        } else {
            have.join(" ")
        });
    }
    if let Some(dir) = &lf.providers {
        if input.host.is_dir(dir) {
            replace::plan_plugin_dir(
                input,
                &comp,
                &mut part,
                dir,
                ("FI_PROVIDER_PATH", "libfabric.providers"),
                "libfabric provider",
                MAX_PROVIDERS,
                &BTreeSet::from([LIBFABRIC.to_owned()]),
            );
        } else {
            part.finding(
                Check::Mpi,
                Level::Ok,
                format!(
                    "the libfabric provider directory {} (policy libfabric.providers) does not exist on this node: the host libfabric uses its built-in providers",
                    dir.display()
                ),
            );
        }
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::{lib, FakeHost};
    use super::super::host::RealHost;
    use super::super::image::ImageLibs;
    use super::*;
    use crate::matcher::Selection;
    use crate::rootfs::Rootfs;
    use crate::testutil::ctx;
    use crate::testutil::node;
    use crate::testutil::rootfs_with;
    use hpcc_config::{Libfabric, Policy};
    use std::path::Path;
    use std::path::PathBuf;

    fn policy(providers: Option<&str>) -> Policy {
        Policy {
            libfabric: Some(Libfabric {
                library: "/usr/lib/x86_64-linux-gnu/libfabric.so.1".into(),
                providers: providers.map(PathBuf::from),
                dependencies: vec![],
                nccl_plugin: None,
                nccl_net: None,
            }),
            ..Default::default()
        }
    }

    fn run(p: &Policy, root: Option<&Rootfs>, host: &dyn super::super::host::Host) -> Part {
        let libs = root.map(ImageLibs::scan);
        let c = ctx(&[], &[]);
        let n = node("icelake");
        let sel = Selection {
            libfabric: true,
            ..Default::default()
        };
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: p,
            selection: &sel,
            host,
            image: libs.as_ref(),
        };
        plan(&input).unwrap()
    }

    #[test]
    fn missing_fabric_version_is_named() {
        let mut mpi = lib("libmpi.so.12", &[LIBFABRIC], &[]);
        mpi.version_needs
            .push((LIBFABRIC.into(), "FABRIC_1.7".into()));
        mpi.version_needs
            .push((LIBFABRIC.into(), "FABRIC_1.0".into()));
        let defs: BTreeSet<String> = ["FABRIC_1.0", "FABRIC_1.6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = missing_fabric_versions(&[("libmpi.so.12".into(), mpi)], &defs);
        assert_eq!(m, [("libmpi.so.12".to_string(), "FABRIC_1.7".to_string())]);
    }

    #[test]
    fn real_host_libfabric_over_image_copy() {
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libfabric.so.1",
                    "/usr/lib/x86_64-linux-gnu/libfabric.so.1.18.0",
                ),
                (
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                ),
            ],
            &[(
                "libfabric.so.1.18.0",
                "/usr/lib/x86_64-linux-gnu/libfabric.so.1",
            )],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let host = RealHost::uncached(Path::new("/etc/ld.so.cache"));
        // Debian ships no provider directory: said, not fatal.
        let part = run(
            &policy(Some("/usr/lib/x86_64-linux-gnu/libfabric")),
            Some(&root),
            &host,
        );
        assert!(!part.fatal(), "{:#?}", part.findings);
        assert_eq!(
            part.tweaks.mounts[0].destination,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libfabric.so.1.18.0")
        );
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("built-in providers")));
        // libfabric's own dependencies (libibverbs, ...) come along.
        assert!(part
            .tweaks
            .mounts
            .iter()
            .any(|m| m.destination == Path::new("/dev/hpcc/lib/libfabric/libibverbs.so.1")));
    }

    #[test]
    fn image_mpi_needing_newer_fabric_abi_is_refused() {
        let mut h = FakeHost::default();
        let mut host_lf = lib(LIBFABRIC, &[], &[]);
        host_lf.version_defs = ["FABRIC_1.0", "FABRIC_1.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        h.add("/usr/lib/x86_64-linux-gnu", host_lf);
        h.dirs.insert("/usr/lib/x86_64-linux-gnu/libfabric".into());
        h.add(
            "/usr/lib/x86_64-linux-gnu/libfabric",
            lib("libefa-fi.so", &["libefa.so.1"], &[]),
        );
        h.add("/usr/lib/x86_64-linux-gnu", lib("libefa.so.1", &[], &[]));
        // A real library that needs FABRIC_1.0 and FABRIC_1.5 of
        // libfabric.so.1 (Open MPI's OFI common code) plays the image's MPI.
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libfabric.so.1",
                    "/usr/lib/x86_64-linux-gnu/libfabric.so.1",
                ),
                (
                    "/usr/lib/x86_64-linux-gnu/libmca_common_ofi.so.10.0.2",
                    "/usr/lib/x86_64-linux-gnu/libmpi.so.12",
                ),
                (
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                ),
            ],
            &[],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let part = run(
            &policy(Some("/usr/lib/x86_64-linux-gnu/libfabric")),
            Some(&root),
            &h,
        );
        let f = part
            .findings
            .iter()
            .find(|f| f.level == Level::Fatal)
            .unwrap_or_else(|| panic!("{:#?}", part.findings));
        assert!(
            f.reason.contains("FABRIC_1.5") && !f.reason.contains("needs FABRIC_1.0"),
            "{}",
            f.reason
        );
        assert_eq!(f.node.as_deref(), Some("FABRIC_1.0 FABRIC_1.1"));
        // Provider dir present: mounted, FI_PROVIDER_PATH set, provider deps.
        assert!(part
            .tweaks
            .env
            .iter()
            .any(|e| e.name == "FI_PROVIDER_PATH"
                && e.value == "/usr/lib/x86_64-linux-gnu/libfabric"));
        assert!(part
            .tweaks
            .mounts
            .iter()
            .any(|m| m.destination == Path::new("/dev/hpcc/lib/libfabric/libefa.so.1")));
        // The real host libfabric defines FABRIC_1.5: accepted.
        let part = run(
            &policy(None),
            Some(&root),
            &RealHost::uncached(Path::new("/etc/ld.so.cache")),
        );
        assert!(!part.fatal(), "{:#?}", part.findings);
    }
}
