//! What this node's CPU can run, worked out by the tests themselves from
//! `/proc/cpuinfo` (as this process sees it: a masked one under
//! `tests/setup/masked-cpu.sh` too) and archspec's database, never from
//! hpcc's matcher, so that a test's expectation does not come from the
//! code it checks.
//!
//! CI runs on whatever machine it gets: one was an AMD EPYC with AVX-512,
//! another an Intel Xeon guest with AMX, a third an EPYC with AVX2 only. A
//! test that needs a refused image takes one from [`unrunnable_target`] or
//! [`foreign_target`]; one that needs a started image takes a target the
//! node runs ([`runnable_generic_level`]). Nothing here guesses what CPU
//! CI has.

use std::collections::BTreeSet;

/// archspec features that compilers do not emit on their own (hpcc's
/// `matcher::cpu::NOT_EMITTED`, restated here so that a test does not take
/// its expectation from the code it tests: a change there shows up as a
/// test failure, not as a moved goalpost). A target is only "unrunnable"
/// here when it misses a feature outside this list.
const NOT_EMITTED: &[&str] = &[
    "rdrand",
    "rdseed",
    "pku",
    "ospke",
    "flush_l1d",
    "xsave",
    "xsavec",
    "xsaveopt",
    "xsaves",
    "clflushopt",
    "clwb",
    "clzero",
    "cldemote",
    "movdiri",
    "movdir64b",
    "waitpkg",
    "serialize",
    "fsgsbase",
    "rdpid",
    "tsc_adjust",
    "sse4a",
    "evtstrm",
    "cpuid",
    "dcpop",
    "dcpodp",
    "rng",
    "dgh",
    "ssbs",
    "sb",
    "bti",
    "paca",
    "pacg",
    "dit",
    "ecv",
];

/// The flags of the first CPU in `/proc/cpuinfo` (`flags` on x86,
/// `Features` on aarch64).
pub fn flags() -> BTreeSet<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo is readable");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "flags" | "Features")
                .then(|| v.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// This node's architecture family as archspec names it.
pub fn family() -> &'static str {
    std::env::consts::ARCH
}

fn has(flags: &BTreeSet<String>, feature: &str) -> bool {
    if flags.contains(feature) || (feature == "sse3" && flags.contains("pni")) {
        return true;
    }
    let schema = archspec::schema::MicroarchitecturesSchema::schema();
    schema.feature_aliases.get(feature).is_some_and(|a| {
        a.any_of
            .iter()
            .flatten()
            .any(|f| flags.contains(f.as_str()))
            || a.families.iter().flatten().any(|f| f == family())
    })
}

/// The features of `target` that code built for it uses and this node
/// lacks; `None` when archspec does not know the target.
pub fn missing(target: &str) -> Option<Vec<String>> {
    let known = archspec::cpu::Microarchitecture::known_targets();
    let t = known.get(target)?;
    let flags = flags();
    let mut out: Vec<String> = t
        .all_features()
        .into_iter()
        .filter(|f| !NOT_EMITTED.contains(&f.as_str()) && !has(&flags, f))
        .collect();
    out.sort();
    Some(out)
}

/// Whether this node can run code built for `target`: same family, and
/// every feature the code uses is there.
pub fn can_run(target: &str) -> bool {
    let known = archspec::cpu::Microarchitecture::known_targets();
    let Some(t) = known.get(target) else {
        return false;
    };
    t.family().name() == family() && missing(target).is_some_and(|m| m.is_empty())
}

/// A target of this node's own architecture that it cannot run, with the
/// features it lacks, for tests where a same-architecture CPU refusal is
/// the point. The generic levels first (`x86_64_v4`, ...), then every
/// named microarchitecture of the family, newest generation first. `None`
/// when the node has every feature of every target archspec knows: the
/// caller says so and falls back (a masked fingerprint, or
/// [`foreign_target`]).
pub fn unrunnable_target() -> Option<(String, Vec<String>)> {
    let known = archspec::cpu::Microarchitecture::known_targets();
    let mut candidates: Vec<&std::sync::Arc<archspec::cpu::Microarchitecture>> = known
        .values()
        .filter(|t| t.family().name() == family() && t.name() != family())
        .collect();
    // Generic levels (vendor "generic") first, highest level first; then
    // the rest by generation and ancestry depth, deepest first, then name
    // (a stable order across runs).
    candidates.sort_by_key(|t| {
        (
            t.vendor() != "generic",
            std::cmp::Reverse(t.ancestors().len()),
            t.name().to_owned(),
        )
    });
    candidates.into_iter().find_map(|t| {
        let m = missing(t.name())?;
        (!m.is_empty()).then(|| (t.name().to_owned(), m))
    })
}

/// A target of another architecture: no node of this one can run it.
pub fn foreign_target() -> &'static str {
    if family() == "aarch64" {
        "x86_64_v4"
    } else {
        "a64fx"
    }
}

/// The highest generic level (`x86_64_v2`..`v4`) this node runs, with the
/// features that level adds over the one below it; `None` below `v2` or
/// off x86_64. The two-node rig masks those features on n2, so that an
/// image of this level runs on n1 and is refused on n2 on every machine.
pub fn runnable_generic_level() -> Option<(String, Vec<String>)> {
    if family() != "x86_64" {
        return None;
    }
    let known = archspec::cpu::Microarchitecture::known_targets();
    let level = ["x86_64_v4", "x86_64_v3", "x86_64_v2"]
        .into_iter()
        .find(|l| can_run(l))?;
    let t = known.get(level)?;
    let parent: BTreeSet<String> = t
        .ancestors()
        .first()
        .map(|p| p.all_features().into_iter().collect())
        .unwrap_or_default();
    // archspec's `x86_64` lists no features, so `x86_64_v2` "adds" the
    // psABI's baseline (MMX, SSE, SSE2) too: every x86-64 CPU has those,
    // and software that reads /proc/cpuinfo may rely on them. Only what a
    // level really adds is masked.
    const BASELINE: &[&str] = &["mmx", "sse", "sse2", "fxsr", "cx8", "cmov", "fpu"];
    let mut added: Vec<String> = t
        .all_features()
        .into_iter()
        .filter(|f| !parent.contains(f) && !BASELINE.contains(&f.as_str()))
        .collect();
    added.sort();
    Some((level.to_owned(), added))
}

/// The score hpcc should give an image built for the family's baseline
/// (`x86_64`, `aarch64`): "orange" (a generic build: runs, without the
/// CPU's newer instructions) on any CPU archspec names above the
/// baseline, "green" on the baseline itself. From archspec's own host
/// detection, which reads the same (possibly masked) `/proc/cpuinfo`.
pub fn family_build_score() -> &'static str {
    match archspec::cpu::host() {
        Ok(m) if m.name() == family() => "green",
        _ => "orange",
    }
}

/// `hpcc match`'s exit code for [`family_build_score`] (docs/cli.md: 0
/// green, 1 orange).
pub fn family_build_exit() -> i32 {
    if family_build_score() == "green" {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_target_is_never_runnable() {
        assert!(!can_run(foreign_target()));
    }

    #[test]
    fn the_family_itself_is_runnable() {
        assert!(can_run(family()), "{:?}", missing(family()));
    }

    #[test]
    fn an_unrunnable_target_misses_something() {
        if let Some((t, m)) = unrunnable_target() {
            assert!(!m.is_empty() && !can_run(&t), "{t}: {m:?}");
        }
    }

    #[test]
    fn the_generic_level_is_runnable() {
        if let Some((l, added)) = runnable_generic_level() {
            assert!(can_run(&l));
            assert!(!added.is_empty(), "{l}");
        }
    }
}
