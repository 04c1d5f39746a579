//! Placement before allocation: `hpcc match --slurm-constraint`,
//! `--k8s-affinity` and `--submit` (what `cli_filter.lua` calls for
//! `sbatch/srun/salloc --container=B`).
//!
//! The node classes are the saved fingerprints of the fleet directory
//! (`[scheduling] fleet`, one `NODE.json` per node, the file name being the
//! Slurm node name): only a full fingerprint can be scored with the same
//! matcher as the launch. With `--sinfo` (implied by `--partition` and
//! `--submit`), one bounded `sinfo` call says which nodes form the
//! partition and which features each publishes: the classes are cut down
//! to the partition's nodes, and the constraint (the user's included) is
//! checked against what the nodes really publish, since Slurm places by
//! published features, not by fingerprints.

use super::constraint::{self, ClassFeatures, Expr};
use super::fleet::{Class, Row};
use super::CliError;
use hpcc_common::text::escape;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Largest `sinfo` output read.
const MAX_SINFO_BYTES: u64 = 16 << 20;
/// Most node lines read from `sinfo`.
const MAX_SINFO_LINES: usize = 200_000;

/// One node as `sinfo -N` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmNode {
    /// Its partitions.
    pub partitions: BTreeSet<String>,
    /// The default partition is among them.
    pub in_default: bool,
    /// What it publishes (`AvailableFeatures`).
    pub features: BTreeSet<String>,
}

/// The nodes `sinfo` lists, by name.
pub type SlurmNodes = BTreeMap<String, SlurmNode>;

/// Reads `sinfo -h -N -o '%N|%P|%f'` (a line per node and partition, the
/// default partition marked `*`, features comma-separated or `(null)`).
pub fn parse_sinfo(text: &str) -> SlurmNodes {
    let mut nodes = SlurmNodes::new();
    for line in text.lines().take(MAX_SINFO_LINES) {
        let mut f = line.trim().splitn(3, '|');
        let (Some(name), Some(part), Some(feats)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let n = nodes.entry(name.to_owned()).or_default();
        let (part, default) = match part.strip_suffix('*') {
            Some(p) => (p, true),
            None => (part, false),
        };
        n.in_default |= default;
        n.partitions.insert(part.to_owned());
        n.features.extend(
            feats
                .split(',')
                .filter(|s| !s.is_empty() && *s != "(null)")
                .map(str::to_owned),
        );
    }
    nodes
}

/// Runs `sinfo` (from `PATH`, with the caller's `SLURM_CONF`), killed past
/// `timeout`.
pub fn sinfo(timeout: Duration) -> Result<SlurmNodes, CliError> {
    sinfo_cached(timeout, Duration::ZERO)
}

/// [`sinfo`], through a per-user cache of its answer that lives `ttl`
/// (`[scheduling] sinfo_cache_s`; zero: none) in `$XDG_RUNTIME_DIR/hpcc/`,
/// keyed by `SLURM_CONF`: the slurmctld round trip is most of what the
/// filter adds to a submission, and a burst of submissions asks the same.
/// The cache is the submitting user's own (owned by them, written by
/// nobody else): it can only steer their own jobs, which the filter, a
/// client-side check, cannot hold anyway; the nodes check at launch.
pub fn sinfo_cached(timeout: Duration, ttl: Duration) -> Result<SlurmNodes, CliError> {
    let path = (!ttl.is_zero()).then(cache_path).flatten();
    if let Some(text) = path.as_deref().and_then(|p| read_fresh(p, ttl)) {
        return Ok(parse_sinfo(&text));
    }
    let mut cmd = Command::new("sinfo");
    cmd.args(["-h", "-N", "-o", "%N|%P|%f"]);
    let out = bounded_output(cmd, timeout)
        .map_err(|m| CliError::Usage(format!("sinfo: {m} (policy scheduling.timeout_ms)")))?;
    if let Some(p) = path {
        // A cache that cannot be written only costs the next call the round trip.
        let _ = write_cache(&p, &out);
    }
    Ok(parse_sinfo(&out))
}

fn cache_path() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())?;
    // FNV-1a of SLURM_CONF: one cache per cluster configuration.
    let conf = std::env::var("SLURM_CONF").unwrap_or_default();
    let key = conf.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Some(
        std::path::Path::new(&dir)
            .join("hpcc")
            .join(format!("sinfo-{key:016x}.txt")),
    )
}

/// The cache's text when it is the user's own, nobody else can write it,
/// and it is younger than `ttl`.
pub fn read_fresh(path: &std::path::Path, ttl: Duration) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::open(path).ok()?;
    let m = f.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.uid() != me || m.mode() & 0o022 != 0 {
        return None;
    }
    if m.modified().ok()?.elapsed().ok()? > ttl {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_SINFO_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Writes the cache atomically (a private temporary file renamed).
pub fn write_cache(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".sinfo-{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Runs a Slurm client command with the caller's environment (it needs
/// `SLURM_CONF`), killed past `timeout`; its stdout (bounded), or why not.
pub fn bounded_output(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    // The output is small; a reader thread keeps the pipe from filling
    // while the deadline is watched here.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(MAX_SINFO_BYTES).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} ms", timeout.as_millis()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = (&mut e).take(4096).read_to_end(&mut err);
        }
        return Err(format!(
            "{status}: {}",
            escape(String::from_utf8_lossy(&err).trim())
        ));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What the placement is computed for.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// How the image is named in messages.
    pub image: &'a str,
    /// The partitions asked for (`None`: the default partition).
    pub partitions: Option<Vec<String>>,
    /// The user's own `--constraint`.
    pub user: Option<&'a str>,
}

/// The answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    /// The expression to give Slurm (the user's combined with hpcc's), or
    /// `None` when the job is refused.
    pub constraint: Option<String>,
    /// hpcc's part alone.
    pub hpcc: Option<String>,
    /// Its conjunctions (for Kubernetes).
    #[serde(skip)]
    pub terms: Vec<Vec<String>>,
    /// Why it is refused: one line naming the image, the partition and
    /// what is missing.
    pub refusal: Option<String>,
    /// Notes (nodes without a fingerprint, classes features cannot single out).
    pub notes: Vec<String>,
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// Keeps the classes (and their rows) whose members are in the requested
/// partitions, members cut to those nodes; returns the partition's name
/// for messages.
pub fn restrict(
    classes: &mut Vec<Class>,
    rows: &mut Vec<Row>,
    nodes: &SlurmNodes,
    partitions: Option<&[String]>,
) -> String {
    let in_part = |n: &SlurmNode| match partitions {
        Some(ps) => ps.iter().any(|p| n.partitions.contains(p)),
        None => n.in_default,
    };
    // A fleet file is a node (its name is the node's) or a class (one
    // file for many nodes): a node of the partition that no file names
    // belongs to the class whose features it publishes.
    let named: BTreeSet<&str> = classes
        .iter()
        .flat_map(|c| c.members.iter().map(String::as_str))
        .filter(|m| nodes.contains_key(*m))
        .collect();
    let hpcc_of = |f: &BTreeSet<String>| -> BTreeSet<String> {
        f.iter()
            .filter(|x| x.starts_with(hpcc_common::node_features::PREFIX))
            .cloned()
            .collect()
    };
    let unnamed: Vec<(&String, BTreeSet<String>)> = nodes
        .iter()
        .filter(|(name, n)| in_part(n) && !named.contains(name.as_str()))
        .map(|(name, n)| (name, hpcc_of(&n.features)))
        .collect();
    let mut keep_c = Vec::new();
    let mut keep_r = Vec::new();
    for (mut c, mut r) in classes.drain(..).zip(rows.drain(..)) {
        c.members.retain(|m| nodes.get(m).is_some_and(&in_part));
        let features: BTreeSet<String> = hpcc_common::node_features::of(&c.node)
            .into_iter()
            .collect();
        for (name, published) in &unnamed {
            if !published.is_empty() && *published == features && !c.members.contains(name) {
                c.members.push((*name).clone());
            }
        }
        if !c.members.is_empty() {
            r.members = c.members.clone();
            r.nodes = c.members.len();
            keep_c.push(c);
            keep_r.push(r);
        }
    }
    *classes = keep_c;
    *rows = keep_r;
    match partitions {
        Some(ps) => ps.join(","),
        None => {
            let mut d: BTreeSet<&str> = BTreeSet::new();
            for n in nodes.values().filter(|n| n.in_default) {
                d.extend(n.partitions.iter().map(String::as_str));
            }
            // A node of the default partition may be in others too: the
            // default is the partition every such node shares.
            let names: Vec<&str> = d
                .into_iter()
                .filter(|p| {
                    nodes
                        .values()
                        .filter(|n| n.in_default)
                        .all(|n| n.partitions.contains(*p))
                })
                .collect();
            names
                .first()
                .map_or("(default)".to_owned(), |p| p.to_string())
        }
    }
}

/// The placement of an image over `classes` (already cut to the
/// partition) with their `rows`; `nodes`: what `sinfo` said, when asked.
pub fn place(
    req: &Request,
    classes: &[Class],
    rows: &[Row],
    nodes: Option<&SlurmNodes>,
    partition: &str,
) -> Result<Placement, CliError> {
    let user = req
        .user
        .map(|u| {
            Expr::parse(u).map_err(|e| CliError::Usage(format!("--constraint {}: {e}", quoted(u))))
        })
        .transpose()?;
    let mut notes = Vec::new();
    let mut known: Vec<ClassFeatures> = classes
        .iter()
        .zip(rows)
        .map(|(c, r)| ClassFeatures {
            features: hpcc_common::node_features::of(&c.node)
                .into_iter()
                .collect(),
            runs: r.score != "red" && !r.refused,
        })
        .collect();
    // The partition's nodes without a saved fingerprint: hpcc cannot say
    // what they run, so the constraint must leave them out.
    let in_part = |n: &SlurmNode| match &req.partitions {
        Some(ps) => ps.iter().any(|p| n.partitions.contains(p)),
        None => n.in_default,
    };
    let members: BTreeSet<&str> = classes
        .iter()
        .flat_map(|c| c.members.iter().map(String::as_str))
        .collect();
    if let Some(nodes) = nodes {
        let unknown: Vec<&String> = nodes
            .iter()
            .filter(|(name, n)| in_part(n) && !members.contains(name.as_str()))
            .map(|(name, _)| name)
            .collect();
        for name in &unknown {
            let f = &nodes[*name].features;
            if !known.iter().any(|k| &k.features == f) {
                known.push(ClassFeatures {
                    features: f.clone(),
                    runs: false,
                });
            }
        }
        if !unknown.is_empty() {
            notes.push(format!(
                "{} node(s) of the partition have no fingerprint in the fleet and are left out: {}",
                unknown.len(),
                unknown
                    .iter()
                    .take(8)
                    .map(|s| escape(s))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    let refuse = |line: String, notes: Vec<String>| Placement {
        constraint: None,
        hpcc: None,
        terms: Vec::new(),
        refusal: Some(line),
        notes,
    };
    let head = format!(
        "image {} cannot run on any node of partition {}",
        quoted(req.image),
        quoted(partition)
    );
    if let Some(nodes) = nodes {
        if !nodes.values().any(&in_part) {
            // No such partition (or an empty one): Slurm's own refusal
            // names it better than hpcc could.
            notes.push(format!(
                "partition {} has no node: left to Slurm",
                quoted(partition)
            ));
            return Ok(Placement {
                constraint: req.user.map(str::to_owned),
                hpcc: None,
                terms: Vec::new(),
                refusal: None,
                notes,
            });
        }
    }
    if classes.is_empty() {
        return Ok(refuse(
            format!("{head}: no node of it has a saved fingerprint (hpcc-node-features.service, docs/slurm.md \"Scheduling\")"),
            notes,
        ));
    }
    let running: Vec<&Row> = rows
        .iter()
        .filter(|r| r.score != "red" && !r.refused)
        .collect();
    if running.is_empty() {
        // Classes refused for the same reason are named once.
        let mut why: Vec<(String, Vec<String>)> = Vec::new();
        for r in rows {
            match why.iter_mut().find(|(reason, _)| *reason == r.reason) {
                Some((_, who)) => who.extend(r.members.iter().map(|m| escape(m))),
                None => why.push((
                    r.reason.clone(),
                    r.members.iter().map(|m| escape(m)).collect(),
                )),
            }
        }
        let why: Vec<String> = why
            .iter()
            .take(4)
            .map(|(reason, who)| {
                let shown: Vec<&str> = who.iter().take(8).map(String::as_str).collect();
                let more = if who.len() > shown.len() { ",..." } else { "" };
                format!("{reason} ({}{more})", shown.join(","))
            })
            .collect();
        return Ok(refuse(format!("{head}: {}", why.join("; ")), notes));
    }
    let terms = constraint::derive(&known);
    if terms.is_empty() {
        return Ok(refuse(
            format!(
                "{head} that a --constraint can select: the nodes that run it ({}) publish no feature the others lack",
                running.iter().map(|r| escape(&r.class)).collect::<Vec<_>>().join(", ")
            ),
            notes,
        ));
    }
    let ours = constraint::slurm(&terms);
    let combined = match req.user {
        Some(u) => constraint::combine(u, &ours),
        None => ours.clone(),
    };
    // Check against what the nodes publish: Slurm places by that.
    let published: Vec<(&String, &BTreeSet<String>)> = match nodes {
        Some(nodes) => nodes
            .iter()
            .filter(|(_, n)| in_part(n))
            .map(|(k, n)| (k, &n.features))
            .collect(),
        None => Vec::new(),
    };
    let ours_expr = Expr::parse(&ours).map_err(|e| CliError::Usage(e.to_string()))?;
    if nodes.is_some() {
        let ours_ok: Vec<&String> = published
            .iter()
            .filter(|(_, f)| ours_expr.matches(f))
            .map(|(n, _)| *n)
            .collect();
        if ours_ok.is_empty() {
            return Ok(refuse(
                format!(
                    "{head}: the nodes that run it ({}) do not publish the features {} (scontrol show node; hpcc doctor)",
                    running.iter().map(|r| escape(&r.class)).collect::<Vec<_>>().join(", "),
                    quoted(&ours)
                ),
                notes,
            ));
        }
        if let Some(u) = user.as_ref().filter(|u| !u.set_wide) {
            if !published
                .iter()
                .any(|(_, f)| ours_expr.matches(f) && u.matches(f))
            {
                return Ok(refuse(
                    format!(
                        "image {} needs {} but --constraint {} excludes every node of partition {} that has it ({})",
                        quoted(req.image),
                        quoted(&ours),
                        quoted(req.user.unwrap_or_default()),
                        quoted(partition),
                        ours_ok.iter().take(8).map(|s| escape(s)).collect::<Vec<_>>().join(",")
                    ),
                    notes,
                ));
            }
        }
    } else if let Some(u) = user.as_ref().filter(|u| !u.set_wide) {
        if !known.iter().any(|k| k.runs && u.matches(&k.features)) {
            return Ok(refuse(
                format!(
                    "image {} needs {} but --constraint {} excludes every node class that has it",
                    quoted(req.image),
                    quoted(&ours),
                    quoted(req.user.unwrap_or_default())
                ),
                notes,
            ));
        }
    }
    Ok(Placement {
        constraint: Some(combined),
        hpcc: Some(ours),
        terms,
        refusal: None,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinfo_cache_is_read_only_fresh_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("hpcc-sinfo-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let p = d.join("hpcc").join("sinfo-x.txt");
        write_cache(&p, "n1|all*|a\n").unwrap();
        let ttl = Duration::from_secs(30);
        assert_eq!(read_fresh(&p, ttl).as_deref(), Some("n1|all*|a\n"));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(read_fresh(&p, Duration::from_millis(10)), None, "stale");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(read_fresh(&p, ttl), None, "writable by others");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_class_file_stands_for_the_nodes_that_publish_its_features() {
        use hpcc_common::fingerprint::NodeFingerprint;
        let node = NodeFingerprint::take(&hpcc_config::Policy::default());
        let feats = hpcc_common::node_features::slurm(&node);
        let class = Class {
            name: "big-class".into(),
            members: vec!["big-class".into()],
            file: "big-class.json".into(),
            node,
        };
        let row = crate::fleet::row(&class, &hpcc_common::matcher::Verdict::default(), false);
        let nodes = parse_sinfo(&format!(
            "a1|all*|site.x,{feats}\na2|all*|{feats}\nb1|all*|hpcc.cpu.x86_64\nc1|other|{feats}\n"
        ));
        let (mut classes, mut rows) = (vec![class], vec![row]);
        let part = restrict(&mut classes, &mut rows, &nodes, None);
        assert_eq!(part, "all");
        assert_eq!(classes[0].members, ["a1", "a2"]);
        assert_eq!(rows[0].nodes, 2);
    }

    #[test]
    fn sinfo_lines_give_partitions_default_and_features() {
        let n = parse_sinfo(
            "n1|all*|hpcc.cpu.x86_64,hpcc.cpu.x86_64_v3\nn1|gpu|hpcc.cpu.x86_64,hpcc.cpu.x86_64_v3\nn2|all*|(null)\nbroken\n",
        );
        assert_eq!(n.len(), 2);
        assert!(n["n1"].in_default && n["n1"].partitions.contains("gpu"));
        assert_eq!(n["n1"].features.len(), 2);
        assert!(n["n2"].features.is_empty());
    }
}
