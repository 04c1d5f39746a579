//! `libfabric_inject`: the host's `libfabric.so.1` in place of the image's,
//! its provider directory at the same path (`FI_PROVIDER_PATH`), and the
//! check that makes it safe: the host library must define every
//! `FABRIC_1.x` symbol version the MPI in the container needs.
//!
//! Every copy of the image's is replaced, not only the one its loader
//! search finds: also those inside Python packages, in its
//! `LD_LIBRARY_PATH` and in the vendor prefixes of the AI stack
//! ([`super::private`]); a copy of another major there is named in a
//! finding. With policy `libfabric.nccl_plugin`, an image that carries
//! NCCL also gets the host's NCCL network plugin over libfabric
//! (aws-ofi-nccl), in hpcc's directory under the names NCCL loads it by
//! and over the image's own plugin copies, with `NCCL_NET_PLUGIN` set.

use super::private::PrivateDirs;
use super::replace::{self, Component, LibSpec};
use super::{Inputs, Part, TweakError};
use crate::elf::ElfInfo;
use crate::matcher::{Check, Level};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The soname MPI libraries need libfabric under.
pub const LIBFABRIC: &str = "libfabric.so.1";

/// Most provider libraries inspected in the provider directory.
const MAX_PROVIDERS: usize = 64;

/// NCCL's soname: an image that has it may load a network plugin.
pub const NCCL: &str = "libnccl.so.2";
/// `NCCL_NET_PLUGIN` as hpcc sets it: NCCL then loads
/// `libnccl-net-ofi.so`.
pub const NCCL_NET_PLUGIN: &str = "ofi";
/// The names NCCL loads a network plugin by: `libnccl-net-<NCCL_NET_PLUGIN>.so`,
/// and `libnccl-net.so` when that variable is unset (aws-ofi-nccl
/// installs both).
pub const NCCL_PLUGIN_NAMES: &[&str] = &["libnccl-net-ofi.so", "libnccl-net.so"];

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
    let mut part = Part::default();
    let private = input.image.map(|img| {
        Arc::new(PrivateDirs::scan(
            img.root(),
            img,
            input.ctx.env("LD_LIBRARY_PATH"),
        ))
    });
    if let Some(cut) = private.as_ref().and_then(|p| p.cut.as_ref()) {
        part.finding(
            Check::Mpi,
            Level::Degraded,
            format!(
                "the image's private library directories (Python packages, LD_LIBRARY_PATH) were not all looked at ({cut}): a libfabric or NCCL plugin copy in one left out is not replaced"
            ),
        );
    }
    let plugin = nccl_plugin(
        input,
        lf.nccl_plugin.as_deref(),
        private.as_deref(),
        &mut part,
    )?;
    let mut extra_deps = lf.dependencies.clone();
    if let Some(p) = &plugin {
        // Its own dependencies (libfabric, which is put in place of the
        // image's, and what else it links) come with it.
        extra_deps.push(p.clone());
    }
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
        extra_deps,
        extra_key: "libfabric.dependencies".into(),
        private: private.clone(),
    };
    let provided = replace::plan(input, &comp, &mut part)?;
    if let Some(p) = &plugin {
        place_nccl_plugin(
            input,
            p,
            &deps_dir,
            private.as_deref(),
            lf.nccl_net.as_deref(),
            &mut part,
        );
    }
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

/// The host NCCL plugin to inject: the policy names one and the image
/// carries NCCL (or there is no image to look at). A plugin the host
/// cannot show is the site's error.
fn nccl_plugin(
    input: &Inputs<'_>,
    plugin: Option<&Path>,
    private: Option<&PrivateDirs>,
    part: &mut Part,
) -> Result<Option<PathBuf>, TweakError> {
    let Some(plugin) = plugin else {
        return Ok(None);
    };
    input
        .host
        .elf(plugin)
        .map_err(|e| TweakError::HostLibrary {
            key: "libfabric.nccl_plugin".into(),
            path: plugin.to_owned(),
            reason: e.to_string(),
        })?;
    let has_nccl = match input.image {
        None => true,
        Some(img) => {
            img.has(NCCL)
                || private.is_some_and(|p| !p.copies(img.root(), "libnccl", 2).found.is_empty())
        }
    };
    if !has_nccl {
        part.finding(
            Check::Mpi,
            Level::Ok,
            format!(
                "the image carries no NCCL ({NCCL}, searched in its library directories and Python packages): the host NCCL plugin {} is not injected",
                plugin.display()
            ),
        );
        return Ok(None);
    }
    Ok(Some(plugin.to_owned()))
}

/// The host plugin in hpcc's directory under the names NCCL loads it by,
/// over each plugin copy of the image's (its `LD_LIBRARY_PATH` would find
/// those first), and `NCCL_NET_PLUGIN` (and the policy's `NCCL_NET`).
fn place_nccl_plugin(
    input: &Inputs<'_>,
    plugin: &Path,
    deps_dir: &Path,
    private: Option<&PrivateDirs>,
    net: Option<&str>,
    part: &mut Part,
) {
    for name in NCCL_PLUGIN_NAMES {
        part.mount(
            plugin,
            deps_dir.join(name),
            format!("host NCCL network plugin (policy libfabric.nccl_plugin) as {name}"),
        );
        if let Some(img) = input.image {
            let mut copies: Vec<PathBuf> =
                img.find(name).libs.into_iter().map(|l| l.path).collect();
            for p in private
                .map(|p| p.named(img.root(), name))
                .unwrap_or_default()
            {
                if !copies.contains(&p) {
                    copies.push(p);
                }
            }
            for c in copies {
                part.mount(
                    plugin,
                    c.clone(),
                    format!("host NCCL network plugin replaces the image's {name}"),
                );
            }
        }
    }
    part.ld_path(deps_dir.to_owned());
    part.env(
        "NCCL_NET_PLUGIN",
        NCCL_NET_PLUGIN,
        format!(
            "NCCL loads the host plugin {} as libnccl-net-{NCCL_NET_PLUGIN}.so",
            plugin.display()
        ),
    );
    if let Some(n) = net {
        part.env(
            "NCCL_NET",
            n,
            "policy libfabric.nccl_net: NCCL uses the plugin's network or stops".into(),
        );
    }
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

    const HOST_LF: &str = "/usr/lib/x86_64-linux-gnu/libfabric.so.1";
    /// A real shared library played by the image's NCCL and plugin copies
    /// (their contents are never run, their ELF headers are read).
    const SOME_SO: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";
    const WHEEL: &str = "/usr/local/lib/python3.10/dist-packages";

    /// A stand-in for the host's aws-ofi-nccl plugin (Debian 12 packages
    /// none): a real shared object with its soname, linked against the host
    /// libfabric as the plugin is, built with the host's gcc.
    fn host_plugin(dir: &Path) -> PathBuf {
        let src = dir.join("plugin.c");
        std::fs::write(
            &src,
            "extern unsigned int fi_version(void);\nunsigned int hpcc_test_plugin(void) { return fi_version(); }\n",
        )
        .unwrap();
        let out = dir.join("libnccl-net.so");
        let st = std::process::Command::new("timeout")
            .args([
                "60",
                "gcc",
                "-shared",
                "-fPIC",
                "-Wl,-soname,libnccl-net.so",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .arg(HOST_LF)
            .status()
            .expect("gcc (tests/setup/install-deps.sh installs it)");
        assert!(st.success(), "gcc failed: {st}");
        out
    }

    /// An image shaped like NGC's and AWS's PyTorch images: libfabric in
    /// the system directory, EFA's prefix and a wheel; NCCL in two wheels;
    /// aws-ofi-nccl's plugin in its prefix. Real ELF files throughout.
    fn ngc_pytorch(with_nccl: bool) -> crate::testutil::TempDir {
        let mut files = vec![
            (HOST_LF, "/usr/lib/x86_64-linux-gnu/libfabric.so.1.18.0"),
            (HOST_LF, "/opt/amazon/efa/lib/libfabric.so.1"),
            (HOST_LF, "/workspace/lib/libfabric.so.1"),
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (SOME_SO, "/opt/amazon/aws-ofi-nccl/lib/libnccl-net.so"),
        ];
        let wheel_lf = format!("{WHEEL}/torch/lib/libfabric.so.1");
        let old_lf = format!("{WHEEL}/oldfabric/lib/libfabric.so.0");
        let torch_nccl = format!("{WHEEL}/torch/lib/libnccl.so.2");
        let nv_nccl = format!("{WHEEL}/nvidia/nccl/lib/libnccl.so.2");
        files.push((HOST_LF, &wheel_lf));
        files.push((SOME_SO, &old_lf));
        if with_nccl {
            files.push((SOME_SO, &torch_nccl));
            files.push((SOME_SO, &nv_nccl));
        }
        rootfs_with(
            &files,
            &[(
                "libfabric.so.1.18.0",
                "/usr/lib/x86_64-linux-gnu/libfabric.so.1",
            )],
        )
    }

    fn plan_ngc(root: &Rootfs, plugin: Option<&Path>) -> super::super::Planned {
        let mut p = policy(None);
        let lf = p.libfabric.as_mut().unwrap();
        lf.nccl_plugin = plugin.map(Path::to_owned);
        lf.nccl_net = Some("AWS Libfabric".into());
        let c = ctx(
            &["LD_LIBRARY_PATH=/workspace/lib:/opt/amazon/efa/lib:/opt/amazon/aws-ofi-nccl/lib"],
            &[],
        );
        let sel = Selection {
            libfabric: true,
            ..Default::default()
        };
        super::super::plan(
            &c,
            &node("icelake"),
            &p,
            &sel,
            &RealHost::uncached(Path::new("/etc/ld.so.cache")),
            Some(root),
        )
        .unwrap()
    }

    fn sources_of<'a>(p: &'a super::super::Planned, dest: &str) -> Option<&'a Path> {
        p.tweaks
            .mounts
            .iter()
            .find(|m| m.destination == Path::new(dest))
            .map(|m| m.source.as_path())
    }

    #[test]
    fn every_libfabric_copy_of_an_ngc_pytorch_image_is_replaced_and_the_nccl_plugin_injected() {
        let tmp = crate::testutil::TempDir::new("nccl-plugin");
        let plugin = host_plugin(&tmp.0);
        let t = ngc_pytorch(true);
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = plan_ngc(&root, Some(&plugin));
        assert!(
            p.findings.iter().all(|f| f.level != Level::Fatal),
            "{:#?}",
            p.findings
        );
        assert!(p.selection.libfabric);
        // Each libfabric.so.1 of the image: the system one, EFA's, the one
        // in LD_LIBRARY_PATH and the wheel's.
        for dest in [
            "/usr/lib/x86_64-linux-gnu/libfabric.so.1.18.0".to_string(),
            "/opt/amazon/efa/lib/libfabric.so.1".into(),
            "/workspace/lib/libfabric.so.1".into(),
            format!("{WHEEL}/torch/lib/libfabric.so.1"),
        ] {
            assert_eq!(
                sources_of(&p, &dest),
                Some(Path::new(HOST_LF)),
                "{dest}: {:#?}",
                p.tweaks.mounts
            );
        }
        // The copy of another major is left, and named.
        let old = format!("{WHEEL}/oldfabric/lib/libfabric.so.0");
        assert!(sources_of(&p, &old).is_none());
        assert!(
            p.findings
                .iter()
                .any(|f| f.level == Level::Degraded && f.reason.contains(&old)),
            "{:#?}",
            p.findings
        );
        // The plugin: in hpcc's directory under both names (in the
        // container's linker cache), over the image's own copy, and named
        // to NCCL.
        for dest in [
            "/dev/hpcc/lib/libfabric/libnccl-net-ofi.so",
            "/dev/hpcc/lib/libfabric/libnccl-net.so",
            "/opt/amazon/aws-ofi-nccl/lib/libnccl-net.so",
        ] {
            assert_eq!(sources_of(&p, dest), Some(plugin.as_path()), "{dest}");
        }
        assert!(p
            .tweaks
            .ld_cache
            .iter()
            .any(|e| e.soname == "libnccl-net-ofi.so"));
        let env: Vec<(&str, &str)> = p
            .tweaks
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert!(env.contains(&("NCCL_NET_PLUGIN", "ofi")), "{env:?}");
        assert!(env.contains(&("NCCL_NET", "AWS Libfabric")), "{env:?}");
        // No plugin named in the policy: libfabric only, no NCCL variable.
        let p = plan_ngc(&root, None);
        assert!(p.tweaks.env.iter().all(|e| !e.name.starts_with("NCCL_")));
        assert!(sources_of(&p, "/opt/amazon/aws-ofi-nccl/lib/libnccl-net.so").is_none());
        assert_eq!(
            sources_of(&p, &format!("{WHEEL}/torch/lib/libfabric.so.1")),
            Some(Path::new(HOST_LF))
        );
    }

    #[test]
    fn an_image_without_nccl_gets_no_plugin_and_a_missing_host_plugin_is_the_sites_error() {
        let tmp = crate::testutil::TempDir::new("nccl-plugin");
        let plugin = host_plugin(&tmp.0);
        let t = ngc_pytorch(false);
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let p = plan_ngc(&root, Some(&plugin));
        assert!(p.tweaks.env.iter().all(|e| !e.name.starts_with("NCCL_")));
        assert!(p.tweaks.mounts.iter().all(|m| m.source != plugin));
        assert!(p
            .findings
            .iter()
            .any(|f| f.reason.contains("carries no NCCL")));
        // The policy names a plugin the node lacks.
        let c = ctx(&[], &[]);
        let mut pol = policy(None);
        pol.libfabric.as_mut().unwrap().nccl_plugin = Some("/nonexistent/libnccl-net.so".into());
        let sel = Selection {
            libfabric: true,
            ..Default::default()
        };
        let e = super::super::plan(
            &c,
            &node("icelake"),
            &pol,
            &sel,
            &RealHost::uncached(Path::new("/etc/ld.so.cache")),
            Some(&root),
        )
        .unwrap_err();
        assert!(e.to_string().contains("libfabric.nccl_plugin"), "{e}");
    }
}
