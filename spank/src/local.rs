//! srun, sbatch and salloc (the local and allocator contexts): the user's
//! `--hpcc` and `--hpcc-mpi` options, registered so that `srun --help`
//! lists them and validated at once, so a typo fails srun before any
//! node is touched.

use crate::args::UserOptions;
use crate::slurm::{self, Level, OptionSpec, Spank};
use std::os::raw::c_int;

const OPT_HPCC: c_int = 1;
const OPT_MPI: c_int = 2;

static OPTIONS: [OptionSpec; 2] = [
    OptionSpec {
        name: c"hpcc",
        arginfo: c"enforce|warn|off",
        usage: c"hpcc checks of a --container image against this node: enforce (refuse what cannot run), warn (start and log), off. Users may relax only as far as the site allows.",
        val: OPT_HPCC,
        cb: crate::option_cb,
    },
    OptionSpec {
        name: c"hpcc-mpi",
        arginfo: c"auto|replace|none",
        usage: c"host MPI for a --container image that allows mpi_replace: auto (replace when possible), replace (fail when impossible), none (keep the image's MPI).",
        val: OPT_MPI,
        cb: crate::option_cb,
    },
];

/// Slurm 22.05 runs one task per node in a `--container` step (its
/// container code fails the step on any node with more: "unexpected
/// number of tasks"). Checked in srun once the job has its nodes.
pub fn one_task_per_node(spank: &Spank) -> Result<(), TooManyTasks> {
    let container = std::env::var("SLURM_CONTAINER").is_ok_and(|c| !c.is_empty());
    if !container {
        return Ok(());
    }
    let (Some(tasks), Some(nodes)) = (
        spank.count(crate::ffi::S_JOB_TOTAL_TASK_COUNT),
        spank.count(crate::ffi::S_JOB_NNODES),
    ) else {
        return Ok(());
    };
    check_tasks_per_node(tasks, nodes)
}

/// A `--container` step with more tasks than nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hpcc: --container runs one task per node with this Slurm (22.05 fails the step otherwise): {tasks} tasks on {nodes} node(s); use --ntasks-per-node=1 (e.g. srun -N{tasks} --ntasks-per-node=1 ...)")]
pub struct TooManyTasks {
    /// Tasks of the step.
    pub tasks: u32,
    /// Its nodes.
    pub nodes: u32,
}

/// The rule itself.
pub fn check_tasks_per_node(tasks: u32, nodes: u32) -> Result<(), TooManyTasks> {
    if nodes == 0 || tasks <= nodes {
        return Ok(());
    }
    Err(TooManyTasks { tasks, nodes })
}

/// Registers the options (every context that parses them: srun, sbatch,
/// salloc, and slurmstepd, which receives their values).
pub fn register(spank: &Spank) -> Result<(), crate::slurm::RegisterError> {
    for opt in &OPTIONS {
        spank.register_option(opt)?;
    }
    Ok(())
}

/// Records one option value; a bad value is an error Slurm reports at once.
pub fn option(options: &mut UserOptions, val: c_int, value: &str) -> bool {
    let res = match val {
        OPT_HPCC => options.set_hpcc(value),
        OPT_MPI => options.set_mpi(value),
        _ => return false,
    };
    match res {
        Ok(()) => true,
        Err(e) => {
            slurm::log(Level::Error, &format!("hpcc: {e}"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_tasks_than_nodes_is_refused_with_the_fix() {
        assert!(check_tasks_per_node(2, 2).is_ok());
        assert!(check_tasks_per_node(1, 2).is_ok());
        let e = check_tasks_per_node(4, 2).unwrap_err().to_string();
        assert!(
            e.contains("--ntasks-per-node=1") && e.contains("4 tasks on 2 node"),
            "{e}"
        );
    }
}
