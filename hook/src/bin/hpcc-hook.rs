//! `hpcc-hook [STAGE] [--config PATH]`: the OCI hook. See `hpcc_hook::hook`.

fn main() {
    std::process::exit(hpcc_hook::hook::main(std::env::args().skip(1)));
}
