//! Generates the SPANK bindings from the installed `slurm/spank.h`
//! (libslurm-dev) and the Slurm version the plugin is built for: Slurm
//! refuses a plugin whose `plugin_version` differs from its own release
//! ("Incompatible plugin version"), so the number must come from the same
//! headers as the ABI.

use std::env;
use std::path::PathBuf;

fn main() {
    let include = env::var("SLURM_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    let header = PathBuf::from(&include).join("slurm/spank.h");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed=src/wrapper.h");
    if !header.exists() {
        panic!(
            "{} not found: install libslurm-dev (Debian) or set SLURM_INCLUDE_DIR",
            header.display()
        );
    }
    let bindings = bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_arg(format!("-I{include}"))
        .allowlist_function("spank_.*")
        .allowlist_function("slurm_(info|error|verbose|debug|debug2|debug3|spank_log)")
        .allowlist_type("spank_.*")
        .allowlist_var("ESPANK_.*")
        .allowlist_var("S_.*")
        .allowlist_var("SPANK_.*")
        .allowlist_var("SLURM_VERSION_.*")
        // spank_err_t / spank_item_t / spank_context_t as plain integer
        // constants: the values come from a C program we do not control,
        // and a Rust enum holding an unknown value is undefined behaviour.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on slurm/spank.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("spank_bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("cannot write the SPANK bindings");
}
