//! Records, for `hpcc --version`, the Slurm release the SPANK plugin
//! (`hpcc_spank.so`, crate `spank/`) is built against: read from the same
//! header directory as `spank/build.rs` (`$SLURM_INCLUDE_DIR`, default
//! `/usr/include`), `slurm/slurm_version.h`. Without that header the
//! workspace builds no plugin, and `hpcc --version` says so.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let include = env::var("SLURM_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    let dir = PathBuf::from(&include).join("slurm");
    let header = dir.join("slurm_version.h");
    // Watch what exists: a missing path would make Cargo rerun this every build.
    if header.exists() {
        println!("cargo:rerun-if-changed={}", header.display());
    } else if dir.exists() {
        println!("cargo:rerun-if-changed={}", dir.display());
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
    let number = std::fs::read_to_string(&header)
        .ok()
        .and_then(|text| version_number(&text));
    match number {
        Some(n) => {
            println!(
                "cargo:rustc-env=HPCC_SLURM_RELEASE={}.{:02}.{}",
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            );
            println!("cargo:rustc-env=HPCC_SLURM_VERSION_NUMBER={n}");
        }
        None => {
            println!("cargo:rustc-env=HPCC_SLURM_RELEASE=");
            println!("cargo:rustc-env=HPCC_SLURM_VERSION_NUMBER=0");
        }
    }
}

/// `#define SLURM_VERSION_NUMBER 0x160508` -> 0x160508.
fn version_number(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? != "#define" || w.next()? != "SLURM_VERSION_NUMBER" {
            return None;
        }
        let v = w.next()?;
        match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    })
}
