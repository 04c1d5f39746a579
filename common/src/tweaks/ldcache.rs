//! glibc's linker cache (`/etc/ld.so.cache`): parsed from bytes, and
//! written.
//!
//! The same parser reads the host's cache (to find the dependencies of host
//! libraries) and the image's (to find the libraries a tweak replaces). The
//! image's file is hostile, so every read has a budget: the file is at most
//! [`MAX_CACHE_BYTES`], it holds at most [`MAX_CACHE_ENTRIES`] entries, a
//! string at most 4096 bytes, and parsing keeps one copy of the string table
//! plus two offsets per entry. Strings are never copied per entry: many
//! entries may share one string (a 1 MiB file can name one 4 KiB path forty
//! thousand times), and [`LdCacheEntry`] borrows it. Every offset is
//! bounds-checked and a malformed file is an error, never a panic. Nothing
//! here runs `ldconfig -p`: reading the file is enough and does not depend on
//! which `ldconfig` binary is around.
//!
//! Formats read: the "new" format (`glibc-ld.so.cache1.1`, the only one glibc
//! writes since 2.32), the old `ld.so-1.7.0` format, and the old format
//! followed by a new one (glibc's "compat" layout), where the new part wins.
//!
//! [`write_cache`] writes the new format, so hpcc can give a container a
//! linker cache without running `ldconfig` (a root process chrooted into a
//! hostile rootfs) at launch: see [`merge`] for what goes in it.

use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest cache accepted, read or written. Real caches are well under 1 MiB.
pub const MAX_CACHE_BYTES: u64 = 8 << 20;
/// Most entries accepted, read or written. Debian's cache with every
/// package of this project installed has about 600.
pub const MAX_CACHE_ENTRIES: usize = 65_536;
/// Longest string accepted in the string table (a path: `PATH_MAX`).
pub const MAX_STRING: usize = 4096;

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache";
const NEW_VERSION: &[u8] = b"1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;

/// `cache_file_new_flags_endian_*` of glibc's `dl-cache.h`: the byte the
/// loader compares with its own byte order (0 = unknown is accepted too).
const ENDIAN_CURRENT: u8 = if cfg!(target_endian = "little") { 2 } else { 3 };

/// `FLAG_ELF_LIBC6`: an ELF library for glibc (the only type we use).
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// Why a cache could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdCacheError {
    /// Neither magic string at the start.
    #[error("not a glibc linker cache (unknown magic)")]
    BadMagic,
    /// Over [`MAX_CACHE_BYTES`].
    #[error("linker cache is larger than {MAX_CACHE_BYTES} bytes")]
    TooLarge,
    /// Over [`MAX_CACHE_ENTRIES`].
    #[error("linker cache has {found} entries, more than the limit of {MAX_CACHE_ENTRIES}")]
    TooManyEntries {
        /// How many the file declares (or the caller gave).
        found: u64,
    },
    /// A count or offset points outside the file.
    #[error("linker cache is truncated or corrupt: {0}")]
    Corrupt(&'static str),
    /// An entry that cannot be written.
    #[error("cannot write the linker cache entry {soname:?}: {reason}")]
    BadEntry {
        /// The entry's soname (as given, lossily decoded).
        soname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One cache entry, `soname => path`, borrowed from its [`LdCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LdCacheEntry<'a> {
    /// The name the loader looks up (`libmpich.so.12`).
    pub soname: &'a str,
    /// The path it maps to (as written in the cache: a path in the root the
    /// cache was built for).
    pub path: &'a Path,
    /// glibc's entry flags (type and architecture bits).
    pub flags: i32,
    /// Non-zero for hwcaps entries (`glibc-hwcaps` subdirectories, legacy
    /// hwcap bits).
    pub hwcap: u64,
}

/// A string of the table: start and length in [`LdCache::strings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// An entry as parsed: offsets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEntry {
    flags: i32,
    key: Span,
    value: Span,
    hwcap: u64,
}

/// A parsed linker cache: the string table (one bounded copy, validated
/// UTF-8) and the entries as offsets into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdCache {
    strings: String,
    entries: Vec<RawEntry>,
}

/// The architecture bits glibc gives libraries of the architecture hpcc was
/// built for, so 32-bit (multiarch i386) entries are never picked for a
/// 64-bit host library.
pub fn native_flags() -> i32 {
    let arch = if cfg!(target_arch = "x86_64") {
        0x0300
    } else if cfg!(target_arch = "aarch64") {
        0x0a00
    } else if cfg!(target_arch = "powerpc64") {
        0x0500
    } else if cfg!(target_arch = "s390x") {
        0x0400
    } else if cfg!(all(target_arch = "riscv64", target_feature = "d")) {
        0x1000
    } else {
        0
    };
    FLAG_ELF_LIBC6 | arch
}

/// The flags `ldconfig` gives an ELF object of this machine and class
/// (`e_machine`, `ELFCLASS64`), as glibc's `readelflib.c` files compute them
/// (`FLAG_*` of `sysdeps/generic/ldconfig.h`). `None` where the flags depend
/// on more than these two (32-bit ARM: hard or soft float in `e_flags`; MIPS:
/// ABI and NaN encoding) or the machine is unknown: such an object is not
/// put in a cache hpcc writes. RISC-V is assumed to use the double-float
/// ABI, the only one Linux distributions ship (`lp64d`).
pub fn flags_for(machine: u16, is_64: bool) -> Option<i32> {
    const EM_SPARC: u16 = 2;
    const EM_386: u16 = 3;
    const EM_SPARC32PLUS: u16 = 18;
    const EM_PPC: u16 = 20;
    const EM_PPC64: u16 = 21;
    const EM_S390: u16 = 22;
    const EM_SPARCV9: u16 = 43;
    const EM_IA_64: u16 = 50;
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    const EM_RISCV: u16 = 243;
    let arch = match (machine, is_64) {
        (EM_X86_64, true) => 0x0300,  // FLAG_X8664_LIB64
        (EM_X86_64, false) => 0x0800, // FLAG_X8664_LIBX32
        (EM_386, false) => 0,
        (EM_AARCH64, true) => 0x0a00, // FLAG_AARCH64_LIB64
        (EM_PPC64, true) => 0x0500,   // FLAG_POWERPC_LIB64
        (EM_PPC, false) => 0,
        (EM_S390, true) => 0x0400, // FLAG_S390_LIB64
        (EM_S390, false) => 0,
        (EM_SPARCV9, true) => 0x0100, // FLAG_SPARC_LIB64
        (EM_SPARC | EM_SPARC32PLUS, false) => 0,
        (EM_IA_64, true) => 0x0200, // FLAG_IA64_LIB64
        (EM_RISCV, _) => 0x1000,    // FLAG_RISCV_FLOAT_ABI_DOUBLE
        _ => return None,
    };
    Some(FLAG_ELF_LIBC6 | arch)
}

/// glibc's `_dl_cache_libcmp`, byte for byte: digit runs compare as
/// numbers (`libfoo.so.10` > `libfoo.so.9`), a digit run is greater than
/// any other character, other characters compare as C `char` (signed on
/// x86, unsigned on AArch64, as the loader of this architecture does), and
/// the end of a slice (or a NUL) ends the string. The numbers use C `int`
/// arithmetic, wrapping as glibc's code does in practice; [`write_cache`]
/// refuses names whose numbers would wrap, since no order is consistent for
/// them.
pub fn libcmp(p1: &[u8], p2: &[u8]) -> i32 {
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let ch = |c: u8| i32::from(c as std::ffi::c_char);
    let (mut i, mut j) = (0, 0);
    while at(p1, i) != 0 {
        let (c1, c2) = (at(p1, i), at(p2, j));
        if c1.is_ascii_digit() {
            if !c2.is_ascii_digit() {
                return 1;
            }
            let (v1, v2) = (digit_run(p1, &mut i), digit_run(p2, &mut j));
            if v1 != v2 {
                return v1.wrapping_sub(v2);
            }
        } else if c2.is_ascii_digit() {
            return -1;
        } else if c1 != c2 {
            return ch(c1) - ch(c2);
        } else {
            i += 1;
            j += 1;
        }
    }
    -ch(at(p2, j))
}

/// The value of the digit run at `s[*i..]` in C `int` arithmetic; moves `i`
/// past it.
fn digit_run(s: &[u8], i: &mut usize) -> i32 {
    let mut v: i32 = 0;
    while let Some(c) = s.get(*i).filter(|c| c.is_ascii_digit()) {
        v = v.wrapping_mul(10).wrapping_add(i32::from(c - b'0'));
        *i += 1;
    }
    v
}

/// Whether every digit run of `s` fits a C `int`: then [`libcmp`] is a
/// consistent order (it compares runs and characters exactly).
fn digit_runs_fit(s: &[u8]) -> bool {
    let mut v: Option<i32> = None;
    for &c in s {
        if c.is_ascii_digit() {
            let d = i32::from(c - b'0');
            match v
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|x| x.checked_add(d))
            {
                Some(x) => v = Some(x),
                None => return false,
            }
        } else {
            v = None;
        }
    }
    true
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes(s.try_into().ok()?))
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    u32_at(b, off).map(|v| v as i32)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_ne_bytes(s.try_into().ok()?))
}

/// An entry as read, before its strings are located: offsets relative to
/// the start of the string table.
struct Unresolved {
    flags: i32,
    key: u32,
    value: u32,
    hwcap: u64,
}

/// Checks a declared entry count against the budget and the file: returns
/// the end of the entry array.
fn entries_end(
    nlibs: u32,
    header: usize,
    entry: usize,
    len: usize,
    what: &'static str,
) -> Result<usize, LdCacheError> {
    if nlibs as usize > MAX_CACHE_ENTRIES {
        return Err(LdCacheError::TooManyEntries {
            found: u64::from(nlibs),
        });
    }
    (nlibs as usize)
        .checked_mul(entry)
        .and_then(|n| n.checked_add(header))
        .filter(|&e| e <= len)
        .ok_or(LdCacheError::Corrupt(what))
}

impl LdCache {
    /// Parses cache bytes (already bounded by the caller's read).
    pub fn parse(bytes: &[u8]) -> Result<LdCache, LdCacheError> {
        if bytes.len() as u64 > MAX_CACHE_BYTES {
            return Err(LdCacheError::TooLarge);
        }
        if bytes.starts_with(NEW_MAGIC) {
            return Self::parse_new(bytes);
        }
        if !bytes.starts_with(OLD_MAGIC) {
            return Err(LdCacheError::BadMagic);
        }
        let nlibs = u32_at(bytes, 12).ok_or(LdCacheError::Corrupt("old header"))?;
        let end = entries_end(nlibs, OLD_HEADER, OLD_ENTRY, bytes.len(), "old entry count")?;
        // The compat layout puts a new-format cache right after the old
        // entries, aligned to 8; the loader prefers it, so do we.
        let aligned = (end + 7) & !7;
        if let Some(new) = bytes.get(aligned..).filter(|r| r.starts_with(NEW_MAGIC)) {
            return Self::parse_new(new);
        }
        // Old format: strings are relative to the end of the entries, and
        // run to the end of the file.
        let mut raw = Vec::with_capacity(nlibs as usize);
        for i in 0..nlibs as usize {
            let off = OLD_HEADER + i * OLD_ENTRY;
            let bad = LdCacheError::Corrupt("old entry");
            raw.push(Unresolved {
                flags: i32_at(bytes, off).ok_or(bad.clone())?,
                key: u32_at(bytes, off + 4).ok_or(bad.clone())?,
                value: u32_at(bytes, off + 8).ok_or(bad)?,
                hwcap: 0,
            });
        }
        Self::resolve(&bytes[end..], raw)
    }

    /// The new format, `b` starting at its header. String offsets are
    /// relative to the header; the table follows the entries and is
    /// `len_strings` long (glibc puts its extension directory, binary data,
    /// after it).
    fn parse_new(b: &[u8]) -> Result<LdCache, LdCacheError> {
        if b.len() < NEW_HEADER || &b[NEW_MAGIC.len()..NEW_MAGIC.len() + 3] != NEW_VERSION {
            return Err(LdCacheError::Corrupt("new header"));
        }
        let nlibs = u32_at(b, 20).ok_or(LdCacheError::Corrupt("new header"))?;
        let len_strings = u32_at(b, 24).ok_or(LdCacheError::Corrupt("new header"))?;
        let end = entries_end(nlibs, NEW_HEADER, NEW_ENTRY, b.len(), "new entry count")?;
        let table = end
            .checked_add(len_strings as usize)
            .and_then(|t| b.get(end..t))
            .ok_or(LdCacheError::Corrupt("string table size"))?;
        let mut raw = Vec::with_capacity(nlibs as usize);
        for i in 0..nlibs as usize {
            let off = NEW_HEADER + i * NEW_ENTRY;
            let bad = LdCacheError::Corrupt("new entry");
            let rel = |o: u32| {
                o.checked_sub(end as u32).ok_or(LdCacheError::Corrupt(
                    "string offset before the string table",
                ))
            };
            raw.push(Unresolved {
                flags: i32_at(b, off).ok_or(bad.clone())?,
                key: rel(u32_at(b, off + 4).ok_or(bad.clone())?)?,
                value: rel(u32_at(b, off + 8).ok_or(bad.clone())?)?,
                hwcap: u64_at(b, off + 16).ok_or(bad)?,
            });
        }
        Self::resolve(table, raw)
    }

    /// Locates every entry's strings in `table` in one pass over it: the
    /// distinct offsets, sorted, cut the table into segments; a string ends
    /// at the first NUL of its segment or, failing that, where the string of
    /// the next offset ends. Linear in the table and `n log n` in the
    /// entries, however many entries share (or overlap) strings.
    fn resolve(table: &[u8], raw: Vec<Unresolved>) -> Result<LdCache, LdCacheError> {
        let strings = std::str::from_utf8(table)
            .map_err(|_| LdCacheError::Corrupt("string table is not UTF-8"))?;
        let mut starts: Vec<u32> = raw.iter().flat_map(|e| [e.key, e.value]).collect();
        starts.sort_unstable();
        starts.dedup();
        let mut ends: Vec<Option<u32>> = vec![None; starts.len()];
        for i in (0..starts.len()).rev() {
            let seg_end = starts.get(i + 1).map_or(table.len(), |&n| n as usize);
            let seg = table
                .get(starts[i] as usize..seg_end)
                .ok_or(LdCacheError::Corrupt("string offset past the string table"))?;
            ends[i] = match seg.iter().position(|&c| c == 0) {
                Some(p) => Some(starts[i] + p as u32),
                None => ends.get(i + 1).copied().flatten(),
            };
        }
        let span = |o: u32| -> Result<Span, LdCacheError> {
            let i = starts
                .binary_search(&o)
                .map_err(|_| LdCacheError::Corrupt("string offset"))?;
            let end = ends[i].ok_or(LdCacheError::Corrupt("unterminated string"))?;
            let len = end - o;
            if len as usize > MAX_STRING {
                return Err(LdCacheError::Corrupt("string longer than 4096 bytes"));
            }
            if !strings.is_char_boundary(o as usize) {
                return Err(LdCacheError::Corrupt("string starts inside a character"));
            }
            Ok(Span { start: o, len })
        };
        let mut entries = Vec::with_capacity(raw.len());
        for e in &raw {
            entries.push(RawEntry {
                flags: e.flags,
                key: span(e.key)?,
                value: span(e.value)?,
                hwcap: e.hwcap,
            });
        }
        Ok(LdCache {
            strings: strings.to_owned(),
            entries,
        })
    }

    fn str(&self, s: Span) -> &str {
        // Spans were checked against this table when parsed: `get` never
        // fails, and an empty string would only hide a bug, not crash.
        let start = s.start as usize;
        self.strings
            .get(start..start + s.len as usize)
            .unwrap_or("")
    }

    fn view(&self, e: &RawEntry) -> LdCacheEntry<'_> {
        LdCacheEntry {
            soname: self.str(e.key),
            path: Path::new(self.str(e.value)),
            flags: e.flags,
            hwcap: e.hwcap,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of strings kept (the string table, once): what parsing costs
    /// beyond 32 bytes per entry.
    pub fn string_bytes(&self) -> usize {
        self.strings.len()
    }

    /// Entries in file order (glibc sorts them by soname, then priority).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = LdCacheEntry<'_>> + '_ {
        self.entries.iter().map(|e| self.view(e))
    }

    /// Entries for `soname` of the given flags (see [`native_flags`]), in
    /// file order, baseline entries (no hwcaps) first. Lazy: a caller that
    /// wants a few stops early; each entry costs a length comparison unless
    /// its name has the same length.
    pub fn lookup<'a>(
        &'a self,
        soname: &'a str,
        flags: i32,
    ) -> impl Iterator<Item = LdCacheEntry<'a>> + 'a {
        let matching = move |baseline: bool| {
            self.entries
                .iter()
                .filter(move |e| {
                    (e.hwcap == 0) == baseline
                        && e.key.len as usize == soname.len()
                        && matches_flags(e.flags, flags)
                        && self.str(e.key) == soname
                })
                .map(move |e| self.view(e))
        };
        matching(true).chain(matching(false))
    }

    /// The baseline path for `soname`, as the loader would use it on a CPU
    /// without hwcaps subdirectories.
    pub fn find(&self, soname: &str, flags: i32) -> Option<PathBuf> {
        self.lookup(soname, flags).next().map(|e| e.path.to_owned())
    }
}

fn matches_flags(entry: i32, wanted: i32) -> bool {
    entry & FLAG_TYPE_MASK == wanted & FLAG_TYPE_MASK
        && entry & FLAG_REQUIRED_MASK == wanted & FLAG_REQUIRED_MASK
}

/// An entry to write: owned, for [`write_cache`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheEntry {
    /// The name the loader looks up.
    pub soname: String,
    /// The file it loads for it, as seen in the container.
    pub path: PathBuf,
    /// glibc's flags for the object (see [`flags_for`]).
    pub flags: i32,
}

impl From<LdCacheEntry<'_>> for CacheEntry {
    fn from(e: LdCacheEntry<'_>) -> CacheEntry {
        CacheEntry {
            soname: e.soname.to_owned(),
            path: e.path.to_owned(),
            flags: e.flags,
        }
    }
}

/// Checks one entry: what the format and [`LdCache::parse`] can carry.
fn check_entry(e: &CacheEntry) -> Result<(), LdCacheError> {
    let bad = |reason| {
        Err(LdCacheError::BadEntry {
            soname: e.soname.clone(),
            reason,
        })
    };
    let path = e.path.as_os_str().as_bytes();
    if e.soname.is_empty() || path.is_empty() {
        return bad("empty soname or path");
    }
    if e.soname.len() > MAX_STRING || path.len() > MAX_STRING {
        return bad("soname or path longer than 4096 bytes");
    }
    if e.soname.contains('\0') || path.contains(&0) {
        return bad("NUL byte in the soname or path");
    }
    if std::str::from_utf8(path).is_err() {
        return bad("path is not UTF-8");
    }
    if !digit_runs_fit(e.soname.as_bytes()) {
        return bad("a number in the soname is too large for glibc's comparison");
    }
    Ok(())
}

/// A string table that stores each distinct string once.
struct StringTable<'a> {
    bytes: Vec<u8>,
    offsets: HashMap<&'a [u8], u32>,
    /// File offset of the table's first byte.
    base: usize,
}

impl<'a> StringTable<'a> {
    fn add(&mut self, s: &'a [u8]) -> Result<u32, LdCacheError> {
        if let Some(&o) = self.offsets.get(s) {
            return Ok(o);
        }
        let o = self.base + self.bytes.len();
        if (o + s.len() + 1) as u64 > MAX_CACHE_BYTES {
            return Err(LdCacheError::TooLarge);
        }
        self.bytes.extend_from_slice(s);
        self.bytes.push(0);
        self.offsets.insert(s, o as u32);
        Ok(o as u32)
    }
}

/// Writes a linker cache in glibc's new format (`glibc-ld.so.cache1.1`,
/// native byte order) that glibc's loader reads as if `ldconfig` had
/// written it.
///
/// The loader binary-searches the entries, so they are sorted as glibc
/// sorts them: descending by [`libcmp`] of the soname. Entries with equal
/// sonames keep the caller's order: the loader walks back to the first of
/// them and takes the first whose flags it accepts, so an earlier entry wins
/// (`ldconfig` orders those by flags; hpcc orders them by priority, see
/// [`merge`]). No hwcaps extension is written (`extension_offset` 0, which
/// the loader reads as "no extensions"), every `osversion` and `hwcap` is 0,
/// and identical strings are stored once. At most [`MAX_CACHE_ENTRIES`]
/// entries and [`MAX_CACHE_BYTES`] bytes.
pub fn write_cache(entries: &[CacheEntry]) -> Result<Vec<u8>, LdCacheError> {
    if entries.len() > MAX_CACHE_ENTRIES {
        return Err(LdCacheError::TooManyEntries {
            found: entries.len() as u64,
        });
    }
    for e in entries {
        check_entry(e)?;
    }
    let mut sorted: Vec<&CacheEntry> = entries.iter().collect();
    // A stable sort: equal sonames keep the caller's order. The comparison
    // is a total order for names that passed `check_entry`.
    sorted.sort_by(|a, b| libcmp(b.soname.as_bytes(), a.soname.as_bytes()).cmp(&0));
    let base = NEW_HEADER + sorted.len() * NEW_ENTRY;
    let mut table = StringTable {
        bytes: Vec::new(),
        offsets: HashMap::new(),
        base,
    };
    let mut offs = Vec::with_capacity(sorted.len());
    for e in &sorted {
        let key = table.add(e.soname.as_bytes())?;
        let value = table.add(e.path.as_os_str().as_bytes())?;
        offs.push((key, value));
    }
    let mut out = Vec::with_capacity(base + table.bytes.len());
    out.extend_from_slice(NEW_MAGIC);
    out.extend_from_slice(NEW_VERSION);
    out.extend_from_slice(&(sorted.len() as u32).to_ne_bytes());
    out.extend_from_slice(&(table.bytes.len() as u32).to_ne_bytes());
    out.extend_from_slice(&[ENDIAN_CURRENT, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_ne_bytes()); // extension_offset: none
    out.extend_from_slice(&[0; 12]);
    for (e, (key, value)) in sorted.iter().zip(offs) {
        out.extend_from_slice(&e.flags.to_ne_bytes());
        out.extend_from_slice(&key.to_ne_bytes());
        out.extend_from_slice(&value.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // osversion
        out.extend_from_slice(&0u64.to_ne_bytes()); // hwcap
    }
    out.extend_from_slice(&table.bytes);
    Ok(out)
}

/// The entries of a container's cache: `injected` first (hpcc's libraries
/// win over the image's for the same soname), then the image's own entries
/// in their order, without exact duplicates.
///
/// The image's hwcaps entries (`hwcap != 0`) are left out: those of
/// `glibc-hwcaps` subdirectories index the extension section that
/// [`write_cache`] does not write (an index without it would point at
/// nothing), and legacy hwcap entries are only ever alternatives of a
/// baseline entry the cache also has. A program whose image has an
/// optimised copy in `glibc-hwcaps/x86-64-v3` then loads the baseline copy:
/// slower, never wrong; and the loader still searches the hwcaps
/// subdirectories of the directories on `LD_LIBRARY_PATH` itself.
///
/// Bounded: at most [`MAX_CACHE_ENTRIES`] entries, and at most
/// [`MAX_CACHE_BYTES`] bytes of the image's strings are looked at (the
/// image's entries may all share one long string; each copy here is owned).
/// What does not fit is left out, with a warning.
pub fn merge(injected: &[CacheEntry], image: Option<&LdCache>) -> Vec<CacheEntry> {
    let mut seen: HashSet<(&[u8], &OsStr, i32)> = HashSet::new();
    let mut out = Vec::new();
    for e in injected {
        if seen.insert((e.soname.as_bytes(), e.path.as_os_str(), e.flags)) {
            out.push(e.clone());
        }
    }
    let Some(cache) = image else {
        return out;
    };
    let mut budget = MAX_CACHE_BYTES as usize;
    let mut left_out = 0usize;
    for e in cache.entries().filter(|e| e.hwcap == 0) {
        let cost = e.soname.len() + e.path.as_os_str().len();
        if out.len() >= MAX_CACHE_ENTRIES || cost > budget {
            left_out += 1;
            continue;
        }
        budget -= cost;
        if seen.insert((e.soname.as_bytes(), e.path.as_os_str(), e.flags)) {
            out.push(e.into());
        }
    }
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "image linker cache entries left out of the container's cache (over {MAX_CACHE_ENTRIES} entries or {MAX_CACHE_BYTES} bytes)"
        );
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::elf::crafted::shared_string_cache;
    use std::time::{Duration, Instant};

    /// Builds a new-format cache, as `ldconfig` would write it.
    pub(crate) fn build_new(entries: &[(&str, &str, i32)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let strings_base = NEW_HEADER + entries.len() * NEW_ENTRY;
        let mut offs = Vec::new();
        for (k, v, _) in entries {
            let ko = strings_base + strings.len();
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            let vo = strings_base + strings.len();
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
            offs.push((ko as u32, vo as u32));
        }
        let mut b = Vec::new();
        b.extend_from_slice(NEW_MAGIC);
        b.extend_from_slice(NEW_VERSION);
        b.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        b.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        b.extend_from_slice(&[2, 0, 0, 0]);
        b.extend_from_slice(&[0; 16]);
        for ((_, _, flags), (ko, vo)) in entries.iter().zip(offs) {
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&ko.to_ne_bytes());
            b.extend_from_slice(&vo.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&0u64.to_ne_bytes());
        }
        b.extend_from_slice(&strings);
        b
    }

    /// How long `f` takes, its result.
    fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    }

    /// A guard against quadratic work, not a speed target (those are in
    /// BENCHMARKS.md): a quadratic parse of these inputs takes minutes.
    /// Debug builds are 10-30 times slower than release here, and CI's two
    /// cores may be shared with a build; 1 s failed once under such load
    /// (1.3 s), so the bound is 5 s.
    pub(crate) const DEBUG_BOUND: Duration = Duration::from_secs(5);

    #[test]
    fn parses_the_real_host_cache() {
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            panic!("/etc/ld.so.cache is missing on this Debian host");
        };
        let cache = LdCache::parse(&bytes).unwrap();
        assert!(cache.len() > 10, "{}", cache.len());
        let libc = cache.find("libc.so.6", native_flags()).unwrap();
        assert!(libc.ends_with("libc.so.6"), "{}", libc.display());
        assert!(libc.exists());
        // The packages the e2e tests need are installed here.
        let mpich = cache.find("libmpich.so.12", native_flags()).unwrap();
        assert!(mpich.exists(), "{}", mpich.display());
        // One copy of the strings, not one per entry.
        assert!(cache.string_bytes() < bytes.len());
    }

    #[test]
    fn new_format_round_trip_and_arch_filter() {
        let b = build_new(&[
            ("libfoo.so.1", "/usr/lib/i386-linux-gnu/libfoo.so.1", 0x0003),
            (
                "libfoo.so.1",
                "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
                0x0303,
            ),
            ("libbar.so.2", "/opt/lib/libbar.so.2", 0x0a03),
        ]);
        let c = LdCache::parse(&b).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.find("libfoo.so.1", 0x0303).unwrap(),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libfoo.so.1")
        );
        assert_eq!(
            c.find("libfoo.so.1", 0x0003).unwrap(),
            PathBuf::from("/usr/lib/i386-linux-gnu/libfoo.so.1")
        );
        assert!(c.find("libbar.so.2", 0x0303).is_none());
        assert!(c.find("libnone.so.1", 0x0303).is_none());
        assert!(c.find("libfoo.so", 0x0303).is_none());
    }

    #[test]
    fn old_format_alone_and_compat() {
        // Old format: header, entries, then strings relative to their end.
        let mut b = Vec::new();
        b.extend_from_slice(OLD_MAGIC);
        b.push(0);
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&0x0303i32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&10u32.to_ne_bytes());
        b.extend_from_slice(b"libx.so.1\0/lib/libx.so.1\0");
        let c = LdCache::parse(&b).unwrap();
        assert_eq!(
            c.find("libx.so.1", 0x0303).unwrap(),
            PathBuf::from("/lib/libx.so.1")
        );
        // Compat (glibc's layout): the old header and entries, then,
        // aligned to 8, a whole new-format cache; the strings of both
        // follow it.
        let mut compat = b[..OLD_HEADER + OLD_ENTRY].to_vec();
        while compat.len() % 8 != 0 {
            compat.push(0);
        }
        let n = build_new(&[("libx.so.1", "/new/libx.so.1", 0x0303)]);
        compat.extend_from_slice(&n);
        let c = LdCache::parse(&compat).unwrap();
        assert_eq!(
            c.find("libx.so.1", 0x0303).unwrap(),
            PathBuf::from("/new/libx.so.1")
        );
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert_eq!(LdCache::parse(b"garbage"), Err(LdCacheError::BadMagic));
        assert!(LdCache::parse(NEW_MAGIC).is_err());
        let mut b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        // Huge entry count: refused by the budget, naming it.
        b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        let e = LdCache::parse(&b).unwrap_err();
        assert!(matches!(e, LdCacheError::TooManyEntries { .. }), "{e}");
        assert!(e.to_string().contains("65536"), "{e}");
        // A count within the budget but past the end of the file.
        b[20..24].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(LdCache::parse(&b), Err(LdCacheError::Corrupt(_))));
        // String offset past the end.
        let mut b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
        assert!(LdCache::parse(&b).is_err());
        // String offset into the header.
        let mut b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&4u32.to_ne_bytes());
        assert!(LdCache::parse(&b).is_err());
        // Unterminated string.
        let b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        assert!(LdCache::parse(&b[..b.len() - 1]).is_err());
        // A string that is not UTF-8.
        let mut b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        let n = b.len();
        b[n - 2] = 0xff;
        assert!(LdCache::parse(&b).is_err());
        // Every truncation of a valid file is handled.
        let b = build_new(&[("liba.so.1", "/a", 0x0303), ("libb.so.2", "/b", 0x0303)]);
        for n in 0..b.len() {
            let _ = LdCache::parse(&b[..n]);
        }
        // Every single-byte corruption too.
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0xa5;
            let _ = LdCache::parse(&c);
        }
        let big = vec![0u8; (MAX_CACHE_BYTES + 1) as usize];
        assert_eq!(LdCache::parse(&big), Err(LdCacheError::TooLarge));
    }

    #[test]
    fn an_over_long_string_is_refused() {
        let long = "x".repeat(MAX_STRING + 1);
        let b = build_new(&[("liba.so.1", &long, 0x0303)]);
        let e = LdCache::parse(&b).unwrap_err();
        assert!(e.to_string().contains("4096"), "{e}");
    }

    #[test]
    fn overlapping_strings_resolve_to_their_suffixes() {
        // glibc's string table merges tails: `libc.so.6` may be the end of
        // `/lib/libc.so.6`.
        let mut b = build_new(&[("libc.so.6", "/lib/libc.so.6", 0x0303)]);
        let path_off = u32_at(&b, NEW_HEADER + 8).unwrap();
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&(path_off + 5).to_ne_bytes());
        let c = LdCache::parse(&b).unwrap();
        let e = c.entries().next().unwrap();
        assert_eq!(
            (e.soname, e.path),
            ("libc.so.6", Path::new("/lib/libc.so.6"))
        );
    }

    #[test]
    fn shared_string_bombs_cost_one_copy() {
        // The review's 1 MiB file: ~43,500 entries sharing one 4 KiB
        // string cost hpcc about 700 MB when each entry owned a copy.
        let b = shared_string_cache(1 << 20, 4000, native_flags());
        let (c, took) = timed(|| LdCache::parse(&b).unwrap());
        assert!(c.len() > 43_000, "{}", c.len());
        // The memory kept: the string table once, 32 bytes an entry.
        assert!(c.string_bytes() <= 4001, "{}", c.string_bytes());
        assert!(c.entries.capacity() <= MAX_CACHE_ENTRIES);
        assert!(took < DEBUG_BOUND, "{took:?}");
        // Lookups and a full walk touch the shared string by reference.
        let (n, took) = timed(|| c.lookup(&"a".repeat(4000), native_flags()).count());
        assert_eq!(n, c.len());
        assert!(took < DEBUG_BOUND, "{took:?}");
        eprintln!(
            "1 MiB shared-string cache: {} entries, parse+lookup",
            c.len()
        );
        // The 8 MiB one declares ~349,000 entries: over the budget, and
        // refused before anything is allocated for them.
        let b = shared_string_cache(MAX_CACHE_BYTES as usize, 4000, native_flags());
        let (r, took) = timed(|| LdCache::parse(&b));
        let e = r.unwrap_err();
        assert!(matches!(e, LdCacheError::TooManyEntries { found } if found > 300_000));
        assert!(took < DEBUG_BOUND, "{took:?}");
        // At the entry budget, strings overlapping as suffixes of one
        // another (a string per offset): still one pass over the table.
        let n = MAX_CACHE_ENTRIES;
        let s = NEW_HEADER + n * NEW_ENTRY;
        let mut b = build_new(&[]);
        b[20..24].copy_from_slice(&(n as u32).to_ne_bytes());
        b[24..28].copy_from_slice(&(MAX_STRING as u32 + 1).to_ne_bytes());
        for i in 0..n {
            let off = (s + i % MAX_STRING) as u32;
            b.extend_from_slice(&native_flags().to_ne_bytes());
            b.extend_from_slice(&off.to_ne_bytes());
            b.extend_from_slice(&off.to_ne_bytes());
            b.extend_from_slice(&[0; 12]);
        }
        b.extend(std::iter::repeat_n(b'b', MAX_STRING));
        b.push(0);
        let (c, took) = timed(|| LdCache::parse(&b).unwrap());
        assert_eq!(c.len(), n);
        assert!(took < DEBUG_BOUND, "{took:?}");
    }

    #[test]
    fn libcmp_is_glibcs() {
        let cmp = |a: &str, b: &str| libcmp(a.as_bytes(), b.as_bytes()).signum();
        assert_eq!(cmp("libfoo.so.10", "libfoo.so.9"), 1);
        assert_eq!(cmp("libfoo.so.9", "libfoo.so.10"), -1);
        assert_eq!(cmp("libfoo.so.1", "libfoo.so.01"), 0);
        assert_eq!(cmp("libfoo.so", "libfoo.so.1"), -1);
        assert_eq!(cmp("libfoo.so.1", "libfoo.so"), 1);
        assert_eq!(cmp("libz.so.1", "liba.so.1"), 1);
        // A digit run is greater than any character.
        assert_eq!(cmp("lib1", "libz"), 1);
        assert_eq!(cmp("libz", "lib1"), -1);
        assert_eq!(cmp("", ""), 0);
        assert_eq!(cmp("", "a"), -1);
        assert_eq!(cmp("a", ""), 1);
        // glibc's exact values, not only signs.
        assert_eq!(libcmp(b"a", b"c"), -2);
        assert_eq!(libcmp(b"libx.so.12", b"libx.so.3"), 9);
        assert!(digit_runs_fit(b"lib.so.2147483647"));
        assert!(!digit_runs_fit(b"lib.so.2147483648"));
    }

    fn entry(soname: &str, path: &str, flags: i32) -> CacheEntry {
        CacheEntry {
            soname: soname.into(),
            path: path.into(),
            flags,
        }
    }

    #[test]
    fn written_caches_parse_back_in_glibc_order() {
        let x = native_flags();
        let given = vec![
            entry("liba.so.1", "/a/liba.so.1", x),
            entry("libz.so.1", "/z/libz.so.1", x),
            entry("libm.so.6", "/lib/libm.so.6", x),
            entry("libfoo.so.9", "/f/libfoo.so.9", x),
            entry("libfoo.so.10", "/f/libfoo.so.10", x),
            // Equal sonames: the caller's order is kept (first wins).
            entry("libdup.so.1", "/first/libdup.so.1", x),
            entry("libdup.so.1", "/second/libdup.so.1", x),
            entry("libdup.so.1", "/i386/libdup.so.1", 0x0003),
            // One string shared by two entries is stored once.
            entry("libm.so.6", "/lib/libm.so.6", 0x0003),
        ];
        let bytes = write_cache(&given).unwrap();
        assert_eq!(&bytes[..20], b"glibc-ld.so.cache1.1");
        assert_eq!(bytes[28], 2, "little-endian marker");
        assert_eq!(u32_at(&bytes, 32), Some(0), "no extension directory");
        let parsed = LdCache::parse(&bytes).unwrap();
        let back: Vec<CacheEntry> = parsed.entries().map(CacheEntry::from).collect();
        let names: Vec<&str> = back.iter().map(|e| e.soname.as_str()).collect();
        assert_eq!(
            names,
            [
                "libz.so.1",
                "libm.so.6",
                "libm.so.6",
                "libfoo.so.10",
                "libfoo.so.9",
                "libdup.so.1",
                "libdup.so.1",
                "libdup.so.1",
                "liba.so.1"
            ]
        );
        let dups: Vec<&Path> = back[5..8].iter().map(|e| e.path.as_path()).collect();
        assert_eq!(
            dups,
            [
                Path::new("/first/libdup.so.1"),
                Path::new("/second/libdup.so.1"),
                Path::new("/i386/libdup.so.1")
            ]
        );
        // Every given entry is there once.
        let mut a = given.clone();
        let mut b = back.clone();
        a.sort_by(|l, r| (&l.soname, &l.path, l.flags).cmp(&(&r.soname, &r.path, r.flags)));
        b.sort_by(|l, r| (&l.soname, &l.path, l.flags).cmp(&(&r.soname, &r.path, r.flags)));
        assert_eq!(a, b);
        assert_eq!(
            parsed.find("libdup.so.1", x).unwrap(),
            PathBuf::from("/first/libdup.so.1")
        );
        // Writing what was parsed gives the same bytes.
        assert_eq!(write_cache(&back).unwrap(), bytes);
    }

    #[test]
    fn unwritable_entries_are_errors() {
        let x = native_flags();
        for bad in [
            entry("", "/a", x),
            entry("liba.so.1", "", x),
            entry("li\0b.so.1", "/a", x),
            entry("liba.so.1", "/a\0b", x),
            entry("liba.so.99999999999", "/a", x),
            entry(&"l".repeat(MAX_STRING + 1), "/a", x),
        ] {
            let e = write_cache(std::slice::from_ref(&bad)).unwrap_err();
            assert!(matches!(e, LdCacheError::BadEntry { .. }), "{e}");
        }
        let many = vec![entry("liba.so.1", "/a", x); MAX_CACHE_ENTRIES + 1];
        assert!(matches!(
            write_cache(&many),
            Err(LdCacheError::TooManyEntries { .. })
        ));
        // Strings over the byte budget (3,000 distinct 4 KiB paths).
        let big: Vec<CacheEntry> = (0..3000)
            .map(|i| entry("liba.so.1", &format!("/{i:04}{}", "p".repeat(4000)), x))
            .collect();
        assert_eq!(write_cache(&big), Err(LdCacheError::TooLarge));
        // An empty cache is still a valid file.
        let empty = write_cache(&[]).unwrap();
        assert!(LdCache::parse(&empty).unwrap().is_empty());
    }

    #[test]
    fn merge_puts_injected_first_and_drops_hwcaps_and_duplicates() {
        let x = native_flags();
        let mut img = build_new(&[
            ("libmpi.so.12", "/usr/lib/libmpi.so.12", x),
            ("libmpi.so.12", "/usr/lib/libmpi.so.12", x),
            (
                "libfast.so.1",
                "/usr/lib/glibc-hwcaps/x86-64-v3/libfast.so.1",
                x,
            ),
            ("libfast.so.1", "/usr/lib/libfast.so.1", x),
            ("libinj.so.1", "/opt/hpcc/lib/libinj.so.1", x),
        ]);
        // Mark the third entry as a glibc-hwcaps extension entry.
        let hw = NEW_HEADER + 2 * NEW_ENTRY + 16;
        img[hw..hw + 8].copy_from_slice(&((1u64 << 62) | 1).to_ne_bytes());
        let img = LdCache::parse(&img).unwrap();
        let injected = vec![
            entry("libmpi.so.12", "/opt/hpcc/lib/libmpi.so.12", x),
            entry("libinj.so.1", "/opt/hpcc/lib/libinj.so.1", x),
        ];
        let m = merge(&injected, Some(&img));
        let got: Vec<(&str, &str)> = m
            .iter()
            .map(|e| (e.soname.as_str(), e.path.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("libmpi.so.12", "/opt/hpcc/lib/libmpi.so.12"),
                ("libinj.so.1", "/opt/hpcc/lib/libinj.so.1"),
                ("libmpi.so.12", "/usr/lib/libmpi.so.12"),
                ("libfast.so.1", "/usr/lib/libfast.so.1"),
            ]
        );
        let written = LdCache::parse(&write_cache(&m).unwrap()).unwrap();
        assert_eq!(
            written.find("libmpi.so.12", x).unwrap(),
            PathBuf::from("/opt/hpcc/lib/libmpi.so.12")
        );
        assert_eq!(merge(&injected, None), injected);
    }

    #[test]
    fn merge_of_a_shared_string_bomb_is_bounded() {
        let b = shared_string_cache(1 << 20, 4000, native_flags());
        let c = LdCache::parse(&b).unwrap();
        let (m, took) = timed(|| merge(&[], Some(&c)));
        // One distinct entry; the rest are duplicates, looked at only
        // within the byte budget.
        assert_eq!(m.len(), 1);
        assert!(took < DEBUG_BOUND, "{took:?}");
        let bytes = write_cache(&m).unwrap();
        assert!(bytes.len() < 8192);
    }

    #[test]
    fn flags_match_ldconfig() {
        // x86-64, as `ldconfig -p` shows "libc6,x86-64".
        assert_eq!(flags_for(62, true), Some(0x0303));
        assert_eq!(flags_for(62, false), Some(0x0803));
        assert_eq!(flags_for(3, false), Some(0x0003));
        assert_eq!(flags_for(183, true), Some(0x0a03));
        assert_eq!(flags_for(21, true), Some(0x0503));
        assert_eq!(flags_for(22, true), Some(0x0403));
        assert_eq!(flags_for(243, true), Some(0x1003));
        assert_eq!(flags_for(40, false), None, "ARM: float ABI unknown");
        assert_eq!(flags_for(8, true), None, "MIPS");
        assert_eq!(flags_for(183, false), None);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(flags_for(62, true), Some(native_flags()));
        }
        // The host's own cache agrees: libc's entry has these flags.
        let host = LdCache::parse(&std::fs::read("/etc/ld.so.cache").unwrap()).unwrap();
        let libc = host.lookup("libc.so.6", native_flags()).next().unwrap();
        assert_eq!(libc.flags, native_flags());
    }
}
