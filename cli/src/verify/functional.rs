//! The checks themselves, each filling the [`Report`]: MPI ping-pong,
//! libfabric providers, GPU.

use super::container::{self, Bind, Edits, RunOutput, VERIFY_DIR};
use super::mpi::{self, Figures, Launcher};
use super::report::{self, Measured, Outcome, Program, Report};
use super::{image_command, Check};
use hpcc_config::MpiAbi;
use std::path::Path;

/// hpcc's ping-pong at a quarter of its iterations (500 x 8 B, 12 x 1 MiB,
/// 5 x 4 MiB): well under a second per run on an idle node.
const OWN_SCALE: &str = "0.25";

fn measured(runs: u32) -> Measured {
    Measured::none(runs)
}

/// The check worked (or not) in the container: a functional result.
fn functional(report: &mut Report, m: Measured, ok: bool, reason: String) {
    let mut m = m;
    m.percent = if ok { 100.0 } else { 0.0 };
    m.level = report::level(m.percent);
    let (outcome, contradiction) = report::compare(report.predicted, &m);
    report.measured = Some(m);
    report.outcome = outcome;
    report.contradiction = contradiction;
    report.reason = reason;
}

fn did_not_run(report: &mut Report, reason: String) {
    report.outcome = Outcome::DidNotRun;
    report.reason = reason;
}

impl Check<'_> {
    /// Writes the private bundle with `edits` (once per check).
    fn bundle(&self, edits: &Edits) -> Result<std::path::PathBuf, super::VerifyError> {
        container::private_bundle(self.bundle, self.config, edits, self.work)
    }

    /// A bare-metal run of `argv` with `env`.
    fn bare(
        &self,
        argv: &[String],
        env: &[(String, String)],
        n: u32,
    ) -> Result<RunOutput, super::VerifyError> {
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(self.work);
        for (k, v) in env {
            cmd.env(k, v);
        }
        container::run_bounded(cmd, self.work, &format!("bare-{n}"), self.deadline)
    }

    /// The MPI check ([`super::mpi`]).
    pub fn mpi(&self, name: &str, abi: MpiAbi, report: &mut Report) {
        let launcher = match Launcher::find(abi) {
            Ok(l) => l,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let own = mpi::own_program(self.programs, abi);
        let own_in = format!("{VERIFY_DIR}/bin/pingpong-{}", mpi::abi_name(abi));
        let (source, program) = match (image_command(self.ctx), &own) {
            (Some(cmd), _) => ("image", cmd),
            (None, Ok(_)) => ("hpcc", vec![own_in.clone(), OWN_SCALE.into()]),
            (None, Err(e)) => return did_not_run(report, e.to_string()),
        };
        let libs = match mpi::launcher_libraries(&launcher.binaries, &self.provided(), self.work) {
            Ok(l) => l,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let mut edits =
            mpi::container_edits(&launcher, &program, self.image_path().as_deref(), libs);
        if let Ok(p) = &own {
            edits.binds.push(Bind {
                source: p.clone(),
                destination: own_in.into(),
            });
        }
        // Bare metal runs the policy's MPI (the one hpcc injects), not
        // whatever the host's loader would find first.
        let mut bare_env = launcher.env();
        if let Some(h) = self.policy.mpi.get(name) {
            let mut dirs: Vec<String> = Vec::new();
            for d in h
                .libraries
                .iter()
                .chain(&h.dependencies)
                .filter_map(|l| l.parent())
            {
                let d = d.display().to_string();
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            bare_env.push(("LD_LIBRARY_PATH".into(), dirs.join(":")));
        }
        let bare_argv = own.as_ref().ok().map(|p| {
            launcher.command(
                &launcher.binaries[0].display().to_string(),
                &[p.display().to_string(), OWN_SCALE.into()],
            )
        });
        report.program = Some(Program {
            source: source.into(),
            container: program.clone(),
            bare_metal: bare_argv.clone(),
            launcher: Some(match abi {
                MpiAbi::Openmpi => {
                    "one container, host orterun --oversubscribe -np 2 (isolated launcher)".into()
                }
                _ => "one container, host mpiexec.hydra -launcher fork -n 2".into(),
            }),
        });
        let bundle = match self.bundle(&edits) {
            Ok(b) => b,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let mut m = measured(self.runs);
        let (mut ctr, mut bare): (Vec<Figures>, Vec<Figures>) = (vec![], vec![]);
        for n in 0..self.runs {
            // Bare metal first: when the host MPI itself fails, the
            // container's result says nothing about hpcc.
            if let Some(argv) = &bare_argv {
                let r = match self.bare(argv, &bare_env, n) {
                    Ok(r) => r,
                    Err(e) => return did_not_run(report, e.to_string()),
                };
                let p = mpi::parse(&r.stdout);
                if let Some(why) = mpi::side_failure(&r, &p) {
                    return did_not_run(
                        report,
                        format!("the host MPI `{name}` of the policy fails on bare metal too (not a container problem): {why}"),
                    );
                }
                m.bare_metal_library = p.library.or(m.bare_metal_library.take());
                bare.extend(p.figures);
            }
            if container::interrupted() {
                return did_not_run(report, "interrupted".into());
            }
            let r = match self
                .runtime
                .run(&bundle, &self.id(n), self.work, self.deadline)
            {
                Ok(r) => r,
                Err(e) => return did_not_run(report, e.to_string()),
            };
            let p = mpi::parse(&r.stdout);
            m.library = p.library.clone().or(m.library.take());
            if !r.ok() {
                if r.interrupted {
                    return did_not_run(report, "interrupted".into());
                }
                let why = r.failure();
                return functional(
                    report,
                    m,
                    false,
                    format!(
                        "MPI fails in the container with the injected host MPI `{name}`: {why}"
                    ),
                );
            }
            ctr.extend(p.figures);
        }
        if let (Some(i), Some(o)) = (&m.library, &m.bare_metal_library) {
            if i != o {
                let why = format!(
                    "the container ran another MPI ({i}) than the host's ({o}): the injection did not take"
                );
                return functional(report, m, false, why);
            }
        }
        let (Some(c), Some(b)) = (mpi::best(&ctr), mpi::best(&bare)) else {
            let why = if source == "image" {
                "the image's program ran with 2 ranks (exit 0); it printed no ping-pong figures, so there is no ratio"
            } else {
                "the program ran (exit 0) but printed no ping-pong figures"
            };
            return functional(report, m, true, why.into());
        };
        let (lat, bw) = mpi::ratios(&c, &b);
        m.latency_percent = Some((lat * 10.0).round() / 10.0);
        m.bandwidth_percent = Some((bw * 10.0).round() / 10.0);
        m.percent = (lat.min(bw) * 10.0).round() / 10.0;
        m.level = report::level(m.percent);
        m.container = Some(c);
        m.bare_metal = Some(b);
        let (outcome, contradiction) = report::compare(report.predicted, &m);
        report.reason = format!(
            "MPI_Init and a 2-rank ping-pong ran in the container with the host MPI `{name}`: {:.0} % of bare metal ({})",
            m.percent,
            m.level.as_str()
        );
        report.measured = Some(m);
        report.outcome = outcome;
        report.contradiction = contradiction;
    }

    /// The libfabric check: `fi_info -l` inside against outside.
    pub fn libfabric(&self, report: &mut Report) {
        let Some(fi_info) = container::which("fi_info") else {
            return did_not_run(
                report,
                "missing fi_info on this node (libfabric-bin)".into(),
            );
        };
        self.functional_tool(report, &fi_info, &["-l"], providers, |inside, outside| {
            let missing: Vec<&String> = outside.iter().filter(|p| !inside.contains(p)).collect();
            if missing.is_empty() {
                (
                    true,
                    format!(
                        "the container sees the host's libfabric providers ({})",
                        outside.join(" ")
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "libfabric providers missing in the container: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                )
            }
        });
    }

    /// The GPU check: `nvidia-smi -L` inside against outside; not
    /// applicable on a node without a GPU.
    pub fn gpu(&self, report: &mut Report) {
        let Some(nv) = &self.node.gpu.nvidia else {
            let note = self
                .node
                .gpu
                .nvml_note
                .as_deref()
                .map(|n| format!(" ({})", hpcc_common::text::escape(n)))
                .unwrap_or_default();
            return did_not_run(
                report,
                format!("no GPU on this node{note}: the GPU check does not apply here"),
            );
        };
        let Some(smi) = container::which("nvidia-smi") else {
            return did_not_run(report, "missing nvidia-smi on this node".into());
        };
        let count = nv.devices.len();
        self.functional_tool(report, &smi, &["-L"], |out| {
            out.lines()
                .filter(|l| l.starts_with("GPU "))
                .map(str::to_owned)
                .collect()
        }, |inside, outside| {
            if !inside.is_empty() {
                (true, format!(
                    "the driver answers in the container: {} of the node's {} GPU(s) visible ({count} in the fingerprint)",
                    inside.len(),
                    outside.len()
                ))
            } else {
                (false, "no GPU visible in the container (nvidia-smi -L listed none)".into())
            }
        });
    }

    /// Runs a host tool inside (bound in) and outside, and judges the two
    /// lists its output gives.
    fn functional_tool(
        &self,
        report: &mut Report,
        tool: &Path,
        args: &[&str],
        list: impl Fn(&str) -> Vec<String>,
        judge: impl Fn(&[String], &[String]) -> (bool, String),
    ) {
        let name = tool
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let inside = format!("{VERIFY_DIR}/bin/{name}");
        let libs = match mpi::launcher_libraries(&[tool.to_owned()], &self.provided(), self.work) {
            Ok(l) => l,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let mut env = vec![];
        if !libs.is_empty() {
            env.push(("LD_LIBRARY_PATH".to_owned(), format!("{VERIFY_DIR}/lib")));
        }
        let mut binds = vec![Bind {
            source: tool.to_owned(),
            destination: inside.clone().into(),
        }];
        binds.extend(libs);
        let mut argv = vec![inside];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut bare_argv = vec![tool.display().to_string()];
        bare_argv.extend(args.iter().map(|a| (*a).to_owned()));
        report.program = Some(Program {
            source: "hpcc".into(),
            container: argv.clone(),
            bare_metal: Some(bare_argv.clone()),
            launcher: None,
        });
        let edits = Edits {
            args: argv,
            env,
            binds,
            tmp: false,
        };
        let b = match self.bare(&bare_argv, &[], 0) {
            Ok(r) if r.ok() => r,
            Ok(r) => {
                return did_not_run(
                    report,
                    format!("{name} fails on bare metal: {}", r.failure()),
                )
            }
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let bundle = match self.bundle(&edits) {
            Ok(b) => b,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        let r = match self
            .runtime
            .run(&bundle, &self.id(0), self.work, self.deadline)
        {
            Ok(r) => r,
            Err(e) => return did_not_run(report, e.to_string()),
        };
        if r.interrupted {
            return did_not_run(report, "interrupted".into());
        }
        let outside = list(&b.stdout);
        let inside = if r.ok() { list(&r.stdout) } else { vec![] };
        let mut m = measured(1);
        if report.check == report::CheckKind::Libfabric {
            m.providers = Some(inside.clone());
            m.bare_metal_providers = Some(outside.clone());
        }
        if !r.ok() {
            return functional(
                report,
                m,
                false,
                format!("{name} fails in the container: {}", r.failure()),
            );
        }
        let (ok, why) = judge(&inside, &outside);
        functional(report, m, ok, why);
    }
}

/// The provider names of `fi_info -l` (`tcp:`, `shm:`, each followed by
/// its version line).
pub fn providers(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.trim().strip_suffix(':'))
        .filter(|p| !p.is_empty() && p.len() < 64)
        .map(hpcc_common::text::escape)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fi_info_providers() {
        let out = "udp:\n    version: 118.10\ntcp:\n    version: 118.10\nshm:\n    version: 118.10\nofi_rxm:\n    version: 118.10\n";
        assert_eq!(providers(out), ["ofi_rxm", "shm", "tcp", "udp"]);
    }
}
