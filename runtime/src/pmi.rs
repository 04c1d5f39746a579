//! What an MPI rank in a `--container` step needs from Slurm, computed from
//! what the runtime is given (tests/setup/MPI-RIG.md has the measurements).
//!
//! slurmstepd sets the per-task PMI variables (`PMI_FD`, `PMI_RANK`,
//! `PMIX_*`, ...) in the task's environment, but `--container` builds the
//! container's `process.env` from the step's environment, without them.
//! `hpcc_spank.so` copies them into the runtime's environment in
//! `slurm_spank_task_init`: those values are Slurm's own and are used when
//! present. Without the plugin, the PMI-2 rank is computed from the step's
//! node list and `SLURM_PMI2_PROC_MAPPING`; PMIx cannot be wired then.

/// Most hosts a node list may expand to.
pub const MAX_HOSTS: usize = 65_536;

/// Input the PMI wiring cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PmiError {
    /// A malformed Slurm host list.
    #[error("SLURM_STEP_NODELIST={0:?} is not a Slurm host list")]
    HostList(String),
    /// A host list over [`MAX_HOSTS`].
    #[error("SLURM_STEP_NODELIST expands to more than {MAX_HOSTS} hosts")]
    TooManyHosts,
    /// A malformed process mapping.
    #[error("SLURM_PMI2_PROC_MAPPING={0:?} is not a Slurm process mapping")]
    Mapping(String),
    /// This node is not in the step's node list.
    #[error("node {node} is not in the step's node list ({list})")]
    NotInStep {
        /// This node.
        node: String,
        /// The list.
        list: String,
    },
    /// The mapping places no rank on this node.
    #[error("the step's process mapping places no task on node {node} (index {index})")]
    NoRank {
        /// This node.
        node: String,
        /// Its index in the node list.
        index: usize,
    },
}

/// Expands a Slurm host list (`n[1-2]`, `x[007-009,12],y`, `a,b`),
/// keeping zero padding, bounded by [`MAX_HOSTS`].
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, PmiError> {
    let bad = || PmiError::HostList(list.chars().take(256).collect());
    let mut out = Vec::new();
    for item in split_top(list).map_err(|_| bad())? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some(open) = item.find('[') else {
            out.push(item.to_owned());
            continue;
        };
        let close = item.rfind(']').ok_or_else(bad)?;
        if close < open || item[open + 1..close].contains('[') {
            return Err(bad());
        }
        let (prefix, ranges, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
        for r in ranges.split(',') {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            let width = lo.len();
            let (a, b): (u64, u64) = (
                lo.parse().map_err(|_| bad())?,
                hi.parse().map_err(|_| bad())?,
            );
            if b < a || (b - a) as usize >= MAX_HOSTS {
                return Err(bad());
            }
            for n in a..=b {
                if out.len() >= MAX_HOSTS {
                    return Err(PmiError::TooManyHosts);
                }
                out.push(format!("{prefix}{n:0width$}{suffix}"));
            }
        }
    }
    Ok(out)
}

/// Splits at commas outside brackets.
fn split_top(s: &str) -> Result<Vec<&str>, ()> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(());
        }
    }
    if depth != 0 {
        return Err(());
    }
    out.push(&s[start..]);
    Ok(out)
}

/// One `(start, nnodes, ppn)` block of a process mapping.
pub type Block = (usize, usize, usize);

/// Parses `(vector,(0,2,1),(0,2,1))`.
pub fn parse_mapping(s: &str) -> Result<Vec<Block>, PmiError> {
    let bad = || PmiError::Mapping(s.chars().take(256).collect());
    let inner = s
        .trim()
        .strip_prefix("(vector,")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let mut blocks = Vec::new();
    for part in inner.split("),") {
        let t = part.trim().trim_start_matches('(').trim_end_matches(')');
        let n: Vec<usize> = t
            .split(',')
            .map(|x| x.trim().parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [start, nnodes, ppn] = n[..] else {
            return Err(bad());
        };
        if nnodes == 0 || ppn == 0 || nnodes > MAX_HOSTS || ppn > MAX_HOSTS {
            return Err(bad());
        }
        blocks.push((start, nnodes, ppn));
        if blocks.len() > MAX_HOSTS {
            return Err(bad());
        }
    }
    if blocks.is_empty() {
        return Err(bad());
    }
    Ok(blocks)
}

/// The first rank the mapping places on node `index`: the blocks are
/// walked in order, and again, until `ntasks` ranks are placed (Slurm's
/// own rule for `SLURM_PMI2_PROC_MAPPING`).
pub fn first_rank(blocks: &[Block], index: usize, ntasks: usize) -> Option<usize> {
    let mut rank = 0;
    while rank < ntasks {
        let before = rank;
        for &(start, nnodes, ppn) in blocks {
            for node in start..start.saturating_add(nnodes) {
                if rank >= ntasks {
                    return None;
                }
                if node == index {
                    return Some(rank);
                }
                rank += ppn.min(ntasks - rank);
            }
        }
        if rank == before {
            return None;
        }
    }
    None
}

/// This node's PMI-2 rank from the step's variables.
pub fn pmi2_rank(
    node: &str,
    nodelist: &str,
    mapping: &str,
    ntasks: usize,
) -> Result<usize, PmiError> {
    let hosts = expand_hostlist(nodelist)?;
    let index = hosts
        .iter()
        .position(|h| h == node)
        .ok_or_else(|| PmiError::NotInStep {
            node: node.to_owned(),
            list: nodelist.chars().take(256).collect(),
        })?;
    let blocks = parse_mapping(mapping)?;
    first_rank(&blocks, index, ntasks).ok_or(PmiError::NoRank {
        node: node.to_owned(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_expand_as_slurm_writes_them() {
        assert_eq!(expand_hostlist("n[1-2]").unwrap(), ["n1", "n2"]);
        assert_eq!(
            expand_hostlist("x[007-009,12],y").unwrap(),
            ["x007", "x008", "x009", "x12", "y"]
        );
        assert_eq!(expand_hostlist("a,b").unwrap(), ["a", "b"]);
        assert_eq!(
            expand_hostlist("node-[1-2]-ib").unwrap(),
            ["node-1-ib", "node-2-ib"]
        );
        for bad in ["n[1-", "n[2-1]", "n[[1]]", "n]1[", "n[a-b]"] {
            assert!(expand_hostlist(bad).is_err(), "{bad}");
        }
        assert!(expand_hostlist("n[0-9999999999]").is_err());
        assert_eq!(
            expand_hostlist("a[0-40000],b[0-40000]"),
            Err(PmiError::TooManyHosts)
        );
    }

    #[test]
    fn ranks_from_the_mappings_seen_on_the_rig() {
        // -N2 --ntasks-per-node=1
        let m = parse_mapping("(vector,(0,2,1))").unwrap();
        assert_eq!(first_rank(&m, 0, 2), Some(0));
        assert_eq!(first_rank(&m, 1, 2), Some(1));
        // -N2 -n4 -m block: n1 0,1; n2 2,3
        let m = parse_mapping("(vector,(0,2,2))").unwrap();
        assert_eq!(first_rank(&m, 1, 4), Some(2));
        // -m cyclic: n1 0,2; n2 1,3
        let m = parse_mapping("(vector,(0,2,1),(0,2,1))").unwrap();
        assert_eq!(first_rank(&m, 1, 4), Some(1));
        // -N2 -n3: n1 0,1; n2 2
        let m = parse_mapping("(vector,(0,1,2),(1,1,1))").unwrap();
        assert_eq!(first_rank(&m, 1, 3), Some(2));
        assert_eq!(first_rank(&m, 2, 3), None);
        assert_eq!(pmi2_rank("n2", "n[1-2]", "(vector,(0,2,1))", 2).unwrap(), 1);
        assert!(matches!(
            pmi2_rank("n3", "n[1-2]", "(vector,(0,2,1))", 2),
            Err(PmiError::NotInStep { .. })
        ));
        for bad in [
            "",
            "(vector)",
            "(vector,(0,2))",
            "(vector,(0,0,1))",
            "vector,(0,2,1)",
        ] {
            assert!(parse_mapping(bad).is_err(), "{bad}");
        }
    }
}
