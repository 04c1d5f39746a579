//! The hook as the CDI specs of `hpcc cdi generate` run it
//! (`hpcc-hook createRuntime --cdi=hpcc.io/mpi=mpich`), and how it and the
//! hooks.d entry share one container.
//!
//! One decision per container: when `config.json` lists a `createRuntime`
//! hook entry of this same binary with `--cdi=` arguments (the engine put
//! it there from hpcc's CDI spec), the hooks.d entry (`prestart`) leaves
//! the launch to it and exits 0; of several such entries (one per CDI
//! kind asked for), the first acts for all of them and the others exit 0.
//! The acting entry decides the launch as the hooks.d hook would
//! (annotations, fail-fast, the plan), applies the plan's tweaks but the
//! mounts the engine already made from the CDI specs, and binds one linker
//! cache with the plan's entries and the CDI devices' entries in front of
//! the image's own.

use hpcc_common::cdi_offer;
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// The `--cdi=` requests of each hpcc CDI hook entry in `spec`'s
/// `createRuntime` hooks, in order: entries whose binary is this one
/// (`self_exe`, canonical) and whose command line, read as this hook reads
/// its own, is the `createRuntime` stage under this policy (`policy`) with
/// CDI devices. So neither another program's entry, nor one that would
/// decide under another policy, nor one that would not decide at all (a
/// `poststop` stage, `--help`, an argument it refuses) makes the hooks.d
/// hook stand aside.
pub fn entries(spec: &Spec, self_exe: &Path, policy: &Path) -> Vec<Vec<String>> {
    let Some(hooks) = spec.hooks().as_ref() else {
        return vec![];
    };
    let Some(list) = hooks.create_runtime().as_ref() else {
        return vec![];
    };
    list.iter()
        .filter(|h| {
            std::fs::canonicalize(h.path())
                .ok()
                .is_some_and(|p| p == self_exe)
        })
        .filter_map(|h| {
            let args = h.args().as_deref().unwrap_or_default();
            let a = crate::hook::HookArgs::parse(args.iter().skip(1).cloned()).ok()?;
            (a.stage == crate::hook::Stage::CreateRuntime
                && a.config == policy
                && !a.cdi.is_empty())
            .then(|| cdi_offer::cdi_request(args))
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// This binary, canonical (the kernel's name for it, nothing the image or
/// the environment sets).
pub fn self_exe() -> Option<PathBuf> {
    std::fs::canonicalize("/proc/self/exe").ok()
}

/// What an entry run with `mine` should do given `entries` of the config:
/// `Some(all devices)` to act for every entry, `None` to stand aside (an
/// earlier entry acts). An entry not found in the config (run by hand)
/// acts for its own devices.
pub fn acting(mine: &[String], entries: &[Vec<String>]) -> Option<Vec<String>> {
    match entries.first() {
        None => Some(mine.to_vec()),
        Some(first) if first.as_slice() == mine => {
            let mut all: Vec<String> = Vec::new();
            for d in entries.iter().flatten() {
                if !all.contains(d) {
                    all.push(d.clone());
                }
            }
            for d in mine {
                if !all.contains(d) {
                    all.push(d.clone());
                }
            }
            Some(all)
        }
        Some(_) => None,
    }
}

/// The `(source, destination)` of every bind mount in `spec`.
pub fn spec_mounts(spec: &Spec) -> Vec<(PathBuf, PathBuf)> {
    spec.mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| Some((m.source().clone()?, m.destination().clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_first_hpcc_cdi_entry_acts_for_all() {
        let mpi = v(&["hpcc.io/mpi=mpich"]);
        let ucx = v(&["hpcc.io/ucx=host"]);
        let entries = vec![mpi.clone(), ucx.clone()];
        assert_eq!(
            acting(&mpi, &entries).unwrap(),
            v(&["hpcc.io/mpi=mpich", "hpcc.io/ucx=host"])
        );
        assert_eq!(acting(&ucx, &entries), None);
        assert_eq!(acting(&ucx, &[]).unwrap(), ucx);
    }

    #[test]
    fn entries_are_this_binarys_createruntime_hooks_with_cdi_arguments() {
        let exe = self_exe().unwrap();
        let json = serde_json::json!({
            "ociVersion": "1.0.2",
            "hooks": {
                "createRuntime": [
                    {"path": "/bin/true", "args": ["true", "--cdi=hpcc.io/mpi=mpich"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime", "--config=/p.toml", "--cdi=hpcc.io/mpi=mpich"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime", "--config=/other.toml", "--cdi=hpcc.io/fabric=libfabric"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime", "--config=/p.toml", "--cdi=hpcc.io/ucx=host"]},
                    // Entries that would not decide: another stage, --help,
                    // a second policy after this one.
                    {"path": exe, "args": ["hpcc-hook", "poststop", "--config=/p.toml", "--cdi=hpcc.io/mpi=openmpi"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime", "--config=/p.toml", "--help", "--cdi=hpcc.io/mpi=openmpi"]},
                    {"path": exe, "args": ["hpcc-hook", "createRuntime", "--config=/p.toml", "--config=/other.toml", "--cdi=hpcc.io/mpi=openmpi"]}
                ],
                "prestart": [
                    {"path": exe, "args": ["hpcc-hook", "--cdi=hpcc.io/fabric=libfabric"]}
                ]
            },
            "mounts": [
                {"destination": "/dev/hpcc/lib/mpich/libmpich.so.12", "source": "/usr/lib/libmpich.so.12", "options": ["ro", "bind"]},
                {"destination": "/proc", "type": "proc"}
            ]
        });
        let spec: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(
            entries(&spec, &exe, Path::new("/p.toml")),
            vec![v(&["hpcc.io/mpi=mpich"]), v(&["hpcc.io/ucx=host"])]
        );
        assert_eq!(
            spec_mounts(&spec),
            vec![(
                PathBuf::from("/usr/lib/libmpich.so.12"),
                PathBuf::from("/dev/hpcc/lib/mpich/libmpich.so.12")
            )]
        );
    }
}
