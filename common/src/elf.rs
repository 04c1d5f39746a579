//! What a shared library says about itself (ELF class and machine, soname,
//! needed libraries, symbol versions it defines and needs), read with
//! `goblin` from bytes: nothing is loaded or executed.
//!
//! Image libraries are hostile, so the parse has budgets: the file is at
//! most [`MAX_ELF_BYTES`], at most [`MAX_VERSION_ENTRIES`] symbol version
//! records and [`MAX_NEEDED`] `DT_NEEDED` entries are read, and at most
//! [`MAX_NAME_BYTES`] bytes of names are copied out. Over a budget is an
//! error naming it, never a huge allocation: the symbol version tables are
//! linked lists whose links a crafted file can point back at one shared
//! record, so 1 MiB of file can describe 268 million version needs.
//!
//! Only the parts of the file this needs are parsed (headers, dynamic
//! section, dynamic string table, version sections), with goblin's
//! piecewise parsers rather than `Elf::parse`, which would also index every
//! string table (24 bytes per string: a table of NULs costs 24 times its
//! size), relocations and symbols. [`ElfInfo::read_sparse`] reads only
//! those parts from disk.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::DT_NEEDED;
use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB};
use goblin::elf::program_header::PT_DYNAMIC;
use goblin::elf::section_header::{SHT_GNU_VERDEF, SHT_GNU_VERNEED};
use goblin::elf::{Dynamic, Elf, ProgramHeader, SectionHeader, VerdefSection, VerneedSection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// Largest library we inspect. Real MPI libraries are a few MiB; CUDA's are
/// hundreds, and are never inspected here.
pub const MAX_ELF_BYTES: u64 = 256 << 20;
/// Most symbol version records (`Verdef`, `Verneed`, `Vernaux`, together)
/// read from one object. The largest on a Debian 12 host (libstdc++,
/// libLLVM) have well under 200.
pub const MAX_VERSION_ENTRIES: usize = 4096;
/// Most `DT_NEEDED` entries read. Real libraries have a few dozen.
pub const MAX_NEEDED: usize = 1024;
/// Most bytes of names (soname, needed libraries, versions) copied out of
/// one object.
pub const MAX_NAME_BYTES: usize = 1 << 20;
/// Longest name accepted (`PATH_MAX`); a longer one is ignored.
const MAX_NAME: usize = 4096;
/// Most bytes [`ElfInfo::read_sparse`] reads from one file: headers,
/// dynamic section, dynamic strings and version sections. libLLVM's
/// dynamic string table, the largest on a Debian 12 host, is 3.2 MB.
pub const MAX_SPARSE_BYTES: u64 = 32 << 20;

/// `SHT_GNU_verdef` and `SHT_GNU_verneed` as goblin's section header field
/// type.
const VERSION_SECTIONS: [u32; 2] = [SHT_GNU_VERDEF, SHT_GNU_VERNEED];

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
        /// goblin's message, or ours.
        reason: String,
    },
    /// Over one of the parse budgets (a crafted or absurd file).
    #[error("{path} is not inspected: it has more than {limit} {what}")]
    OverBudget {
        /// The file.
        path: String,
        /// What was counted.
        what: &'static str,
        /// The budget.
        limit: u64,
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
    /// `DT_NEEDED` entries, in order, without duplicates.
    pub needed: Vec<String>,
    /// Symbol versions it defines (`FABRIC_1.3`, `MPI_4.0`...).
    pub version_defs: BTreeSet<String>,
    /// Symbol versions it needs, per library (`libc.so.6` -> `GLIBC_2.34`),
    /// sorted, without duplicates.
    pub version_needs: Vec<(String, String)>,
}

/// The names of the dynamic string table, copied out within
/// [`MAX_NAME_BYTES`].
struct Names<'a> {
    table: &'a [u8],
    left: usize,
    path: &'a str,
}

impl Names<'_> {
    /// The NUL-terminated string at `off`: `None` when absent, unterminated,
    /// longer than [`MAX_NAME`] or not UTF-8 (goblin would have refused the
    /// whole table; one bad name is not worth refusing the file).
    fn get(&mut self, off: usize) -> Result<Option<String>, ElfError> {
        let Some(rest) = self.table.get(off..) else {
            return Ok(None);
        };
        let rest = &rest[..rest.len().min(MAX_NAME + 1)];
        let Some(len) = rest.iter().position(|&c| c == 0) else {
            return Ok(None);
        };
        let Ok(s) = std::str::from_utf8(&rest[..len]) else {
            return Ok(None);
        };
        self.charge(len)?;
        Ok(Some(s.to_owned()))
    }

    /// Counts `n` bytes against the budget (a copy made of a name).
    fn charge(&mut self, n: usize) -> Result<(), ElfError> {
        self.left = self.left.checked_sub(n).ok_or(ElfError::OverBudget {
            path: self.path.to_owned(),
            what: "bytes of names",
            limit: MAX_NAME_BYTES as u64,
        })?;
        Ok(())
    }
}

/// Counts symbol version records against [`MAX_VERSION_ENTRIES`].
struct Counter<'a> {
    n: usize,
    path: &'a str,
}

impl Counter<'_> {
    fn tick(&mut self) -> Result<(), ElfError> {
        self.n += 1;
        if self.n > MAX_VERSION_ENTRIES {
            return Err(ElfError::OverBudget {
                path: self.path.to_owned(),
                what: "symbol version records",
                limit: MAX_VERSION_ENTRIES as u64,
            });
        }
        Ok(())
    }
}

/// The headers goblin parsed, and the byte order.
struct Layout {
    header: goblin::elf::Header,
    ctx: Ctx,
    phdrs: Vec<ProgramHeader>,
    shdrs: Vec<SectionHeader>,
}

fn not_elf(path: &str, reason: impl std::fmt::Display) -> ElfError {
    ElfError::NotElf {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// goblin's context (class, byte order) from the identification bytes.
fn context(header: &goblin::elf::Header, path: &str) -> Result<Ctx, ElfError> {
    let container = match header.e_ident[EI_CLASS] {
        ELFCLASS64 => Container::Big,
        ELFCLASS32 => Container::Little,
        c => return Err(not_elf(path, format!("unknown ELF class {c}"))),
    };
    let endian = match header.e_ident[EI_DATA] {
        ELFDATA2LSB => Endian::Little,
        ELFDATA2MSB => Endian::Big,
        d => return Err(not_elf(path, format!("unknown ELF byte order {d}"))),
    };
    Ok(Ctx::new(container, endian))
}

impl Layout {
    /// The ELF header, program headers and section headers. goblin refuses
    /// counts larger than the file can hold, so these are bounded by the
    /// file's size.
    fn parse(bytes: &[u8], path: &str) -> Result<Layout, ElfError> {
        let header = Elf::parse_header(bytes).map_err(|e| not_elf(path, e))?;
        let ctx = context(&header, path)?;
        let phdrs =
            ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)
                .map_err(|e| not_elf(path, e))?;
        let shdrs =
            SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx)
                .map_err(|e| not_elf(path, e))?;
        Ok(Layout {
            header,
            ctx,
            phdrs,
            shdrs,
        })
    }

    /// The dynamic section, and where the dynamic string table is (file
    /// offset, size).
    fn dynamic(
        &self,
        bytes: &[u8],
        path: &str,
    ) -> Result<Option<(Dynamic, usize, usize)>, ElfError> {
        let dynamic = Dynamic::parse(bytes, &self.phdrs, self.ctx).map_err(|e| not_elf(path, e))?;
        Ok(dynamic.map(|d| {
            let (off, size) = (d.info.strtab, d.info.strsz);
            (d, off, size)
        }))
    }
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
    /// container rootfs), reading it whole. `name` is only used in messages.
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

    /// Parses an opened file reading only what [`ElfInfo::parse`] looks at
    /// (headers, dynamic section, dynamic strings, version sections, at most
    /// [`MAX_SPARSE_BYTES`] together) into an otherwise zeroed buffer of the
    /// file's size, then parses that: the same result as a whole read, for a
    /// few pages instead of the whole file (a 40 MiB MPI library: ~23 ms
    /// less, at every launch). The buffer is `calloc`ed: pages never written
    /// cost no memory.
    pub fn read_sparse(f: &std::fs::File, name: &str) -> Result<ElfInfo, ElfError> {
        let len = f
            .metadata()
            .map_err(|source| ElfError::Read {
                path: name.to_owned(),
                source,
            })?
            .len();
        if len > MAX_ELF_BYTES {
            return Err(ElfError::TooLarge {
                path: name.to_owned(),
            });
        }
        let mut s = Sparse {
            f,
            buf: vec![0u8; len as usize],
            read: 0,
            name,
        };
        s.fill(0, 64)?;
        let header = Elf::parse_header(&s.buf).map_err(|e| not_elf(name, e))?;
        let ctx = context(&header, name)?;
        let phsize = ProgramHeader::size(ctx) as u64;
        let shsize = SectionHeader::size(ctx) as u64;
        s.fill(
            header.e_phoff,
            phsize.saturating_mul(u64::from(header.e_phnum)),
        )?;
        // Section count 0 with a table: the count is in the first entry.
        s.fill(header.e_shoff, shsize)?;
        let shnum = match header.e_shnum {
            0 if header.e_shoff != 0 => {
                SectionHeader::parse(&s.buf, header.e_shoff as usize, 1, ctx)
                    .ok()
                    .and_then(|v| v.first().map(|h| h.sh_size))
                    .unwrap_or(0)
            }
            n => u64::from(n),
        };
        s.fill(header.e_shoff, shsize.saturating_mul(shnum))?;
        // What the parse would refuse, it refuses on the sparse buffer too.
        if let Ok(layout) = Layout::parse(&s.buf, name) {
            for ph in layout.phdrs.iter().filter(|p| p.p_type == PT_DYNAMIC) {
                s.fill(ph.p_offset, ph.p_filesz)?;
            }
            if let Ok(Some((_, off, size))) = layout.dynamic(&s.buf, name) {
                s.fill(off as u64, size as u64)?;
            }
            for sh in layout
                .shdrs
                .iter()
                .filter(|h| VERSION_SECTIONS.contains(&h.sh_type))
            {
                s.fill(sh.sh_offset, sh.sh_size)?;
            }
        }
        Self::parse(&s.buf, name)
    }

    /// Parses ELF bytes.
    pub fn parse(bytes: &[u8], name: &str) -> Result<ElfInfo, ElfError> {
        let layout = Layout::parse(bytes, name)?;
        let mut soname = None;
        let mut needed = Vec::new();
        let mut names = Names {
            table: &[],
            left: MAX_NAME_BYTES,
            path: name,
        };
        if let Some((dynamic, off, size)) = layout.dynamic(bytes, name)? {
            names.table = off
                .checked_add(size)
                .and_then(|end| bytes.get(off..end))
                .ok_or_else(|| not_elf(name, "dynamic string table outside the file"))?;
            if dynamic.info.soname != 0 {
                soname = names.get(dynamic.info.soname)?;
            }
            needed = needed_libraries(&dynamic, &mut names)?;
        }
        let mut count = Counter { n: 0, path: name };
        let version_defs = version_defs(bytes, &layout, &mut names, &mut count)?;
        let version_needs = version_needs(bytes, &layout, &mut names, &mut count)?;
        Ok(ElfInfo {
            is_64: layout.header.e_ident[EI_CLASS] == ELFCLASS64,
            machine: layout.header.e_machine,
            soname,
            needed,
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

/// Most notes read from an object's `PT_NOTE` segments.
pub const MAX_NOTES: usize = 64;
/// Most `.dynsym` entries looked at for `STT_GNU_IFUNC`.
pub const MAX_DYNSYMS: usize = 1 << 20;

/// What the image scan (`image::elfscan`) reads beyond [`ElfInfo`], with
/// the same care: headers and the few parts named, nothing indexed, every
/// slice checked against the file.
pub struct ObjectParts<'a> {
    /// `e_type`.
    pub e_type: u16,
    /// `PT_INTERP`, when a plain name of at most [`MAX_NAME`] bytes.
    pub interp: Option<String>,
    /// The notes of the `PT_NOTE` segments, at most [`MAX_NOTES`].
    pub notes: Vec<goblin::elf::note::Note<'a>>,
    /// One of the first [`MAX_DYNSYMS`] symbols of `.dynsym` is a defined
    /// `STT_GNU_IFUNC`.
    pub ifunc: bool,
    /// `.text`: its address and bytes, when they are in the file.
    pub text: Option<(u64, &'a [u8])>,
}

impl<'a> ObjectParts<'a> {
    /// The parts of the ELF object `bytes`.
    pub fn parse(bytes: &'a [u8], name: &str) -> Result<ObjectParts<'a>, ElfError> {
        use goblin::elf::program_header::{PT_INTERP, PT_NOTE};
        use goblin::elf::section_header::{SHT_DYNSYM, SHT_NOBITS};
        let layout = Layout::parse(bytes, name)?;
        let range = |off: u64, size: u64| -> Option<&'a [u8]> {
            let start = usize::try_from(off).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            bytes.get(start..end)
        };
        let interp = layout
            .phdrs
            .iter()
            .find(|p| p.p_type == PT_INTERP)
            .and_then(|p| range(p.p_offset, p.p_filesz))
            .and_then(|b| {
                let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
                (b.len() <= MAX_NAME).then_some(b)
            })
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned);
        let notes = layout
            .phdrs
            .iter()
            .filter(|p| p.p_type == PT_NOTE)
            .flat_map(|p| {
                let offset = p.p_offset as usize;
                goblin::elf::note::NoteDataIterator {
                    data: bytes,
                    offset,
                    size: offset.saturating_add(p.p_filesz as usize),
                    ctx: (p.p_align as usize, layout.ctx),
                }
            })
            .take(MAX_NOTES)
            .flatten()
            .collect();
        let ifunc = layout
            .shdrs
            .iter()
            .find(|s| s.sh_type == SHT_DYNSYM)
            .and_then(|s| {
                let entry = match layout.ctx.container {
                    Container::Big => goblin::elf::sym::sym64::SIZEOF_SYM,
                    Container::Little => goblin::elf::sym::sym32::SIZEOF_SYM,
                };
                let count = (s.sh_size as usize / entry).min(MAX_DYNSYMS);
                goblin::elf::Symtab::parse(bytes, s.sh_offset as usize, count, layout.ctx).ok()
            })
            .is_some_and(|syms| {
                syms.iter()
                    .any(|s| s.st_type() == goblin::elf::sym::STT_GNU_IFUNC && s.st_shndx != 0)
            });
        let section_names = layout
            .shdrs
            .get(usize::from(layout.header.e_shstrndx))
            .and_then(|s| range(s.sh_offset, s.sh_size))
            .unwrap_or_default();
        let text = layout
            .shdrs
            .iter()
            .find(|s| {
                section_names
                    .get(s.sh_name..)
                    .is_some_and(|n| n.starts_with(b".text\0"))
            })
            .filter(|s| s.sh_type != SHT_NOBITS)
            .and_then(|s| Some((s.sh_addr, range(s.sh_offset, s.sh_size)?)));
        Ok(ObjectParts {
            e_type: layout.header.e_type,
            interp,
            notes,
            ifunc,
            text,
        })
    }
}

/// `DT_NEEDED` names in order, each once, at most [`MAX_NEEDED`] entries.
fn needed_libraries(dynamic: &Dynamic, names: &mut Names<'_>) -> Result<Vec<String>, ElfError> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let entries = dynamic.dyns.iter().filter(|d| d.d_tag == DT_NEEDED);
    for (i, d) in entries.enumerate() {
        if i >= MAX_NEEDED {
            return Err(ElfError::OverBudget {
                path: names.path.to_owned(),
                what: "DT_NEEDED entries",
                limit: MAX_NEEDED as u64,
            });
        }
        if let Some(n) = names.get(d.d_val as usize)? {
            if seen.insert(n.clone()) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The versions an object defines: the first auxiliary record of each
/// definition names it (the rest name its parents).
fn version_defs(
    bytes: &[u8],
    layout: &Layout,
    names: &mut Names<'_>,
    count: &mut Counter<'_>,
) -> Result<BTreeSet<String>, ElfError> {
    let mut out = BTreeSet::new();
    let section = VerdefSection::parse(bytes, &layout.shdrs, layout.ctx)
        .map_err(|e| not_elf(names.path, e))?;
    let Some(section) = section else {
        return Ok(out);
    };
    for def in section.iter() {
        count.tick()?;
        if let Some(aux) = def.iter().next() {
            count.tick()?;
            if let Some(n) = names.get(aux.vda_name)? {
                out.insert(n);
            }
        }
    }
    Ok(out)
}

/// The versions an object needs, per library, sorted and deduplicated.
fn version_needs(
    bytes: &[u8],
    layout: &Layout,
    names: &mut Names<'_>,
    count: &mut Counter<'_>,
) -> Result<Vec<(String, String)>, ElfError> {
    let mut out = BTreeSet::new();
    let section = VerneedSection::parse(bytes, &layout.shdrs, layout.ctx)
        .map_err(|e| not_elf(names.path, e))?;
    let Some(section) = section else {
        return Ok(Vec::new());
    };
    for need in section.iter() {
        count.tick()?;
        let lib = names.get(need.vn_file)?.unwrap_or_else(|| "?".to_owned());
        for aux in need.iter() {
            count.tick()?;
            if let Some(v) = names.get(aux.vna_name)? {
                // Each pair owns a copy of the library's name.
                names.charge(lib.len())?;
                out.insert((lib.clone(), v));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// A file read piece by piece into a zeroed buffer of its size.
struct Sparse<'a> {
    f: &'a std::fs::File,
    buf: Vec<u8>,
    read: u64,
    name: &'a str,
}

impl Sparse<'_> {
    /// Reads `size` bytes at `off`, clamped to the file (what lies outside
    /// it the parse refuses by itself), within [`MAX_SPARSE_BYTES`].
    fn fill(&mut self, off: u64, size: u64) -> Result<(), ElfError> {
        use std::os::unix::fs::FileExt;
        let len = self.buf.len() as u64;
        let start = off.min(len);
        let end = off.saturating_add(size).min(len);
        if start >= end {
            return Ok(());
        }
        self.read += end - start;
        if self.read > MAX_SPARSE_BYTES {
            return Err(ElfError::OverBudget {
                path: self.name.to_owned(),
                what: "bytes of headers, dynamic section, strings and version sections",
                limit: MAX_SPARSE_BYTES,
            });
        }
        self.f
            .read_exact_at(&mut self.buf[start as usize..end as usize], start)
            .map_err(|source| ElfError::Read {
                path: self.name.to_owned(),
                source,
            })
    }
}

/// The review's hostile inputs, shared with the integration tests and
/// (feature `testutil`) `hpcc-image`'s.
#[cfg(any(test, feature = "testutil"))]
#[path = "../tests/crafted/mod.rs"]
pub mod crafted;

#[cfg(test)]
mod tests {
    use super::crafted::{crafted_elf, verneed_bomb};
    use super::*;
    use std::time::Instant;

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
            assert!(info.needed.iter().any(|n| n.starts_with("ld-linux")));
        }
    }

    #[test]
    fn rejects_non_elf() {
        let e = ElfInfo::parse(b"#!/bin/sh\necho hi\n", "script").unwrap_err();
        assert!(e.to_string().contains("script"));
        let f = std::fs::File::open("/etc/hostname").unwrap();
        assert!(ElfInfo::read_sparse(&f, "hostname").is_err());
    }

    #[test]
    fn crafted_object_parses_within_budget() {
        // A small honest one: 2 x 3 records, one distinct need.
        let b = verneed_bomb(2, 3);
        let info = ElfInfo::parse(&b, "small.so").unwrap();
        assert_eq!(info.soname.as_deref(), Some("libbomb.so.1"));
        assert_eq!(info.needed, ["libc.so.6"]);
        assert_eq!(
            info.version_needs,
            [("libc.so.6".to_string(), "GLIBC_2.2.5".to_string())]
        );
        assert_eq!(info.max_glibc_needed().unwrap().to_string(), "2.2.5");
    }

    #[test]
    fn verneed_bomb_is_refused_fast_and_small() {
        let b = verneed_bomb(4096, 65_535);
        assert!(b.len() > 1 << 20 && b.len() < 1200 << 10, "{}", b.len());
        let t = Instant::now();
        let e = ElfInfo::parse(&b, "bomb.so").unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(
                e,
                ElfError::OverBudget {
                    what: "symbol version records",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("4096"), "{e}");
        // 4097 records are read before the refusal, whatever the file
        // claims. Debug builds (what `cargo test` runs) are 10-30 times
        // slower than release here; the figure asked for is 100 ms in
        // release, so 1 s is that bound with the debug margin.
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        // The same through the sparse reader, from a file.
        let dir = crate::rootfs::tests::TempDir::new("elfbomb");
        let p = dir.0.join("libbomb.so.1");
        std::fs::write(&p, &b).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let e = ElfInfo::read_sparse(&f, "bomb.so").unwrap_err();
        assert!(matches!(e, ElfError::OverBudget { .. }), "{e}");
    }

    #[test]
    fn names_and_needed_budgets() {
        // Duplicate DT_NEEDED entries are kept once; too many are refused.
        let info = ElfInfo::parse(&crafted_elf(MAX_NEEDED, 1, 1), "dups.so").unwrap();
        assert_eq!(info.needed, ["libc.so.6"]);
        let e = ElfInfo::parse(&crafted_elf(MAX_NEEDED + 1, 1, 1), "many.so").unwrap_err();
        assert!(
            matches!(
                e,
                ElfError::OverBudget {
                    what: "DT_NEEDED entries",
                    ..
                }
            ),
            "{e}"
        );
        // Names: an over-long one is ignored, copies count against the
        // byte budget.
        let long = vec![b'x'; MAX_NAME + 10];
        let mut names = Names {
            table: &long,
            left: 10,
            path: "t",
        };
        assert_eq!(names.get(0).unwrap(), None);
        names.table = b"abcdef\0";
        assert_eq!(names.get(0).unwrap().as_deref(), Some("abcdef"));
        let e = names.get(0).unwrap_err();
        assert!(e.to_string().contains("bytes of names"), "{e}");
        // A corrupt byte anywhere is an error or a result, not a panic.
        let mut b = crafted_elf(2, 2, 2);
        for i in 0..b.len() {
            for x in [0x01, 0x80, 0xff] {
                b[i] ^= x;
                let _ = ElfInfo::parse(&b, "fuzz");
                b[i] ^= x;
            }
        }
    }

    #[test]
    fn sparse_read_equals_full_read_on_every_host_library() {
        // Every shared library of this Debian host: the sparse reader must
        // see exactly what a full read sees, and none is over a budget.
        let mut n = 0;
        for e in std::fs::read_dir("/usr/lib/x86_64-linux-gnu").unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains(".so.") || p.is_symlink() || !p.is_file() {
                continue;
            }
            let full = match ElfInfo::read(&p) {
                Ok(i) => i,
                Err(ElfError::NotElf { .. }) => continue,
                Err(e) => panic!("{e}"),
            };
            let f = std::fs::File::open(&p).unwrap();
            let sparse = ElfInfo::read_sparse(&f, &p.display().to_string()).unwrap();
            assert_eq!(sparse, full, "{}", p.display());
            n += 1;
        }
        assert!(n > 100, "only {n} libraries compared");
    }
}
