//! `hpcc`: fingerprint, match, check, policy, doctor. See `hpcc_cli`.

fn main() {
    // Behave like other filters under `| head`: die quietly on a closed pipe
    // instead of panicking in println!.
    // SAFETY: setting a signal disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(hpcc_cli::main(std::env::args_os().collect()));
}
