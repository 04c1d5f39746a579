//! The MPI check: a 2-rank ping-pong inside the container (the host MPI
//! that the plan injects) against the same program on bare metal (the
//! host MPI itself).
//!
//! Both sides start their 2 ranks with the host's own launcher on one
//! node: MPICH's hydra (`mpiexec.hydra -launcher fork -n 2`), Open MPI's
//! `orterun --allow-run-as-root --oversubscribe -np 2` with the
//! `isolated` launcher (no ssh). In the container, the launcher binaries
//! (and the libraries they need that the plan does not inject, such as
//! hydra's `libslurm.so.38`) are bound read-only under
//! [`super::container::VERIFY_DIR`] for the check's duration, and the
//! whole job (launcher and both ranks) runs in ONE container.
//!
//! The program is the image's when it declares one
//! ([`super::VERIFY_COMMAND`]), else hpcc's own ping-pong
//! (`tests/setup/src/pingpong.c`, installed as `pingpong-mpich` /
//! `pingpong-openmpi`), dynamically linked against `libmpich.so.12` or
//! `libmpi.so.40`: in the container the loader resolves that soname to the
//! library hpcc injected, so the check measures the injection.

use super::container::{self, Bind, Edits, RunOutput, VERIFY_DIR};
use super::VerifyError;
use hpcc_config::MpiAbi;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The host launcher of one MPI ABI.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The ABI.
    pub abi: MpiAbi,
    /// The launcher, then the helpers it starts (hydra's proxy, orted).
    pub binaries: Vec<PathBuf>,
}

impl Launcher {
    /// The host's launcher for `abi`, from `$PATH`.
    pub fn find(abi: MpiAbi) -> Result<Launcher, VerifyError> {
        let names: &[&str] = match abi {
            MpiAbi::Mpich => &["mpiexec.hydra", "hydra_pmi_proxy"],
            MpiAbi::Openmpi => &["orterun", "orted"],
            MpiAbi::MpiAbi => {
                return Err(VerifyError::Missing {
                    what: "a launcher for the MPI-5 standard ABI (hpcc verify knows MPICH's hydra and Open MPI's orterun)".into(),
                })
            }
        };
        let binaries = names
            .iter()
            .map(|n| {
                container::which(n).ok_or_else(|| VerifyError::Missing {
                    what: format!("the host's {} launcher `{n}` (not on $PATH)", abi_name(abi)),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Launcher { abi, binaries })
    }

    /// The launcher's command for 2 ranks of `program` (launcher at `exe`).
    pub fn command(&self, exe: &str, program: &[String]) -> Vec<String> {
        let mut v: Vec<String> = match self.abi {
            MpiAbi::Mpich | MpiAbi::MpiAbi => {
                vec![exe.into(), "-launcher".into(), "fork".into(), "-n".into()]
            }
            MpiAbi::Openmpi => vec![
                exe.into(),
                "--allow-run-as-root".into(),
                "--oversubscribe".into(),
                "-np".into(),
            ],
        };
        v.push("2".into());
        v.extend(program.iter().cloned());
        v
    }

    /// Environment the launcher needs on both sides: Open MPI's launcher
    /// on one node without ssh.
    pub fn env(&self) -> Vec<(String, String)> {
        match self.abi {
            MpiAbi::Mpich | MpiAbi::MpiAbi => vec![],
            MpiAbi::Openmpi => vec![
                ("OMPI_MCA_plm".into(), "isolated".into()),
                ("OMPI_MCA_plm_rsh_agent".into(), String::new()),
            ],
        }
    }
}

/// `mpich` or `openmpi`.
pub fn abi_name(abi: MpiAbi) -> &'static str {
    match abi {
        MpiAbi::Mpich => "mpich",
        MpiAbi::Openmpi => "openmpi",
        MpiAbi::MpiAbi => "mpi-abi",
    }
}

/// hpcc's own ping-pong for `abi` in `dir`.
pub fn own_program(dir: &Path, abi: MpiAbi) -> Result<PathBuf, VerifyError> {
    let names: &[&str] = match abi {
        MpiAbi::Mpich => &["pingpong-mpich"],
        // The fixtures name it after the binary's suffix (tests/setup).
        MpiAbi::Openmpi => &["pingpong-openmpi", "pingpong-ompi"],
        MpiAbi::MpiAbi => &["pingpong-mpi-abi"],
    };
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| VerifyError::Missing {
            what: format!(
                "hpcc's ping-pong program {} in {} (--programs DIR)",
                names[0],
                dir.display()
            ),
        })
}

/// The glibc libraries: the image brings its own, a host copy must never
/// be bound in.
const GLIBC: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libresolv.so.2",
    "libutil.so.1",
    "libanl.so.1",
];

/// The host libraries `binaries` need (`ldd`, bounded) that are neither
/// glibc nor in `provided` (the sonames the plan already injects).
pub fn launcher_libraries(
    binaries: &[PathBuf],
    provided: &[String],
    dir: &Path,
) -> Result<Vec<Bind>, VerifyError> {
    let mut out: Vec<Bind> = Vec::new();
    for b in binaries {
        let mut cmd = std::process::Command::new("ldd");
        cmd.arg(b);
        let r = container::run_bounded(
            cmd,
            dir,
            "ldd",
            std::time::Instant::now() + std::time::Duration::from_secs(10),
        )?;
        if !r.ok() {
            return Err(VerifyError::Missing {
                what: format!("the libraries of {} (ldd: {})", b.display(), r.failure()),
            });
        }
        for line in r.stdout.lines() {
            let mut w = line.split_whitespace();
            let (Some(name), Some("=>"), Some(path)) = (w.next(), w.next(), w.next()) else {
                continue;
            };
            if GLIBC.contains(&name)
                || name.starts_with("ld-linux")
                || provided.iter().any(|p| p == name)
                || !path.starts_with('/')
                || out.iter().any(|o| o.destination.ends_with(name))
            {
                continue;
            }
            out.push(Bind {
                source: std::fs::canonicalize(path).unwrap_or_else(|_| path.into()),
                destination: Path::new(VERIFY_DIR).join("lib").join(name),
            });
        }
    }
    Ok(out)
}

/// The edits that run `program` (a path in the container) under the
/// launcher in the container.
pub fn container_edits(
    launcher: &Launcher,
    program: &[String],
    image_path: Option<&str>,
    libs: Vec<Bind>,
) -> Edits {
    let bin = Path::new(VERIFY_DIR).join("bin");
    let mut binds: Vec<Bind> = launcher
        .binaries
        .iter()
        .map(|b| Bind {
            source: b.clone(),
            destination: bin.join(b.file_name().unwrap_or_default()),
        })
        .collect();
    let exe = binds[0].destination.display().to_string();
    let has_libs = !libs.is_empty();
    binds.extend(libs);
    let mut env = launcher.env();
    env.push((
        "PATH".into(),
        format!(
            "{}:{}",
            bin.display(),
            image_path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
        ),
    ));
    if has_libs {
        env.push(("LD_LIBRARY_PATH".into(), format!("{VERIFY_DIR}/lib")));
    }
    Edits {
        args: launcher.command(&exe, program),
        env,
        binds,
        tmp: launcher.abi == MpiAbi::Openmpi,
    }
}

/// One side's figures (the best of its runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// One-way latency of 8 B messages (µs): the lowest run.
    pub latency_us: f64,
    /// Bandwidth of 1 MiB messages (MB/s): the highest run.
    pub bandwidth_mbps: f64,
}

/// What one ping-pong run printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// `pingpong library=...`: the MPI library that ran.
    pub library: Option<String>,
    /// The figures, when both sizes were printed.
    pub figures: Option<Figures>,
}

/// Reads the ping-pong's lines (`pingpong library=...`,
/// `pingpong bytes=8 ... lat_us=...`, `pingpong bytes=1048576 ... bw_MBps=...`).
pub fn parse(stdout: &str) -> Parsed {
    let mut library = None;
    let (mut lat, mut bw) = (None, None);
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("pingpong ") else {
            continue;
        };
        if let Some(l) = rest.strip_prefix("library=") {
            library = Some(hpcc_common::text::escape(l.replace('\t', " ").trim()));
            continue;
        }
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
        };
        match field("bytes").map(|b| b as u64) {
            Some(8) => lat = field("lat_us"),
            Some(1_048_576) => bw = field("bw_MBps"),
            _ => {}
        }
    }
    Parsed {
        library,
        figures: lat.zip(bw).map(|(latency_us, bandwidth_mbps)| Figures {
            latency_us,
            bandwidth_mbps,
        }),
    }
}

/// The best of several runs: lowest latency, highest bandwidth (the least
/// disturbed run on a shared node).
pub fn best(runs: &[Figures]) -> Option<Figures> {
    runs.iter().copied().reduce(|a, b| Figures {
        latency_us: a.latency_us.min(b.latency_us),
        bandwidth_mbps: a.bandwidth_mbps.max(b.bandwidth_mbps),
    })
}

/// Container against bare metal, in percent: latency bare/container,
/// bandwidth container/bare; the lower of the two is the measure.
pub fn ratios(container: &Figures, bare: &Figures) -> (f64, f64) {
    (
        100.0 * bare.latency_us / container.latency_us,
        100.0 * container.bandwidth_mbps / bare.bandwidth_mbps,
    )
}

/// The result of [`RunOutput`]s of one side.
pub fn side_failure(r: &RunOutput, parsed: &Parsed) -> Option<String> {
    if !r.ok() {
        return Some(r.failure());
    }
    if parsed.figures.is_none() {
        return Some("it printed no ping-pong figures (pingpong bytes=8 ... lat_us=...)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "pingpong library=MPICH Version:\t4.0.2\n\
pingpong bytes=8 iters=2000 lat_us=0.34 bw_MBps=23.8\n\
pingpong bytes=1048576 iters=50 lat_us=210.00 bw_MBps=4993.0\n\
pingpong bytes=4194304 iters=20 lat_us=900.00 bw_MBps=4660.1\n";

    #[test]
    fn parses_the_pingpong_lines() {
        let p = parse(OUT);
        assert_eq!(p.library.as_deref(), Some("MPICH Version: 4.0.2"));
        assert_eq!(
            p.figures,
            Some(Figures {
                latency_us: 0.34,
                bandwidth_mbps: 4993.0
            })
        );
        assert_eq!(parse("pingpong bytes=8 lat_us=nan\n").figures, None);
        assert_eq!(parse("garbage\npingpong bytes=8 lat_us=-1\n").figures, None);
    }

    #[test]
    fn ratios_take_the_best_runs() {
        let bare = best(&[
            Figures {
                latency_us: 1.0,
                bandwidth_mbps: 900.0,
            },
            Figures {
                latency_us: 0.5,
                bandwidth_mbps: 1000.0,
            },
        ])
        .unwrap();
        let ctr = Figures {
            latency_us: 1.0,
            bandwidth_mbps: 410.0,
        };
        let (lat, bw) = ratios(&ctr, &bare);
        assert_eq!(lat.round(), 50.0);
        assert_eq!(bw.round(), 41.0);
    }

    #[test]
    fn launch_commands() {
        let l = Launcher {
            abi: MpiAbi::Openmpi,
            binaries: vec!["/usr/bin/orterun".into(), "/usr/bin/orted".into()],
        };
        let e = container_edits(&l, &["/p".into()], Some("/bin"), vec![]);
        assert_eq!(
            e.args,
            [
                "/dev/hpcc/verify/bin/orterun",
                "--allow-run-as-root",
                "--oversubscribe",
                "-np",
                "2",
                "/p"
            ]
        );
        assert!(e.tmp);
        assert!(e
            .env
            .contains(&("PATH".into(), "/dev/hpcc/verify/bin:/bin".into())));
        assert_eq!(
            e.binds[1].destination,
            Path::new("/dev/hpcc/verify/bin/orted")
        );
        let m = Launcher {
            abi: MpiAbi::Mpich,
            binaries: vec!["/usr/bin/mpiexec.hydra".into()],
        };
        assert_eq!(
            m.command("mpiexec.hydra", &["/p".into()]),
            ["mpiexec.hydra", "-launcher", "fork", "-n", "2", "/p"]
        );
    }
}
