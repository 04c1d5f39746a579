//! `ucx_replace`: the host's `libucp`, `libuct`, `libucs` and `libucm` in
//! place of the image's, and the host's UCX modules directory at the same
//! path (`UCX_MODULE_DIR`). The four libraries are one release: replacing
//! only some of them would mix releases, so each is replaced where the
//! image has it and provided in the dependency directory where it does not.

use super::replace::{self, Component, LibSpec};
use super::soname::split_soname;
use super::{Inputs, Part, TweakError};
use crate::matcher::{Check, Level};
use std::collections::BTreeSet;

/// Most module libraries inspected in the modules directory.
const MAX_MODULES: usize = 128;

/// Plans UCX replacement.
pub(crate) fn plan(input: &Inputs<'_>) -> Result<Part, TweakError> {
    let ucx = input
        .policy
        .ucx
        .as_ref()
        .ok_or_else(|| TweakError::Policy {
            key: "ucx".into(),
            value: String::new(),
            reason: "UCX replacement was selected but the policy has no [ucx] table".into(),
        })?;
    let deps_dir = input.ctx.lib_root().join("ucx");
    let mut libs = Vec::new();
    for p in &ucx.libraries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let soname = input.host.elf(p).ok().and_then(|i| i.soname);
        let stem = soname
            .as_deref()
            .and_then(split_soname)
            .or_else(|| split_soname(&name))
            .map(|(s, _)| s.to_owned())
            .ok_or_else(|| TweakError::Policy {
                key: "ucx.libraries".into(),
                value: p.display().to_string(),
                reason: "not a versioned shared library (expected libucp.so.0 and the like)".into(),
            })?;
        libs.push(LibSpec {
            host_path: p.clone(),
            key: "ucx.libraries".into(),
            stems: vec![stem],
            required: false,
        });
    }
    let comp = Component {
        what: "host UCX".into(),
        check: Check::Mpi,
        deps_dir: deps_dir.clone(),
        libs,
        extra_deps: vec![],
        extra_key: "ucx.libraries".into(),
        private: None,
    };
    let mut part = Part::default();
    let provided = replace::plan(input, &comp, &mut part)?;
    if let Some(dir) = &ucx.modules {
        if input.host.is_dir(dir) {
            let skip: BTreeSet<String> = provided
                .iter()
                .filter_map(|(_, i)| i.soname.clone())
                .collect();
            replace::plan_plugin_dir(
                input,
                &comp,
                &mut part,
                dir,
                ("UCX_MODULE_DIR", "ucx.modules"),
                "UCX module",
                MAX_MODULES,
                &skip,
            );
        } else {
            part.finding(
                Check::Mpi,
                Level::Degraded,
                format!(
                    "the UCX modules directory {} (policy ucx.modules) does not exist on this node: UCX runs without its transport modules",
                    dir.display()
                ),
            );
        }
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::super::host::RealHost;
    use super::super::image::ImageLibs;
    use super::*;
    use crate::matcher::Selection;
    use crate::rootfs::Rootfs;
    use crate::testutil::ctx;
    use crate::testutil::node;
    use crate::testutil::rootfs_with;
    use hpcc_config::{Policy, Ucx};
    use std::path::Path;
    use std::path::PathBuf;

    #[test]
    fn host_ucx_over_image_copies_and_modules() {
        let lib = "/usr/lib/x86_64-linux-gnu";
        let t = rootfs_with(
            &[
                (
                    "/usr/lib/x86_64-linux-gnu/libucp.so.0",
                    "/usr/lib/x86_64-linux-gnu/libucp.so.0",
                ),
                (
                    "/usr/lib/x86_64-linux-gnu/libucs.so.0",
                    "/usr/lib/x86_64-linux-gnu/libucs.so.0",
                ),
                (
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "/lib/x86_64-linux-gnu/libc.so.6",
                ),
            ],
            &[],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let libs = ImageLibs::scan(&root);
        let p = Policy {
            ucx: Some(Ucx {
                libraries: ["libucp.so.0", "libuct.so.0", "libucs.so.0", "libucm.so.0"]
                    .iter()
                    .map(|n| PathBuf::from(lib).join(n))
                    .collect(),
                modules: Some(PathBuf::from(lib).join("ucx")),
            }),
            ..Default::default()
        };
        let host = RealHost::uncached(Path::new("/etc/ld.so.cache"));
        let c = ctx(&[], &[]);
        let n = node("icelake");
        let sel = Selection {
            ucx: true,
            ..Default::default()
        };
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: &p,
            selection: &sel,
            host: &host,
            image: Some(&libs),
        };
        let part = plan(&input).unwrap();
        assert!(!part.fatal(), "{:#?}", part.findings);
        let dests = part.mount_destinations();
        // Replaced where the image has them, provided where it does not.
        assert!(dests.contains(&format!("{lib}/libucp.so.0")), "{dests:?}");
        assert!(dests.contains(&format!("{lib}/libucs.so.0")), "{dests:?}");
        assert!(
            dests.contains(&"/dev/hpcc/lib/ucx/libuct.so.0".to_string()),
            "{dests:?}"
        );
        assert!(dests.contains(&format!("{lib}/ucx")), "{dests:?}");
        assert!(part
            .tweaks
            .env
            .iter()
            .any(|e| e.name == "UCX_MODULE_DIR" && e.value == format!("{lib}/ucx")));
        // libuct_ib needs libibverbs: the module's dependency comes along.
        assert!(
            dests.contains(&"/dev/hpcc/lib/ucx/libibverbs.so.1".to_string()),
            "{dests:?}"
        );
    }
}
