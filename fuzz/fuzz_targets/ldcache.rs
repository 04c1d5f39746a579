//! The image's linker cache (`/etc/ld.so.cache`, glibc's formats): parse,
//! look up, merge with hpcc's own entries, write, and read the written
//! file back. Properties: never a panic; what hpcc writes is a cache hpcc
//! reads, with the merged entries in it.

#![no_main]

use hpcc_common::ldcache::{merge, native_flags, write_cache, CacheEntry, LdCache};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let Ok(cache) = LdCache::parse(data) else {
        return;
    };
    let _ = cache.len();
    let mut names = Vec::new();
    for e in cache.entries().take(64) {
        names.push(e.soname.to_owned());
    }
    for n in names.iter().take(8) {
        let _ = cache.lookup(n, native_flags()).count();
        let _ = cache.find(n, native_flags());
    }
    let ours = [CacheEntry {
        soname: "libmpich.so.12".into(),
        path: PathBuf::from("/dev/hpcc/lib/mpich/libmpich.so.12"),
        flags: native_flags(),
    }];
    let merged = merge(&ours, Some(&cache));
    if let Ok(bytes) = write_cache(&merged) {
        let back = LdCache::parse(&bytes).expect("hpcc reads the cache it writes");
        assert!(back.find("libmpich.so.12", native_flags()).is_some());
    }
});
