//! What a shared library says about itself (ELF class and machine, soname,
//! needed libraries, symbol versions it defines and needs), read with
//! `goblin` from bytes: nothing is loaded or executed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// Largest library we inspect. Real MPI libraries are a few MiB; CUDA's are
/// hundreds, and are never inspected here.
pub const MAX_ELF_BYTES: u64 = 256 << 20;

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Too large to inspect.
    #[error("{path} is larger than {MAX_ELF_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not a parseable ELF object.
    #[error("{path} is not an ELF shared object: {reason}")]
    NotElf {
        /// The file.
        path: String,
        /// goblin's message.
        reason: String,
    },
}

/// The facts of one ELF shared object that decide whether it may replace
/// another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfInfo {
    /// 64-bit object.
    pub is_64: bool,
    /// `e_machine` (62 = x86-64, 183 = AArch64).
    pub machine: u16,
    /// `DT_SONAME`, if any.
    pub soname: Option<String>,
    /// `DT_NEEDED` entries.
    pub needed: Vec<String>,
    /// Symbol versions it defines (`FABRIC_1.3`, `MPI_4.0`...).
    pub version_defs: BTreeSet<String>,
    /// Symbol versions it needs, per library (`libc.so.6` -> `GLIBC_2.34`).
    pub version_needs: Vec<(String, String)>,
}

impl ElfInfo {
    /// Reads and parses a file (bounded by [`MAX_ELF_BYTES`]).
    pub fn read(path: &Path) -> Result<ElfInfo, ElfError> {
        let p = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|source| ElfError::Read {
            path: p.clone(),
            source,
        })?;
        Self::read_from(f, &p)
    }

    /// Parses an already opened file (for files opened safely inside a
    /// container rootfs). `name` is only used in messages.
    pub fn read_from(f: std::fs::File, name: &str) -> Result<ElfInfo, ElfError> {
        let mut bytes = Vec::new();
        f.take(MAX_ELF_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ElfError::Read {
                path: name.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_ELF_BYTES {
            return Err(ElfError::TooLarge {
                path: name.to_owned(),
            });
        }
        Self::parse(&bytes, name)
    }

    /// Parses ELF bytes.
    pub fn parse(bytes: &[u8], name: &str) -> Result<ElfInfo, ElfError> {
        let elf = goblin::elf::Elf::parse(bytes).map_err(|e| ElfError::NotElf {
            path: name.to_owned(),
            reason: e.to_string(),
        })?;
        let mut version_defs = BTreeSet::new();
        if let Some(verdef) = &elf.verdef {
            for def in verdef.iter() {
                // The first aux entry names the version itself; the rest are
                // its parents.
                if let Some(aux) = def.iter().next() {
                    if let Some(n) = elf.dynstrtab.get_at(aux.vda_name) {
                        version_defs.insert(n.to_owned());
                    }
                }
            }
        }
        let mut version_needs = Vec::new();
        if let Some(verneed) = &elf.verneed {
            for need in verneed.iter() {
                let lib = elf.dynstrtab.get_at(need.vn_file).unwrap_or("?").to_owned();
                for aux in need.iter() {
                    if let Some(n) = elf.dynstrtab.get_at(aux.vna_name) {
                        version_needs.push((lib.clone(), n.to_owned()));
                    }
                }
            }
        }
        Ok(ElfInfo {
            is_64: elf.is_64,
            machine: elf.header.e_machine,
            soname: elf.soname.map(str::to_owned),
            needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
            version_defs,
            version_needs,
        })
    }

    /// The highest `GLIBC_x.y` version this object needs, if any.
    pub fn max_glibc_needed(&self) -> Option<crate::version::Version> {
        self.version_needs
            .iter()
            .filter_map(|(_, v)| v.strip_prefix("GLIBC_"))
            .filter_map(|v| crate::version::Version::parse(v).ok())
            .max()
    }

    /// The highest `GLIBC_x.y` version this object defines (for `libc.so.6`:
    /// the glibc release).
    pub fn max_glibc_defined(&self) -> Option<crate::version::Version> {
        self.version_defs
            .iter()
            .filter_map(|v| v.strip_prefix("GLIBC_"))
            .filter_map(|v| crate::version::Version::parse(v).ok())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_libc() {
        // Every Debian machine that runs these tests has it.
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if cfg!(target_arch = "x86_64") {
            let info = ElfInfo::read(libc).unwrap();
            assert!(info.is_64);
            assert_eq!(info.machine, 62);
            assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
            assert!(info.max_glibc_defined().unwrap().major() == 2);
        }
    }

    #[test]
    fn rejects_non_elf() {
        let e = ElfInfo::parse(b"#!/bin/sh\necho hi\n", "script").unwrap_err();
        assert!(e.to_string().contains("script"));
    }
}
