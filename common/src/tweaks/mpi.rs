//! `mpi_replace`: the host MPI the matcher selected (`[mpi.NAME]`) in place
//! of the image's.
//!
//! Families, by soname: the MPICH ABI is `libmpi.so.12`, and Debian's
//! `libmpich.so.12` is the same library under another name (one family),
//! with the companions `libmpicxx`/`libmpichcxx` and
//! `libmpifort`/`libmpichfort`; Open MPI is `libmpi.so.40` (companions
//! `libmpi_mpifh`, `libmpi_cxx`, ...); the MPI-5 standard ABI is
//! `libmpi_abi.so.*`. The family's main library must be found in the image
//! (otherwise nothing would be replaced); companions the host offers and the
//! image lacks are provided in the dependency directory.

use super::replace::{self, Component, LibSpec};
use super::soname::split_soname;
use super::{policy_mounts, Inputs, Part, TweakError};
use crate::matcher::Check;
use hpcc_config::MpiAbi;
use std::path::Path;

/// Stems that name one library of a family; the first group is the main
/// library.
pub fn family_stems(abi: MpiAbi) -> &'static [&'static [&'static str]] {
    match abi {
        MpiAbi::Mpich => &[
            &["libmpi", "libmpich"],
            &["libmpicxx", "libmpichcxx"],
            &["libmpifort", "libmpichfort"],
        ],
        MpiAbi::Openmpi => &[&["libmpi"]],
        MpiAbi::MpiAbi => &[&["libmpi_abi"]],
    }
}

/// The stems a host library answers for, and whether it is the family's
/// main library. A library of no known group (a companion such as Open
/// MPI's `libmpi_mpifh`) answers for its own stem.
pub fn stems_of(abi: MpiAbi, path: &Path, soname: Option<&str>) -> (Vec<String>, bool) {
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let names: Vec<&str> = soname.into_iter().chain(file.as_deref()).collect();
    for (i, group) in family_stems(abi).iter().enumerate() {
        for n in &names {
            if let Some((stem, _)) = split_soname(n) {
                if group.contains(&stem) {
                    return (group.iter().map(|s| s.to_string()).collect(), i == 0);
                }
            }
        }
    }
    let own = names
        .iter()
        .find_map(|n| split_soname(n).map(|(s, _)| s.to_owned()));
    (own.into_iter().collect(), false)
}

/// A policy name used as a directory name must be one.
pub(crate) fn dir_name(key: &str, name: &str) -> Result<String, TweakError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(TweakError::Policy {
            key: key.to_owned(),
            value: name.to_owned(),
            reason: "a host MPI name must be letters, digits, '.', '_' or '-' (it names a directory in the container)".into(),
        })
    }
}

/// Plans the replacement by the host MPI `[mpi.NAME]`.
pub(crate) fn plan(input: &Inputs<'_>, name: &str) -> Result<Part, TweakError> {
    let key = format!("mpi.{name}");
    let m = input
        .policy
        .mpi
        .get(name)
        .ok_or_else(|| TweakError::Policy {
            key: key.clone(),
            value: name.to_owned(),
            reason: "the matcher selected a host MPI the policy does not define".into(),
        })?;
    let dir = input.ctx.lib_root().join(dir_name(&key, name)?);
    let mut libs = Vec::new();
    for p in &m.libraries {
        let soname = input.host.elf(p).ok().and_then(|i| i.soname);
        let (stems, required) = stems_of(m.abi, p, soname.as_deref());
        libs.push(LibSpec {
            host_path: p.clone(),
            key: format!("{key}.libraries"),
            stems,
            required,
        });
    }
    let comp = Component {
        what: format!("host MPI `{name}` ({} ABI)", m.abi),
        check: Check::Mpi,
        deps_dir: dir,
        libs,
        extra_deps: m.dependencies.clone(),
        extra_key: format!("{key}.dependencies"),
        private: None,
    };
    let mut part = Part::default();
    replace::plan(input, &comp, &mut part)?;
    policy_mounts(input.host, &format!("{key}.mounts"), &m.mounts, &mut part)?;
    for (k, v) in &m.env {
        part.env(k, v, format!("policy {key}.env"));
    }
    Ok(part)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::host::fake::{lib, FakeHost};
    use super::super::image::ImageLibs;
    use super::super::{Inputs, Part};
    use super::*;
    use crate::matcher::{Level, Selection};
    use crate::rootfs::Rootfs;
    use crate::testutil::ctx;
    use crate::testutil::{node, policy_mpich, rootfs_with, with_mpich};
    use hpcc_config::Policy;
    use std::path::PathBuf;

    const HOSTLIB: &str = "/usr/lib/x86_64-linux-gnu";

    fn run(policy: &Policy, root: Option<&Rootfs>, host: &dyn super::super::host::Host) -> Part {
        let libs = root.map(ImageLibs::scan);
        let c = ctx(&[], &[]);
        let n = with_mpich(node("icelake"));
        let sel = Selection {
            mpi: Some("mpich".into()),
            ..Default::default()
        };
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy,
            selection: &sel,
            host,
            image: libs.as_ref(),
        };
        plan(&input, "mpich").unwrap()
    }

    fn real_host() -> super::super::host::RealHost {
        super::super::host::RealHost::uncached(Path::new("/etc/ld.so.cache"))
    }

    const LIBC: (&str, &str) = (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
    );

    #[test]
    fn families_and_stems() {
        let (s, main) = stems_of(
            MpiAbi::Mpich,
            Path::new("/x/libmpich.so.12"),
            Some("libmpich.so.12"),
        );
        assert_eq!(s, ["libmpi", "libmpich"]);
        assert!(main);
        let (s, main) = stems_of(MpiAbi::Mpich, Path::new("/x/libmpichfort.so.12"), None);
        assert_eq!(s, ["libmpifort", "libmpichfort"]);
        assert!(!main);
        // Cray: the file name is in the family, the soname is not.
        let (s, main) = stems_of(
            MpiAbi::Mpich,
            Path::new("/opt/cray/libmpi.so.12"),
            Some("libmpich_gnu_71.so.3"),
        );
        assert_eq!(s, ["libmpi", "libmpich"]);
        assert!(main);
        let (s, main) = stems_of(
            MpiAbi::Openmpi,
            Path::new("/x/libmpi.so.40"),
            Some("libmpi.so.40"),
        );
        assert_eq!(s, ["libmpi"]);
        assert!(main);
        let (s, main) = stems_of(
            MpiAbi::Openmpi,
            Path::new("/x/libmpi_mpifh.so.40"),
            Some("libmpi_mpifh.so.40"),
        );
        assert_eq!(s, ["libmpi_mpifh"]);
        assert!(!main);
        let (s, main) = stems_of(MpiAbi::MpiAbi, Path::new("/x/libmpi_abi.so.1"), None);
        assert_eq!(s, ["libmpi_abi"]);
        assert!(main);
        assert!(dir_name("mpi.x", "cray-mpich_8.1").is_ok());
        assert!(dir_name("mpi.x", "../etc").is_err());
        assert!(dir_name("mpi.x", "..").is_err());
    }

    #[test]
    fn debian_image_gets_host_mpich_over_its_own_file_and_deps_dir() {
        // The image carries the real libmpich (a stand-in would do) behind
        // an absolute symlink, as Debian packages it.
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.0",
                ),
                LIBC,
            ],
            &[(
                "/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.0",
                "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
            )],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, Some(&root), &real_host());
        assert!(!part.fatal(), "{:#?}", part.findings);
        let m = &part.tweaks.mounts[0];
        assert_eq!(m.source, PathBuf::from(format!("{HOSTLIB}/libmpich.so.12")));
        assert_eq!(
            m.destination,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libmpich.so.12.1.0")
        );
        assert!(m.readonly && m.reason.contains("mpich"), "{m:?}");
        let dests = part.mount_destinations();
        assert!(
            dests.contains(&"/dev/hpcc/lib/mpich/libhwloc.so.15".to_string()),
            "{dests:?}"
        );
        assert!(
            dests.contains(&"/dev/hpcc/lib/mpich/libucp.so.0".to_string()),
            "{dests:?}"
        );
        assert!(!dests.iter().any(|d| d.ends_with("libc.so.6")), "{dests:?}");
        assert_eq!(part.lib_dirs, [PathBuf::from("/dev/hpcc/lib/mpich")]);
        assert_eq!(part.tweaks.env[0].name, "MPICH_TEST");
        // Host 12.2.2 is newer than the image's 12.1.0: no minor warning.
        assert!(
            part.findings.iter().all(|f| f.level == Level::Ok),
            "{:#?}",
            part.findings
        );
    }

    #[test]
    fn upstream_name_in_image_is_one_family_and_both_names_load() {
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
                    "/opt/mpi/lib/libmpi.so.12.5.0",
                ),
                LIBC,
            ],
            &[("libmpi.so.12.5.0", "/opt/mpi/lib/libmpi.so.12")],
        );
        std::fs::create_dir_all(t.0.join("etc")).unwrap();
        std::fs::write(t.0.join("etc/ld.so.conf"), "/opt/mpi/lib\n").unwrap();
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, Some(&root), &real_host());
        assert!(!part.fatal(), "{:#?}", part.findings);
        let dests = part.mount_destinations();
        assert_eq!(dests[0], "/opt/mpi/lib/libmpi.so.12.5.0");
        // The copied file's soname is libmpich.so.12, found as libmpi.so.12:
        // the host library is also provided under the image's name.
        assert!(
            dests.contains(&"/dev/hpcc/lib/mpich/libmpi.so.12".to_string()),
            "{dests:?}"
        );
        // Host 12.2.2 older than the image's 12.5.0: a warning, not a refusal.
        let warn = part
            .findings
            .iter()
            .find(|f| f.level == Level::Degraded)
            .expect("minor warning");
        assert!(
            warn.reason.contains("12.2.2") && warn.reason.contains("12.5.0"),
            "{}",
            warn.reason
        );
    }

    #[test]
    fn missing_image_mpi_is_fatal_and_names_the_search() {
        let t = rootfs_with(&[LIBC], &[]);
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, Some(&root), &real_host());
        assert!(part.fatal());
        let f = &part.findings[0];
        assert_eq!(f.check, Check::Mpi);
        assert!(
            f.reason.contains("libmpi.so.12 or libmpich.so.12"),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("absent"), "{}", f.reason);
        assert!(f.reason.contains("stale or absent"), "{}", f.reason);
    }

    #[test]
    fn soname_major_mismatch_is_fatal() {
        // The image says MPICH but carries Open MPI's libmpi.so.40.
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libmpi.so.40",
                    "/usr/lib/libmpi.so.40",
                ),
                LIBC,
            ],
            &[],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, Some(&root), &real_host());
        assert!(part.fatal());
        let f = part
            .findings
            .iter()
            .find(|f| f.level == Level::Fatal)
            .unwrap();
        assert!(
            f.reason.contains("soname major")
                && f.reason.contains("libmpi.so.40")
                && f.reason.contains("major 12"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn elf_machine_mismatch_is_fatal() {
        let t = rootfs_with(&[LIBC], &[]);
        // An object of another machine under the right name: e_machine
        // (offset 18) says AArch64.
        let mut elf = std::fs::read("/usr/lib/x86_64-linux-gnu/libmpich.so.12").unwrap();
        elf[18..20].copy_from_slice(&183u16.to_le_bytes());
        std::fs::write(t.0.join("lib/x86_64-linux-gnu/libmpich.so.12"), elf).unwrap();
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, Some(&root), &real_host());
        assert!(part.fatal(), "{:#?}", part.findings);
        let f = part
            .findings
            .iter()
            .find(|f| f.level == Level::Fatal)
            .unwrap();
        assert!(
            f.reason.contains("64-bit AArch64") && f.reason.contains("64-bit x86-64"),
            "{}",
            f.reason
        );
        // A file that is no ELF at all is refused, not mounted over blindly.
        std::fs::write(
            t.0.join("lib/x86_64-linux-gnu/libmpich.so.12"),
            b"\x7fELF stand-in",
        )
        .unwrap();
        let part = run(&p, Some(&root), &real_host());
        assert!(part.fatal());
        assert!(
            part.findings[0].reason.contains("cannot be inspected"),
            "{:#?}",
            part.findings
        );
        assert!(part
            .tweaks
            .mounts
            .iter()
            .all(|m| !m.destination.ends_with("libmpich.so.12")));
    }

    #[test]
    fn glibc_newer_than_image_is_fatal_libc_with_both_versions() {
        let mut h = FakeHost::default();
        let host_mpi = h.add(HOSTLIB, lib("libmpich.so.12", &["libnew.so.1"], &["2.34"]));
        h.add(HOSTLIB, lib("libnew.so.1", &[], &["2.38"]));
        // Real image libc (2.36) and a real libmpich.so.12 in the image.
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
                ),
                LIBC,
            ],
            &[],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = policy_mpich(&[host_mpi.to_str().unwrap()]);
        let part = run(&p, Some(&root), &h);
        let f = part
            .findings
            .iter()
            .find(|f| f.level == Level::Fatal)
            .unwrap_or_else(|| panic!("{:#?}", part.findings));
        assert_eq!(f.check, Check::Libc);
        assert!(
            f.reason.contains("2.38") && f.reason.contains("2.36"),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("libnew.so.1"), "{}", f.reason);
        // Fine when the dependency only needs what the image has.
        h.add(HOSTLIB, lib("libnew.so.1", &[], &["2.36"]));
        let part = run(&p, Some(&root), &h);
        assert!(!part.fatal(), "{:#?}", part.findings);
    }

    #[test]
    fn without_rootfs_host_side_only() {
        let p = policy_mpich(&["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]);
        let part = run(&p, None, &real_host());
        assert!(!part.fatal());
        assert_eq!(
            part.tweaks.mounts[0].destination,
            PathBuf::from("/dev/hpcc/lib/mpich/libmpich.so.12")
        );
        assert!(part.tweaks.mounts.len() > 2);
    }

    #[test]
    fn unreadable_host_library_is_hpccs_error() {
        let p = policy_mpich(&["/nonexistent/libmpich.so.12"]);
        let c = ctx(&[], &[]);
        let n = node("icelake");
        let sel = Selection::default();
        let h = real_host();
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: &p,
            selection: &sel,
            host: &h,
            image: None,
        };
        let e = plan(&input, "mpich").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/libmpich.so.12"), "{e}");
        assert!(e.to_string().contains("mpi.mpich.libraries"), "{e}");
    }
}
