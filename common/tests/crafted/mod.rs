//! Hostile inputs from the security review, built in memory: shared by the
//! unit tests (`#[path]`-included by `src/elf.rs`) and the integration
//! tests that measure their cost in a process of their own. Self-contained:
//! the format constants are glibc's and the ELF specification's.

#![allow(dead_code)]

use std::path::Path;

const CACHE_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const CACHE_HEADER: usize = 48;
const CACHE_ENTRY: usize = 24;

/// A new-format cache header for `n` entries and a string table of
/// `len_strings` bytes.
fn cache_header(n: usize, len_strings: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(CACHE_MAGIC);
    b.extend_from_slice(&(n as u32).to_ne_bytes());
    b.extend_from_slice(&(len_strings as u32).to_ne_bytes());
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(&[0; 16]);
    b
}

fn cache_entry(b: &mut Vec<u8>, flags: i32, key: usize, value: usize) {
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&(key as u32).to_ne_bytes());
    b.extend_from_slice(&(value as u32).to_ne_bytes());
    b.extend_from_slice(&[0; 12]);
}

/// The review's hostile cache: as many entries as fit in `size` bytes, all
/// naming one `string_len`-byte string as soname and path (1 MiB with a
/// 4 KiB string: ~43,500 entries; 8 MiB: ~349,000).
pub fn shared_string_cache(size: usize, string_len: usize, flags: i32) -> Vec<u8> {
    let n = (size - CACHE_HEADER - string_len - 1) / CACHE_ENTRY;
    let s = CACHE_HEADER + n * CACHE_ENTRY;
    let mut b = cache_header(n, string_len + 1);
    b.reserve(size);
    for _ in 0..n {
        cache_entry(&mut b, flags, s, s);
    }
    b.extend(std::iter::repeat_n(b'a', string_len));
    b.push(0);
    b
}

/// A cache listing `paths` for one `soname` (the review's quadratic
/// planning input: 20,000 or 60,000 distinct paths for `libmpich.so.12`).
pub fn one_name_cache(soname: &str, paths: &[&Path], flags: i32) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let s = CACHE_HEADER + paths.len() * CACHE_ENTRY;
    let mut strings = Vec::new();
    strings.extend_from_slice(soname.as_bytes());
    strings.push(0);
    let mut b = Vec::new();
    let mut entries = Vec::new();
    for p in paths {
        let off = s + strings.len();
        strings.extend_from_slice(p.as_os_str().as_bytes());
        strings.push(0);
        cache_entry(&mut entries, flags, s, off);
    }
    b.extend(cache_header(paths.len(), strings.len()));
    b.extend(entries);
    b.extend(strings);
    b
}

/// Little-endian ELF64 writing helpers.
struct Builder(Vec<u8>);

impl Builder {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const SHT_STRTAB: u32 = 3;
const SHT_DYNAMIC: u32 = 6;
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

/// The review's ELF bomb: an x86-64 shared object whose `.gnu.version_r`
/// has `verneeds` records that all share one chain of `vernaux` records
/// (4096 x 65,535 = 268 million version needs in 1.1 MiB).
pub fn verneed_bomb(verneeds: u32, vernaux: u16) -> Vec<u8> {
    crafted_elf(1, verneeds, vernaux)
}

/// An x86-64 shared object `libbomb.so.1` with `needed` `DT_NEEDED`
/// entries (all `libc.so.6`) and a `.gnu.version_r` of `verneeds` records
/// sharing one chain of `vernaux` records (all `GLIBC_2.2.5`).
///
/// Layout: ELF header, a `PT_LOAD` mapping the file at address 0 (so
/// addresses are offsets) and a `PT_DYNAMIC`, `.dynstr`, `.dynamic`,
/// `.gnu.version_r`, then the section headers (null, `.dynstr`, `.dynamic`,
/// `.gnu.version_r`).
pub fn crafted_elf(needed: usize, verneeds: u32, vernaux: u16) -> Vec<u8> {
    let dynstr: &[u8] = b"\0libbomb.so.1\0libc.so.6\0GLIBC_2.2.5\0";
    let (so_off, libc_off, ver_off) = (1u64, 14u32, 24u32);
    let dynstr_off = 64 + 56 * 2;
    let dyn_off = dynstr_off + dynstr.len();
    let mut dyns: Vec<(u64, u64)> = vec![
        (DT_STRTAB, dynstr_off as u64),
        (DT_STRSZ, dynstr.len() as u64),
        (DT_SONAME, so_off),
    ];
    dyns.extend(std::iter::repeat_n(
        (DT_NEEDED, u64::from(libc_off)),
        needed,
    ));
    dyns.push((0, 0));
    let dyn_size = (dyns.len() * 16) as u64;
    let verneed_off = dyn_off + dyns.len() * 16;
    let vernaux_off = verneed_off + verneeds as usize * 16;
    let shdr_off = vernaux_off + vernaux as usize * 16;
    let mut b = Builder(Vec::with_capacity(shdr_off + 4 * 64));
    // ELF header: ELFCLASS64, ELFDATA2LSB, ET_DYN, EM_X86_64.
    b.0.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    b.u16(3);
    b.u16(62);
    b.u32(1);
    b.u64(0);
    b.u64(64);
    b.u64(shdr_off as u64);
    b.u32(0);
    b.u16(64);
    b.u16(56);
    b.u16(2);
    b.u16(64);
    b.u16(4);
    b.u16(0);
    for (kind, off, size) in [(1u32, 0u64, shdr_off as u64), (2, dyn_off as u64, dyn_size)] {
        b.u32(kind);
        b.u32(4);
        b.u64(off);
        b.u64(off);
        b.u64(off);
        b.u64(size);
        b.u64(size);
        b.u64(8);
    }
    b.0.extend_from_slice(dynstr);
    for (tag, val) in dyns {
        b.u64(tag);
        b.u64(val);
    }
    // Verneed records: each points (vn_aux, relative to itself) at the one
    // shared vernaux chain, and (vn_next) at the next record.
    for i in 0..verneeds as usize {
        let here = verneed_off + i * 16;
        b.u16(1);
        b.u16(vernaux);
        b.u32(libc_off);
        b.u32((vernaux_off - here) as u32);
        b.u32(if i + 1 < verneeds as usize { 16 } else { 0 });
    }
    for i in 0..vernaux {
        b.u32(0x0d69_6914);
        b.u16(0);
        b.u16(2);
        b.u32(ver_off);
        b.u32(if i + 1 < vernaux { 16 } else { 0 });
    }
    let sections: [(u32, u64, u64, u32, u32); 4] = [
        (0, 0, 0, 0, 0),
        (SHT_STRTAB, dynstr_off as u64, dynstr.len() as u64, 0, 0),
        (SHT_DYNAMIC, dyn_off as u64, dyn_size, 1, 0),
        (
            SHT_GNU_VERNEED,
            verneed_off as u64,
            (shdr_off - verneed_off) as u64,
            1,
            verneeds,
        ),
    ];
    for (kind, off, size, link, info) in sections {
        b.u32(0);
        b.u32(kind);
        b.u64(2);
        b.u64(off);
        b.u64(off);
        b.u64(size);
        b.u32(link);
        b.u32(info);
        b.u64(8);
        b.u64(0);
    }
    b.0
}
