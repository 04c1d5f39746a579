//! `hpcc match --fleet DIR`: one image scored against every node class of
//! a site, from fingerprints saved with `hpcc fingerprint --json` (one
//! file per node or per class). Nodes whose published features
//! (`hpcc_common::node_features`) are the same form one class.

use super::CliError;
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::matcher::{Level, Score, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most fingerprint files read from a fleet directory.
pub const MAX_FILES: usize = 4096;
/// Largest fingerprint file.
const MAX_BYTES: u64 = 16 << 20;

/// Nodes with the same features.
#[derive(Debug, Clone)]
pub struct Class {
    /// The first member's name (its file name without `.json`).
    pub name: String,
    /// Every member's name.
    pub members: Vec<String>,
    /// The first member's fingerprint file and fingerprint.
    pub file: PathBuf,
    /// Its fingerprint.
    pub node: NodeFingerprint,
}

/// The fleet's classes, from the `*.json` files of `dir` (sorted by name).
pub fn load(dir: &Path) -> Result<Vec<Class>, CliError> {
    let read_err = |source| CliError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    if files.len() > MAX_FILES {
        return Err(CliError::Usage(format!(
            "--fleet {}: {} fingerprint files, at most {MAX_FILES} are read",
            dir.display(),
            files.len()
        )));
    }
    if files.is_empty() {
        return Err(CliError::Usage(format!(
            "--fleet {}: no fingerprint (*.json from `hpcc fingerprint --json`) in it",
            dir.display()
        )));
    }
    let mut classes: BTreeMap<Vec<String>, Class> = BTreeMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    for f in files {
        let text =
            hpcc_common::io::read_text_bounded(&f, MAX_BYTES).map_err(|e| CliError::Read {
                path: f.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let node: NodeFingerprint =
            serde_json::from_str(&text).map_err(|source| CliError::Fingerprint {
                path: f.clone(),
                source,
            })?;
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = hpcc_common::node_features::of(&node);
        match classes.get_mut(&key) {
            Some(c) => c.members.push(name),
            None => {
                order.push(key.clone());
                classes.insert(
                    key,
                    Class {
                        name: name.clone(),
                        members: vec![name],
                        file: f,
                        node,
                    },
                );
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| classes.remove(&k))
        .collect())
}

/// One class's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The class's name.
    pub class: String,
    /// How many nodes.
    pub nodes: usize,
    /// Its members.
    pub members: Vec<String>,
    /// `green`, `orange` or `red`.
    pub score: &'static str,
    /// The policy refuses the image there.
    pub refused: bool,
    /// The main reason: the first finding of the worst level.
    pub reason: String,
}

/// The row of `class` for a verdict (and whether the policy refuses).
pub fn row(class: &Class, verdict: &Verdict, refused: bool) -> Row {
    let worst = [Level::Fatal, Level::Degraded, Level::Ok]
        .into_iter()
        .find_map(|l| verdict.with_level(l).next());
    Row {
        class: class.name.clone(),
        nodes: class.members.len(),
        members: class.members.clone(),
        score: if refused {
            Score::Red.as_str()
        } else {
            verdict.score().as_str()
        },
        refused,
        reason: worst.map_or_else(
            || "nothing to check".to_owned(),
            |f| hpcc_common::text::escape(&f.reason),
        ),
    }
}

/// `hpcc match --fleet`'s exit code: 0 when some class runs the image
/// green, 1 when the best is orange, 2 when no class can run it.
pub fn exit_code(rows: &[Row]) -> i32 {
    if rows.iter().any(|r| r.score == "green") {
        0
    } else if rows.iter().any(|r| r.score == "orange") {
        1
    } else {
        2
    }
}

/// The table: one row per class.
pub fn table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.class.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<w$}  {:>5}  {:<6}  reason\n", "class", "nodes", "score");
    for r in rows {
        out.push_str(&format!(
            "{:<w$}  {:>5}  {:<6}  {}\n",
            r.class,
            r.nodes,
            r.score.to_uppercase(),
            r.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_common::matcher::{Check, Finding};

    fn write(dir: &Path, name: &str, micro: &str) {
        let mut n = NodeFingerprint::take(&hpcc_config::Policy::default());
        n.cpu.microarchitecture = micro.to_owned();
        n.hostname = name.to_owned();
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string(&n).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn nodes_with_the_same_features_are_one_class() {
        let d = std::env::temp_dir().join(format!("hpcc-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        write(&d, "n001", "zen3");
        write(&d, "n002", "zen3");
        write(&d, "g001", "icelake");
        std::fs::write(d.join("README"), "not a fingerprint").unwrap();
        let classes = load(&d).unwrap();
        assert_eq!(classes.len(), 2, "{classes:?}");
        assert_eq!(classes[0].name, "g001");
        assert_eq!(classes[1].members, ["n001", "n002"]);
        std::fs::write(d.join("bad.json"), "{").unwrap();
        assert!(matches!(load(&d), Err(CliError::Fingerprint { .. })));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(load(&d).is_err());
    }

    #[test]
    fn rows_name_the_worst_finding_and_the_exit_code_the_best_class() {
        let class = Class {
            name: "old".into(),
            members: vec!["a".into(), "b".into()],
            file: PathBuf::from("a.json"),
            node: NodeFingerprint::take(&hpcc_config::Policy::default()),
        };
        let mut v = Verdict::default();
        v.push(Finding::new(Check::Cpu, Level::Fatal, "lacks avx512f"));
        v.push(Finding::new(Check::Mpi, Level::Degraded, "no host MPI"));
        let red = row(&class, &v, false);
        assert_eq!((red.score, red.nodes), ("red", 2));
        assert_eq!(red.reason, "lacks avx512f");
        let ok = row(&class, &Verdict::default(), false);
        assert_eq!(ok.score, "green");
        assert_eq!(exit_code(&[red.clone(), ok.clone()]), 0);
        assert_eq!(exit_code(std::slice::from_ref(&red)), 2);
        assert_eq!(row(&class, &Verdict::default(), true).score, "red");
        let t = table(&[red, ok]);
        assert!(t.lines().nth(1).unwrap().contains("RED"), "{t}");
    }
}
