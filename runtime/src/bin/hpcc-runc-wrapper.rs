//! `hpcc-runc-wrapper [--hpcc-KEY=VALUE]... RUNC-ARGS...`: the runtime for
//! Slurm's `oci.conf` `RunTimeRun`. See `hpcc_runtime::slurm`.

use hpcc_runtime::slurm::{self as wrapper, Next, WrapperArgs};
use std::os::unix::process::CommandExt;

fn main() {
    let args = match WrapperArgs::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(wrapper::EXIT_USAGE);
        }
    };
    // slurm.conf is root's file; the environment (SLURM_CONF) is not trusted.
    let conf = std::fs::read_to_string(wrapper::SLURM_CONF).unwrap_or_default();
    // `%n` in SlurmdSpoolDir is the Slurm node name, which slurmstepd puts
    // in the runtime's environment; the host name is the fallback.
    let host = std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default();
    match wrapper::prepare(&args, &conf, &host) {
        Next::Exec(runc, rest) => {
            let err = std::process::Command::new(&runc).args(rest).exec();
            eprintln!(
                "hpcc-runc-wrapper: cannot execute {}: {err}",
                runc.display()
            );
            std::process::exit(wrapper::EXIT_ERROR);
        }
        Next::Exit(code, line) => {
            eprintln!("{line}");
            std::process::exit(code);
        }
    }
}
