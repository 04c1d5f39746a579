//! The host library stack: which of a plan's mounts reach the container
//! as one directory instead of one bind each.
//!
//! runc (or the hook's helper) pays for every bind mount at start and
//! again when the container's namespace is torn down: 14 libraries and
//! UCX's module directory for MPICH were 15 binds. The files hpcc puts in
//! its own directories under [`STACK_ROOT`] (the container's `/dev`
//! tmpfs: the dependency closure, the host libraries under the image's
//! names, UCX's modules) replace nothing the image names by path: the
//! loader finds them through hpcc's linker cache, whose entries already
//! point there. So they can come from one host directory holding all of
//! them, bound once at [`STACK_ROOT`]; the loader resolves exactly the
//! same paths.
//!
//! What stays a file bind: every mount over a file of the image itself
//! (the image's `libmpich.so.12.0.0`, found through the image's RPATH,
//! RUNPATH, a full path or its own cache, where only replacing that very
//! file works), and anything outside [`STACK_ROOT`].
//!
//! This is the decision only, derived from the plan's data (so the plan
//! `hpcc match --plan` shows, and the handoff to `hpcc-runtime`, keep
//! listing every file): [`crate::apply::stack`] fills the host directory
//! and turns it into the one mount.

use crate::plan::{Mount, Tweaks};
use std::path::{Component, Path, PathBuf};

/// Where the stack is bound in the container: the parent of hpcc's
/// per-component library directories in the container's `/dev` tmpfs
/// ([`crate::oci::LaunchContext::lib_root`]). Nothing of the image is
/// there, so binding a directory over it hides nothing. Without a `/dev`
/// tmpfs hpcc's directories are in the image (`/opt/hpcc/lib`) and are not
/// stacked.
pub const STACK_ROOT: &str = "/dev/hpcc/lib";

/// Fewer stacked files than this are bound one by one: filling a
/// directory for them would gain nothing.
pub const MIN_ENTRIES: usize = 2;

/// One file or directory of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackEntry {
    /// Where it goes, relative to the stack (`mpich/libhwloc.so.15`):
    /// plain components only.
    pub name: PathBuf,
    /// The host path (trusted: from the policy or the host linker cache).
    pub source: PathBuf,
}

/// The plan's mounts, split: the stack and the binds that stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackPlan {
    /// Where the stack is bound in the container ([`STACK_ROOT`]).
    pub destination: PathBuf,
    /// What it holds, in the plan's order.
    pub entries: Vec<StackEntry>,
    /// The mounts still made one by one, in the plan's order.
    pub binds: Vec<Mount>,
    /// Where the stack's bind goes among `binds` (the place of the plan's
    /// first stacked mount).
    pub position: usize,
}

/// The stack of `tweaks`, or `None` when fewer than [`MIN_ENTRIES`]
/// mounts can be stacked. A mount is stacked when it is read-only and its
/// destination is [`STACK_ROOT`] followed by plain names only (no `..`,
/// no `.`: the plan built them from file names, but this is where a
/// mistake would let a name leave the directory).
pub fn split(tweaks: &Tweaks) -> Option<StackPlan> {
    let root = Path::new(STACK_ROOT);
    let mut entries = Vec::new();
    let mut binds = Vec::new();
    let mut position = None;
    for m in &tweaks.mounts {
        match stack_name(root, m) {
            Some(name) => {
                position.get_or_insert(binds.len());
                entries.push(StackEntry {
                    name,
                    source: m.source.clone(),
                });
            }
            None => binds.push(m.clone()),
        }
    }
    if entries.len() < MIN_ENTRIES {
        return None;
    }
    // A mount that stays a bind but lands under the stack's directory (a
    // writable one) would be hidden by the stack or land in a read-only
    // directory: no planner makes one, and a plan that did stays as it was.
    if binds.iter().any(|b| b.destination.starts_with(root)) {
        return None;
    }
    // One name cannot be given two files; the planner never does that
    // (one mount per destination), and a plan that did stays as it was.
    let mut names: Vec<&Path> = entries.iter().map(|e| e.name.as_path()).collect();
    names.sort();
    if names.windows(2).any(|w| w[1].starts_with(w[0])) {
        return None;
    }
    Some(StackPlan {
        destination: root.to_owned(),
        entries,
        binds,
        position: position.unwrap_or(0),
    })
}

fn stack_name(root: &Path, m: &Mount) -> Option<PathBuf> {
    if !m.readonly || !m.source.is_absolute() {
        return None;
    }
    let rel = m.destination.strip_prefix(root).ok()?;
    let plain = rel.components().count() >= 1
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(n) if !n.is_empty()));
    plain.then(|| rel.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(src: &str, dst: &str) -> Mount {
        Mount {
            source: src.into(),
            destination: dst.into(),
            readonly: true,
            reason: "t".into(),
        }
    }

    #[test]
    fn hpcc_directories_are_stacked_and_image_files_stay_binds() {
        let t = Tweaks {
            mounts: vec![
                m(
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
                    "/usr/lib/x86_64-linux-gnu/libmpich.so.12.0.0",
                ),
                m(
                    "/lib/x86_64-linux-gnu/libhwloc.so.15",
                    "/dev/hpcc/lib/mpich/libhwloc.so.15",
                ),
                m("/usr/lib/x86_64-linux-gnu/ucx", "/dev/hpcc/lib/mpich/ucx"),
                m("/etc/hosts", "/etc/hosts"),
            ],
            ..Tweaks::default()
        };
        let s = split(&t).expect("two stackable mounts");
        assert_eq!(s.destination, PathBuf::from("/dev/hpcc/lib"));
        assert_eq!(
            s.entries,
            [
                StackEntry {
                    name: "mpich/libhwloc.so.15".into(),
                    source: "/lib/x86_64-linux-gnu/libhwloc.so.15".into()
                },
                StackEntry {
                    name: "mpich/ucx".into(),
                    source: "/usr/lib/x86_64-linux-gnu/ucx".into()
                },
            ]
        );
        let binds: Vec<_> = s.binds.iter().map(|b| b.destination.clone()).collect();
        assert_eq!(
            binds,
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libmpich.so.12.0.0"),
                PathBuf::from("/etc/hosts")
            ]
        );
        assert_eq!(s.position, 1);
    }

    #[test]
    fn writable_dotted_outside_single_and_nested_names_are_not_stacked() {
        let mut w = m("/a", "/dev/hpcc/lib/x/a");
        w.readonly = false;
        let t = Tweaks {
            mounts: vec![
                w,
                m("/b", "/dev/hpcc/lib/x/../b"),
                m("/c", "/dev/hpcc/libx/c"),
                m("/d", "/dev/hpcc/lib"),
                m("/e", "/dev/hpcc/lib/x/e"),
            ],
            ..Tweaks::default()
        };
        assert_eq!(split(&t), None, "one stackable mount only");
        let t = Tweaks {
            mounts: vec![m("/e", "/dev/hpcc/lib/x/e"), m("/f", "/dev/hpcc/lib/x/e/f")],
            ..Tweaks::default()
        };
        assert_eq!(split(&t), None, "a name inside another entry");
        // Two stackable, and a writable bind under the stack's directory
        // that the stack would hide or make read-only.
        let mut w = m("/w", "/dev/hpcc/lib/x/w");
        w.readonly = false;
        let t = Tweaks {
            mounts: vec![
                m("/e", "/dev/hpcc/lib/x/e"),
                m("/g", "/dev/hpcc/lib/x/g"),
                w,
            ],
            ..Tweaks::default()
        };
        assert_eq!(split(&t), None, "a bind left under the stack");
    }
}
