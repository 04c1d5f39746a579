//! The host's libraries as the launch sees them: the one answer the launch
//! and `hpcc doctor` share.
//!
//! The launch finds a host library, and every library it needs, only
//! through the host's linker cache (`/etc/ld.so.cache`, parsed by hpcc's
//! own bounded reader, native architecture only) and the policy's declared
//! paths: it does not follow a library's `RUNPATH`, nor search directories
//! the cache does not list, because inside the container the host's
//! directories are not there. A doctor that looked further (`ldconfig -p`,
//! `RUNPATH`, default directories) would call a library fine that the
//! launch then cannot inject.

use crate::elf::{ElfError, ElfInfo};
use crate::tweaks::host::{Host, RealHost};
use std::path::{Path, PathBuf};

/// The host's linker cache and ELF facts of its libraries, read as the
/// launch reads them (no per-boot cache: the doctor reports what is there
/// now).
#[derive(Debug)]
pub struct HostLibraries {
    host: RealHost,
    problem: Option<String>,
}

impl HostLibraries {
    /// This node's libraries, through [`crate::launch::HOST_LD_CACHE`].
    pub fn system() -> HostLibraries {
        HostLibraries::at(Path::new(crate::launch::HOST_LD_CACHE))
    }

    /// The libraries a linker cache at `cache` lists.
    pub fn at(cache: &Path) -> HostLibraries {
        let host = RealHost::uncached(cache);
        let problem = host.cache_problem_now();
        HostLibraries { host, problem }
    }

    /// Where the launch finds `soname` on this node.
    pub fn find(&self, soname: &str) -> Option<PathBuf> {
        self.host.find_library(soname)
    }

    /// ELF facts of a host library, with the launch's bounded reader.
    pub fn elf(&self, path: &Path) -> Result<ElfInfo, ElfError> {
        self.host.elf(path)
    }

    /// Why the linker cache cannot be used, if it cannot: then the launch
    /// finds no dependency at all.
    pub fn cache_problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_cache_finds_libc_as_the_launch_does() {
        let h = HostLibraries::system();
        assert!(h.cache_problem().is_none(), "{:?}", h.cache_problem());
        let libc = h.find("libc.so.6").expect("libc.so.6 in the host cache");
        let info = h.elf(&libc).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        assert!(h.find("libhpcc-not-a-library.so.9").is_none());
    }

    #[test]
    fn a_missing_cache_is_a_problem_and_finds_nothing() {
        let h = HostLibraries::at(Path::new("/nonexistent/ld.so.cache"));
        assert!(h.cache_problem().is_some());
        assert!(h.find("libc.so.6").is_none());
    }
}
