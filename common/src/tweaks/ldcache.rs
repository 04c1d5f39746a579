//! glibc's linker cache (`/etc/ld.so.cache`), parsed from bytes.
//!
//! The same parser reads the host's cache (to find the dependencies of host
//! libraries) and the image's (to find the libraries a tweak replaces). The
//! image's file is hostile: every offset is bounds-checked, the size is
//! bounded by [`MAX_CACHE_BYTES`], and a malformed file is an error, never a
//! panic. Nothing here runs `ldconfig -p`: reading the file is enough and
//! does not depend on which `ldconfig` binary is around.
//!
//! Formats: the "new" format (`glibc-ld.so.cache1.1`, the only one glibc
//! writes since 2.32), the old `ld.so-1.7.0` format, and the old format
//! followed by a new one (glibc's "compat" layout), where the new part wins.

use std::path::PathBuf;

/// Largest cache accepted. Real caches are well under 1 MiB.
pub const MAX_CACHE_BYTES: u64 = 8 << 20;

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache";
const NEW_VERSION: &[u8] = b"1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;
/// Longest string accepted in the string table (a path).
const MAX_STRING: usize = 4096;

/// `FLAG_ELF_LIBC6`: an ELF library for glibc (the only type we use).
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// Why a cache could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdCacheError {
    /// Neither magic string at the start.
    #[error("not a glibc linker cache (unknown magic)")]
    BadMagic,
    /// Over [`MAX_CACHE_BYTES`].
    #[error("linker cache is larger than {MAX_CACHE_BYTES} bytes")]
    TooLarge,
    /// A count or offset points outside the file.
    #[error("linker cache is truncated or corrupt: {0}")]
    Corrupt(&'static str),
}

/// One cache entry: `soname => path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdCacheEntry {
    /// The name the loader looks up (`libmpich.so.12`).
    pub soname: String,
    /// The path it maps to (as written in the cache: a path in the root the
    /// cache was built for).
    pub path: PathBuf,
    /// glibc's entry flags (type and architecture bits).
    pub flags: i32,
    /// Non-zero for `glibc-hwcaps` subdirectory entries.
    pub hwcap: u64,
}

/// A parsed linker cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdCache {
    /// Entries in file order (glibc sorts them by soname, then priority).
    pub entries: Vec<LdCacheEntry>,
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

/// A NUL-terminated string at `base + off`, bounded.
fn str_at(b: &[u8], base: usize, off: u32) -> Option<String> {
    let start = base.checked_add(off as usize)?;
    let rest = b.get(start..)?;
    let len = rest.iter().take(MAX_STRING).position(|&c| c == 0)?;
    std::str::from_utf8(&rest[..len]).ok().map(str::to_owned)
}

impl LdCache {
    /// Parses cache bytes (already bounded by the caller's read).
    pub fn parse(bytes: &[u8]) -> Result<LdCache, LdCacheError> {
        if bytes.len() as u64 > MAX_CACHE_BYTES {
            return Err(LdCacheError::TooLarge);
        }
        if bytes.starts_with(NEW_MAGIC) {
            return Self::parse_new(bytes, 0);
        }
        if !bytes.starts_with(OLD_MAGIC) {
            return Err(LdCacheError::BadMagic);
        }
        let nlibs = u32_at(bytes, 12).ok_or(LdCacheError::Corrupt("old header"))? as usize;
        let entries_end = nlibs
            .checked_mul(OLD_ENTRY)
            .and_then(|n| n.checked_add(OLD_HEADER))
            .filter(|&e| e <= bytes.len())
            .ok_or(LdCacheError::Corrupt("old entry count"))?;
        // The compat layout puts a new-format cache right after the old
        // entries, aligned to 8; the loader prefers it, so do we.
        let aligned = (entries_end + 7) & !7;
        if bytes
            .get(aligned..)
            .is_some_and(|rest| rest.starts_with(NEW_MAGIC))
        {
            return Self::parse_new(bytes, aligned);
        }
        // Old format: strings are relative to the end of the entries.
        let mut entries = Vec::with_capacity(nlibs);
        for i in 0..nlibs {
            let off = OLD_HEADER + i * OLD_ENTRY;
            let flags = i32_at(bytes, off).ok_or(LdCacheError::Corrupt("old entry"))?;
            let key = u32_at(bytes, off + 4).ok_or(LdCacheError::Corrupt("old entry"))?;
            let value = u32_at(bytes, off + 8).ok_or(LdCacheError::Corrupt("old entry"))?;
            let soname =
                str_at(bytes, entries_end, key).ok_or(LdCacheError::Corrupt("old string"))?;
            let path =
                str_at(bytes, entries_end, value).ok_or(LdCacheError::Corrupt("old string"))?;
            entries.push(LdCacheEntry {
                soname,
                path: PathBuf::from(path),
                flags,
                hwcap: 0,
            });
        }
        Ok(LdCache { entries })
    }

    fn parse_new(bytes: &[u8], base: usize) -> Result<LdCache, LdCacheError> {
        let b = &bytes[base..];
        if b.len() < NEW_HEADER || &b[NEW_MAGIC.len()..NEW_MAGIC.len() + 3] != NEW_VERSION {
            return Err(LdCacheError::Corrupt("new header"));
        }
        let nlibs = u32_at(b, 20).ok_or(LdCacheError::Corrupt("new header"))? as usize;
        nlibs
            .checked_mul(NEW_ENTRY)
            .and_then(|n| n.checked_add(NEW_HEADER))
            .filter(|&e| e <= b.len())
            .ok_or(LdCacheError::Corrupt("new entry count"))?;
        let mut entries = Vec::with_capacity(nlibs);
        for i in 0..nlibs {
            let off = NEW_HEADER + i * NEW_ENTRY;
            let bad = LdCacheError::Corrupt("new entry");
            let flags = i32_at(b, off).ok_or(bad.clone())?;
            let key = u32_at(b, off + 4).ok_or(bad.clone())?;
            let value = u32_at(b, off + 8).ok_or(bad.clone())?;
            let hwcap = u64_at(b, off + 16).ok_or(bad)?;
            // New-format string offsets are relative to the new header.
            let soname = str_at(b, 0, key).ok_or(LdCacheError::Corrupt("new string"))?;
            let path = str_at(b, 0, value).ok_or(LdCacheError::Corrupt("new string"))?;
            entries.push(LdCacheEntry {
                soname,
                path: PathBuf::from(path),
                flags,
                hwcap,
            });
        }
        Ok(LdCache { entries })
    }

    /// Paths for `soname` of the given flags (see [`native_flags`]); the
    /// baseline entry (no hwcaps subdirectory) first.
    pub fn lookup(&self, soname: &str, flags: i32) -> Vec<&LdCacheEntry> {
        let mut v: Vec<&LdCacheEntry> = self
            .entries
            .iter()
            .filter(|e| e.soname == soname && matches_flags(e.flags, flags))
            .collect();
        v.sort_by_key(|e| e.hwcap != 0);
        v
    }

    /// The baseline path for `soname`, as the loader would use it on a CPU
    /// without hwcaps subdirectories.
    pub fn find(&self, soname: &str, flags: i32) -> Option<PathBuf> {
        self.lookup(soname, flags).first().map(|e| e.path.clone())
    }
}

fn matches_flags(entry: i32, wanted: i32) -> bool {
    entry & FLAG_TYPE_MASK == wanted & FLAG_TYPE_MASK
        && entry & FLAG_REQUIRED_MASK == wanted & FLAG_REQUIRED_MASK
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    #[test]
    fn parses_the_real_host_cache() {
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            panic!("/etc/ld.so.cache is missing on this Debian host");
        };
        let cache = LdCache::parse(&bytes).unwrap();
        assert!(cache.entries.len() > 10, "{}", cache.entries.len());
        let libc = cache.find("libc.so.6", native_flags()).unwrap();
        assert!(libc.ends_with("libc.so.6"), "{}", libc.display());
        assert!(libc.exists());
        // The packages the e2e tests need are installed here.
        let mpich = cache.find("libmpich.so.12", native_flags()).unwrap();
        assert!(mpich.exists(), "{}", mpich.display());
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
        assert_eq!(c.entries.len(), 3);
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
        // Huge entry count.
        b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(LdCache::parse(&b), Err(LdCacheError::Corrupt(_))));
        // String offset past the end.
        let mut b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        b[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
        assert!(LdCache::parse(&b).is_err());
        // Unterminated string.
        let b = build_new(&[("liba.so.1", "/a", 0x0303)]);
        assert!(LdCache::parse(&b[..b.len() - 1]).is_err());
        // Every truncation of a valid file is handled.
        let b = build_new(&[("liba.so.1", "/a", 0x0303), ("libb.so.2", "/b", 0x0303)]);
        for n in 0..b.len() {
            let _ = LdCache::parse(&b[..n]);
        }
        let big = vec![0u8; (MAX_CACHE_BYTES + 1) as usize];
        assert_eq!(LdCache::parse(&big), Err(LdCacheError::TooLarge));
    }
}
