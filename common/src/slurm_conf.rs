//! slurm.conf as Slurm reads it, for the runtime's Slurm mode and for
//! `hpcc doctor` alike (oci.conf has the same syntax). One reader, so that
//! the doctor checks the configuration the runtime will see.
//!
//! What Slurm's own parser does and this one does too: `#` starts a
//! comment anywhere (`\#` is a literal `#`), a line ending in `\` goes on
//! with the next, keys are case-insensitive, a line holds one or more
//! `Key=Value` pairs (spaces around `=` allowed), a value is either a
//! `"quoted string"` (quotes removed, spaces kept) or a run of non-space
//! characters, the last of several settings of a key wins, and an
//! `Include FILE` line reads FILE in its place (a relative name from the
//! including file's directory). The rest of a `NodeName=`,
//! `PartitionName=`, `DownNodes=`, `FrontendName=` or `NodeSet=` line
//! describes that entry, not the whole cluster, and is left out.

use crate::io::ReadError;
use std::path::{Path, PathBuf};

/// Largest slurm.conf read, its includes counted.
pub const MAX_BYTES: u64 = 4 << 20;

/// Deepest `Include` nesting followed (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Keys whose line describes one entry: its other pairs are the entry's.
const ENTRY_KEYS: &[&str] = &[
    "NodeName",
    "PartitionName",
    "DownNodes",
    "FrontendName",
    "NodeSet",
];

/// slurm.conf could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SlurmConfError {
    /// The file itself (an unreadable `Include` is left out instead).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ReadError,
    },
}

/// The settings of a slurm.conf, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmConf {
    settings: Vec<(String, String)>,
}

impl SlurmConf {
    /// The settings of `text`; `Include` lines are left out (see [`read`]
    /// for a file with its includes).
    pub fn parse(text: &str) -> SlurmConf {
        let mut settings = Vec::new();
        for line in lines(text) {
            if include_target(&line).is_none() {
                pairs(&line, &mut settings);
            }
        }
        SlurmConf { settings }
    }

    /// The value of `key` (case-insensitive): the last setting wins, as in
    /// Slurm ("specified more than once, latest value used").
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Whether Slurm numbers a step's GPUs from 0 in `CUDA_VISIBLE_DEVICES`
/// and `GPU_DEVICE_ORDINAL` (its `use_local_device_index`): a cgroup task
/// plugin (`TaskPlugin` of slurm.conf names `cgroup`) and
/// `ConstrainDevices=yes` in cgroup.conf (`cgroup_conf`, same syntax).
/// `SLURM_STEP_GPUS` and `SLURM_JOB_GPUS` hold the node's device numbers
/// either way.
pub fn gpus_renumbered(slurm_conf: &str, cgroup_conf: &str) -> bool {
    let task_cgroup = SlurmConf::parse(slurm_conf)
        .get("TaskPlugin")
        .is_some_and(|t| t.split(',').any(|p| p.trim().contains("cgroup")));
    let constrain = SlurmConf::parse(cgroup_conf)
        .get("ConstrainDevices")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    task_cgroup && constrain
}

/// The text of the slurm.conf at `path` with its `Include` lines replaced
/// by the files they name, at most `limit` bytes read in all. An include
/// that cannot be read is left out: slurmd refuses to start on such a
/// configuration, so no step runs under one.
pub fn read(path: &Path, limit: u64) -> Result<String, SlurmConfError> {
    let text =
        crate::io::read_text_bounded(path, limit).map_err(|source| SlurmConfError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut left = limit.saturating_sub(text.len() as u64);
    let mut out = String::with_capacity(text.len());
    inline(path, &text, 0, &mut left, &mut out);
    Ok(out)
}

fn inline(path: &Path, text: &str, depth: usize, left: &mut u64, out: &mut String) {
    for line in lines(text) {
        let Some(target) = include_target(&line) else {
            out.push_str(&line);
            out.push('\n');
            continue;
        };
        if depth + 1 >= MAX_INCLUDE_DEPTH {
            continue;
        }
        let file = path.parent().unwrap_or(Path::new("/")).join(target);
        if let Ok(inc) = crate::io::read_text_bounded(&file, *left) {
            *left = left.saturating_sub(inc.len() as u64);
            inline(&file, &inc, depth + 1, left, out);
        }
    }
}

/// The logical lines of `text`: continuations joined, comments removed,
/// `\#` unescaped, trimmed, empty ones skipped.
fn lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let mut line = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'#') => {
                    line.push('#');
                    chars.next();
                }
                '#' => break,
                c => line.push(c),
            }
        }
        // A continuation is a `\` ending the line before any comment.
        let continued = raw.trim_end().ends_with('\\') && !raw.contains('#');
        if continued {
            line.truncate(line.trim_end().len() - 1);
        }
        cur.push_str(&line);
        if !continued {
            let l = cur.trim();
            if !l.is_empty() {
                out.push(l.to_owned());
            }
            cur.clear();
        }
    }
    let l = cur.trim();
    if !l.is_empty() {
        out.push(l.to_owned());
    }
    out
}

/// The file an `Include FILE` line names (the keyword is case-insensitive).
fn include_target(line: &str) -> Option<&str> {
    let (word, rest) = line.split_once(char::is_whitespace)?;
    word.eq_ignore_ascii_case("include")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The `Key=Value` pairs of one logical line, appended to `out`. A line
/// that does not parse ends at the first pair that does not.
fn pairs(line: &str, out: &mut Vec<(String, String)>) {
    let mut rest = line;
    let mut first = true;
    loop {
        rest = rest.trim_start();
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if key_len == 0 {
            return;
        }
        let key = &rest[..key_len];
        let Some(after) = rest[key_len..].trim_start().strip_prefix('=') else {
            return;
        };
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            },
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push((key.to_owned(), value.to_owned()));
        if first && ENTRY_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return;
        }
        first = false;
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_renumbered_only_under_task_cgroup_and_constrain_devices() {
        let slurm = "TaskPlugin=task/affinity,task/cgroup\n";
        assert!(gpus_renumbered(
            slurm,
            "ConstrainCores=yes\nConstrainDevices=yes\n"
        ));
        assert!(gpus_renumbered(slurm, "constraindevices = YES # comment\n"));
        assert!(!gpus_renumbered(slurm, "ConstrainDevices=no\n"));
        assert!(!gpus_renumbered(slurm, ""));
        assert!(!gpus_renumbered(
            "TaskPlugin=task/affinity\n",
            "ConstrainDevices=yes\n"
        ));
    }

    fn get(text: &str, key: &str) -> Option<String> {
        SlurmConf::parse(text).get(key).map(str::to_owned)
    }

    #[test]
    fn quotes_are_removed_and_keep_spaces() {
        // The runtime used to keep the quotes (a spool directory named
        // `"/var/spool/slurmd"`); the doctor removed them. Slurm removes
        // them.
        assert_eq!(
            get("SlurmdSpoolDir=\"/var/spool/slurmd\"\n", "SlurmdSpoolDir").as_deref(),
            Some("/var/spool/slurmd")
        );
        assert_eq!(
            get(
                "RunTimeRun=\"exec hpcc-runtime --hpcc-slurm run %n -b %b\"\n",
                "runtimerun"
            )
            .as_deref(),
            Some("exec hpcc-runtime --hpcc-slurm run %n -b %b")
        );
        // A quoted value followed by another pair.
        let c = SlurmConf::parse("TmpFS=\"/scratch/%n\" PluginDir=/usr/lib/slurm\n");
        assert_eq!(c.get("TmpFS"), Some("/scratch/%n"));
        assert_eq!(c.get("PluginDir"), Some("/usr/lib/slurm"));
        // An unquoted value ends at a space: the rest is the next pair.
        let c = SlurmConf::parse("SlurmdPort=6818 SlurmctldPort=6817\n");
        assert_eq!(c.get("SlurmdPort"), Some("6818"));
        assert_eq!(c.get("SlurmctldPort"), Some("6817"));
        // An unterminated quote runs to the end of the line.
        assert_eq!(get("TmpFS=\"/a b\n", "TmpFS").as_deref(), Some("/a b"));
        // Quotes inside a value are the value's.
        assert_eq!(get("TmpFS=/a\"b\n", "TmpFS").as_deref(), Some("/a\"b"));
    }

    #[test]
    fn comments_keys_and_repeats_are_as_slurm_reads_them() {
        let c = SlurmConf::parse(
            "# x\nSlurmdSpoolDir=/tmp/slurm/spool # c\n\
             slurmdspooldir = /var/spool/%n\n\
             ClusterName=a\\#b\n\
             TmpFS=\"/t # not a value\"\n",
        );
        assert_eq!(c.get("SLURMDSPOOLDIR"), Some("/var/spool/%n"));
        assert_eq!(c.get("ClusterName"), Some("a#b"));
        // `#` starts a comment even inside quotes, as in Slurm.
        assert_eq!(c.get("TmpFS"), Some("/t"));
        assert_eq!(c.get("PluginDir"), None);
    }

    #[test]
    fn continuations_and_entry_lines() {
        let c = SlurmConf::parse(
            "NodeName=n[1-4] CPUs=8 TmpDisk=100\n\
             PartitionName=debug Nodes=ALL Default=YES\n\
             PluginDir=/usr/lib/slurm:\\\n/opt/slurm/lib\n",
        );
        assert_eq!(c.get("NodeName"), Some("n[1-4]"));
        assert_eq!(c.get("CPUs"), None);
        assert_eq!(c.get("Nodes"), None);
        assert_eq!(c.get("PluginDir"), Some("/usr/lib/slurm:/opt/slurm/lib"));
    }

    #[test]
    fn includes_are_read_in_place() {
        let dir = std::env::temp_dir().join(format!("hpcc-slurmconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("slurm.conf"),
            "TmpFS=/first\ninclude conf.d/more.conf\nINCLUDE missing.conf\nPluginDir=/last\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/more.conf"),
            "TmpFS=\"/from include\"\nPluginDir=/inc\nInclude ../loop.conf\n",
        )
        .unwrap();
        // Includes itself: stops at the depth bound.
        std::fs::write(dir.join("loop.conf"), "Include loop.conf\nSlurmdPort=1\n").unwrap();
        let text = read(&dir.join("slurm.conf"), 1 << 20).unwrap();
        let c = SlurmConf::parse(&text);
        assert_eq!(c.get("TmpFS"), Some("/from include"));
        assert_eq!(c.get("PluginDir"), Some("/last"));
        assert_eq!(c.get("SlurmdPort"), Some("1"));
        assert!(matches!(
            read(&dir.join("nothing.conf"), 1 << 20),
            Err(SlurmConfError::Read { .. })
        ));
        // The byte bound covers the includes.
        let text = read(&dir.join("slurm.conf"), 80).unwrap();
        assert!(text.len() <= 80, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
