//! `hpcc-hook [STAGE] [--config PATH]`: the OCI hook. See `hpcc_hook::hook`.
//!
//! Statically linked or not at all: runc gives a hook listed at
//! `createContainer` without an `env` the container's own `process.env`,
//! which the image writes, so a dynamic hook would run an image's
//! `LD_PRELOAD`/`LD_AUDIT` library as root before `main`. No dynamic loader
//! runs in a crt-static binary.

#[cfg(not(target_feature = "crt-static"))]
compile_error!(
    "hpcc-hook must be statically linked (an image's LD_PRELOAD would run as root in a dynamic hook): \
     build it with packaging/build-static-hook.sh (cargo build --features static-hook \
     --target x86_64-unknown-linux-gnu with RUSTFLAGS=\"-C target-feature=+crt-static\")"
);

fn main() {
    std::process::exit(hpcc_hook::hook::main(std::env::args().skip(1)));
}
