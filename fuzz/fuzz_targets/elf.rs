//! ELF objects of the image (libraries hpcc inspects for their soname,
//! needed libraries and symbol versions), as bytes: never a panic, and
//! bounded (the review's 4096 x 65535 Verneed bomb is in the corpus).

#![no_main]

use hpcc_common::fuzz_probe::ElfInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = ElfInfo::parse(data, "fuzz.so") {
        let _ = info.max_glibc_needed();
        let _ = info.max_glibc_defined();
    }
});
