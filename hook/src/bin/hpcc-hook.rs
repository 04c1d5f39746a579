//! `hpcc-hook [STAGE]`: the OCI hook. See `hpcc_hook::hook` for the protocol.

fn main() {
    let arg = std::env::args().nth(1);
    let stage = match hpcc_hook::hook::Stage::parse(arg.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hpcc-hook: {e}");
            std::process::exit(hpcc_hook::hook::EXIT_USAGE);
        }
    };
    let policy_path = hpcc_config::policy_path_from_env();
    let code = hpcc_hook::hook::run(stage, std::io::stdin().lock(), &policy_path, &mut |l| {
        eprintln!("{l}")
    });
    std::process::exit(code);
}
