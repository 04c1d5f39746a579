//! Human-readable rendering of fingerprints, verdicts and plans for the
//! `hpcc` CLI (the entry points' refusal lines come from
//! `launch::refusal_line`, the SPANK plugin's log line from its `step`).

use crate::fingerprint::NodeFingerprint;
use crate::matcher::{Level, Score, Verdict};
use crate::plan::{Decision, NamespaceEdit, Plan};
use std::fmt::Write;

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `GREEN`/`ORANGE`/`RED`, coloured when `color`.
pub fn score(s: Score, color: bool) -> String {
    let (t, c) = match s {
        Score::Green => ("GREEN", "1;32"),
        Score::Orange => ("ORANGE", "1;33"),
        Score::Red => ("RED", "1;31"),
    };
    paint(t, c, color)
}

fn level(l: Level, color: bool) -> String {
    match l {
        Level::Ok => paint("ok      ", "32", color),
        Level::Degraded => paint("degraded", "33", color),
        Level::Fatal => paint("fatal   ", "31", color),
    }
}

/// Text of the plan as printed: image text (paths, sonames, reasons that
/// quote them) can hold newlines and terminal escapes, so every field
/// goes through [`crate::text::escape`] here, whatever its source did.
fn e(x: impl std::fmt::Display) -> String {
    crate::text::escape(&x.to_string())
}

/// Score line and one line per finding with its evidence.
pub fn verdict(v: &Verdict, color: bool) -> String {
    let mut out = format!("score: {}\n", score(v.score(), color));
    for f in v.findings() {
        let _ = writeln!(
            out,
            "  {} {:<11} {}",
            level(f.level, color),
            f.check.as_str(),
            e(&f.reason)
        );
        if let Some(i) = &f.image {
            let _ = writeln!(out, "           {:<11} image: {}", "", e(i));
        }
        if let Some(n) = &f.node {
            let _ = writeln!(out, "           {:<11} node:  {}", "", e(n));
        }
    }
    out
}

/// Verdict, decision and tweaks.
pub fn plan(p: &Plan, color: bool) -> String {
    let mut out = verdict(&p.verdict, color);
    for n in &p.notes {
        let _ = writeln!(out, "note: {}", e(n));
    }
    match &p.decision {
        Decision::Start { warnings } => {
            let _ = writeln!(
                out,
                "decision: start container {} on {}",
                e(&p.container),
                e(&p.node)
            );
            for w in warnings {
                let _ = writeln!(out, "  warning: {}", e(w));
            }
        }
        Decision::Refuse { reasons } => {
            let _ = writeln!(
                out,
                "decision: {} container {} on {}",
                paint("REFUSE", "1;31", color),
                e(&p.container),
                e(&p.node)
            );
            for r in reasons {
                let _ = writeln!(out, "  refused by {}: {}", r.policy, e(&r.reason));
            }
        }
    }
    if !p.tweaks.is_empty() {
        let _ = writeln!(out, "tweaks:");
        for m in &p.tweaks.mounts {
            mount_line(&mut out, m);
        }
        for d in &p.tweaks.devices {
            let _ = writeln!(
                out,
                "  device {} ({} {}:{} {})  ({})",
                e(d.path.display()),
                d.kind,
                d.major,
                d.minor,
                if d.cgroup_rule {
                    d.access.as_str()
                } else {
                    "bound, no cgroup rule"
                },
                e(&d.reason)
            );
        }
        for v in &p.tweaks.env {
            let _ = writeln!(
                out,
                "  env    {}={}  ({})",
                e(&v.name),
                e(&v.value),
                e(&v.reason)
            );
        }
        for c in &p.tweaks.ld_cache {
            let _ = writeln!(
                out,
                "  ld.so  {} => {}  (container linker cache)",
                e(&c.soname),
                e(c.path.display())
            );
        }
    }
    if let Some(w) = &p.slurm {
        let _ = writeln!(out, "slurm step:");
        for m in &w.mounts {
            mount_line(&mut out, m);
        }
        for v in &w.env {
            let _ = writeln!(
                out,
                "  env    {}={}  ({})",
                e(&v.name),
                e(&v.value),
                e(&v.reason)
            );
        }
        for n in &w.namespaces {
            let _ = match n {
                NamespaceEdit::Share { namespace, why } => {
                    writeln!(out, "  ns     {namespace} namespace: {}", e(why))
                }
                NamespaceEdit::Bind {
                    destination,
                    kind,
                    source,
                    why,
                    ..
                } => writeln!(
                    out,
                    "  ns     {} ({kind}) -> bind of {}: {}",
                    e(destination.display()),
                    e(source.display()),
                    e(why)
                ),
                NamespaceEdit::Remove {
                    destination,
                    kind,
                    why,
                } => writeln!(
                    out,
                    "  ns     {} ({kind}): {}",
                    e(destination.display()),
                    e(why)
                ),
            };
        }
    }
    out
}

/// A node fingerprint for people.
/// One mount of the plan, as the tweaks and the Slurm step list them.
fn mount_line(out: &mut String, m: &crate::plan::Mount) {
    let _ = writeln!(
        out,
        "  mount  {} -> {}{}  ({})",
        e(m.source.display()),
        e(m.destination.display()),
        if m.readonly { " (ro)" } else { "" },
        e(&m.reason)
    );
}

pub fn fingerprint(fp: &NodeFingerprint) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node:      {}", fp.hostname);
    let _ = writeln!(
        out,
        "cpu:       {} ({}), {} / {}",
        fp.cpu.microarchitecture, fp.cpu.platform, fp.cpu.vendor, fp.cpu.model
    );
    let notable: Vec<&str> = fp
        .cpu
        .flags
        .iter()
        .map(String::as_str)
        .filter(|f| {
            f.starts_with("avx") || f.starts_with("amx") || f.starts_with("sve") || *f == "fma"
        })
        .collect();
    let _ = writeln!(
        out,
        "features:  {} flags; {}",
        fp.cpu.flags.len(),
        notable.join(" ")
    );
    let _ = writeln!(out, "kernel:    {}", fp.kernel.release);
    let _ = writeln!(
        out,
        "libc:      {} {}",
        fp.libc.implementation,
        fp.libc
            .version
            .as_ref()
            .map_or("?".into(), |v| v.to_string())
    );
    match &fp.gpu.nvidia {
        Some(nv) => {
            let _ = writeln!(
                out,
                "gpu:       NVIDIA driver {}, CUDA {}",
                nv.driver_version,
                nv.cuda_driver_version
                    .as_ref()
                    .map_or("?".into(), |v| v.to_string())
            );
            for d in &nv.devices {
                let _ = writeln!(
                    out,
                    "           #{} {} sm_{}{} {}",
                    d.index, d.name, d.compute_capability.0, d.compute_capability.1, d.uuid
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "gpu:       none ({})",
                fp.gpu.nvml_note.as_deref().unwrap_or("no NVIDIA GPU")
            );
        }
    }
    if fp.mpi.is_empty() {
        let _ = writeln!(out, "mpi:       none offered by the policy");
    }
    for m in &fp.mpi {
        let _ = writeln!(out, "mpi:       [{}] {} ABI", m.name, m.abi);
        for l in &m.libraries {
            let _ = writeln!(out, "           {}", lib(l));
        }
    }
    if let Some(l) = &fp.libfabric {
        let _ = writeln!(out, "libfabric: {}", lib(l));
    }
    for l in &fp.ucx {
        let _ = writeln!(out, "ucx:       {}", lib(l));
    }
    out
}

fn lib(l: &crate::fingerprint::HostLibrary) -> String {
    match (&l.error, &l.soname) {
        (Some(e), _) => format!("{} MISSING: {e}", l.path.display()),
        (None, Some(s)) => format!("{} (soname {s})", l.path.display()),
        (None, None) => l.path.display().to_string(),
    }
}
