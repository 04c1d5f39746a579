//! `hpcc-runtime [--hpcc-KEY=VALUE]... RUNTIME-ARGS...`: the OCI runtime
//! shim. See `hpcc_runtime`.

fn main() {
    std::process::exit(hpcc_runtime::main(std::env::args_os().skip(1)));
}
