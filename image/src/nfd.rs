//! The Kubernetes Node Feature Discovery image compatibility spec
//! (`v1alpha1`): written from `hpcc annotate`'s findings, and read (from an
//! artifact whose `subject` is the image, or from a file) and scored against
//! this node like annotations.
//!
//! The spec is a list of compatibility sets, each a list of NFD rules
//! (`matchFeatures`, `matchAny`) over node features, with an optional
//! `weight` (preference) and `tag` (selection). hpcc provides these NFD
//! features from its fingerprint:
//!
//! | feature | kind | elements |
//! | --- | --- | --- |
//! | `cpu.cpuid` | flag | CPU flags in NFD's names (`AVX512F`, `SSE42`, `FMA3`...) and `X86_64_V1..V4` |
//! | `cpu.model` | attribute | `vendor_id` (`Intel`, `AMD`...) |
//! | `kernel.version` | attribute | `full`, `major`, `minor`, `revision` |
//! | `kernel.loadedmodule`, `kernel.enabledmodule` | flag | modules in `/sys/module` |
//! | `pci.device` | instance | `class` (4 hex digits), `vendor`, `device`, `subsystem_vendor`, `subsystem_device` from sysfs |
//!
//! A rule over any other feature cannot be decided here: its set scores
//! orange ("unknown"), never green or red.
//!
//! Scoring: the sets with the highest weight are preferred. One of them
//! matching is green; only a lower-weight set matching is orange (runs,
//! not on the preferred configuration); no set matching is red.

use super::layout::{Image, Manifest};
use super::proposals::Proposals;
use super::{ImageError, Limits};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::matcher::{Check, Finding, Level};
use hpcc_common::yaml::{self, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// `artifactType` of an NFD image compatibility artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.nfd.image-compatibility.v1alpha1";
/// Media type of the spec layer in that artifact.
pub const SPEC_MEDIA_TYPE: &str = "application/vnd.nfd.image-compatibility.spec.v1alpha1+yaml";
/// Largest spec read.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// A match operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Value is one of.
    In,
    /// Value is none of.
    NotIn,
    /// Value matches one of the regular expressions.
    InRegexp,
    /// Element present.
    Exists,
    /// Element absent.
    DoesNotExist,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
    /// Strictly between.
    GtLt,
    /// Between, bounds included.
    GeLe,
    /// `true`.
    IsTrue,
    /// `false`.
    IsFalse,
}

/// One expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// Operator.
    pub op: Op,
    /// Operands.
    pub value: Vec<String>,
    /// `type: version`: compare as versions.
    pub version: bool,
}

/// A requirement on one feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `cpu.cpuid`, ...
    pub feature: String,
    /// Element name -> expression on its value.
    pub expressions: Vec<(String, Expr)>,
    /// Expression on element names.
    pub name: Option<Expr>,
}

/// One NFD rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// All must match.
    pub match_features: Vec<Term>,
    /// One group must match (each group: all its terms).
    pub match_any: Vec<Vec<Term>>,
}

/// One compatibility set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// Rules, all of which must match.
    pub rules: Vec<Rule>,
    /// Preference.
    pub weight: i64,
    /// Group tag.
    pub tag: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// A whole spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `v1alpha1`.
    pub version: String,
    /// The sets.
    pub compatibilities: Vec<Compatibility>,
}

fn err(what: &str, n: &Node, reason: impl Into<String>) -> ImageError {
    ImageError::Yaml(yaml::YamlError {
        what: what.to_owned(),
        line: n.line(),
        reason: reason.into(),
    })
}

fn parse_expr(what: &str, n: &Node) -> Result<Expr, ImageError> {
    let op = n
        .get("op")
        .and_then(Node::as_str)
        .ok_or_else(|| err(what, n, "expression without op"))?;
    let op = match op {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "InRegexp" => Op::InRegexp,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" => Op::Gt,
        "Ge" => Op::Ge,
        "Lt" => Op::Lt,
        "Le" => Op::Le,
        "GtLt" => Op::GtLt,
        "GeLe" => Op::GeLe,
        "IsTrue" => Op::IsTrue,
        "IsFalse" => Op::IsFalse,
        o => return Err(err(what, n, format!("unknown op {o:?}"))),
    };
    let value: Vec<String> = match n.get("value") {
        None => vec![],
        Some(v) if v.as_str().is_some() => vec![v.as_str().unwrap_or_default().to_owned()],
        Some(v) => v
            .items()
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
    };
    let need = match op {
        Op::Exists | Op::DoesNotExist | Op::IsTrue | Op::IsFalse => 0..=0,
        Op::Gt | Op::Ge | Op::Lt | Op::Le => 1..=1,
        Op::GtLt | Op::GeLe => 2..=2,
        _ => 1..=256,
    };
    if !need.contains(&value.len()) {
        return Err(err(
            what,
            n,
            format!("{op:?} takes {need:?} values, {} given", value.len()),
        ));
    }
    Ok(Expr {
        op,
        value,
        version: n.get("type").and_then(Node::as_str) == Some("version"),
    })
}

fn parse_terms(what: &str, n: &Node) -> Result<Vec<Term>, ImageError> {
    n.items()
        .iter()
        .map(|t| {
            let feature = t
                .get("feature")
                .and_then(Node::as_str)
                .ok_or_else(|| err(what, t, "matchFeatures term without feature"))?
                .to_owned();
            let expressions = t
                .get("matchExpressions")
                .map(|m| {
                    m.entries()
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), parse_expr(what, v)?)))
                        .collect::<Result<Vec<_>, ImageError>>()
                })
                .transpose()?
                .unwrap_or_default();
            let name = t
                .get("matchName")
                .map(|m| parse_expr(what, m))
                .transpose()?;
            Ok(Term {
                feature,
                expressions,
                name,
            })
        })
        .collect()
}

impl Spec {
    /// Parses a spec (YAML or JSON, which is YAML).
    pub fn parse(text: &str, what: &str) -> Result<Spec, ImageError> {
        let root = yaml::parse_one(text, what)?;
        let version = root
            .get("version")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_owned();
        if version != "v1alpha1" {
            return Err(err(
                what,
                &root,
                format!("version {version:?} is not v1alpha1"),
            ));
        }
        let sets = root
            .get("compatibilities")
            .ok_or_else(|| err(what, &root, "no compatibilities"))?;
        let mut compatibilities = Vec::new();
        for c in sets.items().iter().take(256) {
            let mut rules = Vec::new();
            for r in c
                .get("rules")
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .take(256)
            {
                rules.push(Rule {
                    name: r
                        .get("name")
                        .and_then(Node::as_str)
                        .unwrap_or("unnamed")
                        .to_owned(),
                    match_features: r
                        .get("matchFeatures")
                        .map(|m| parse_terms(what, m))
                        .transpose()?
                        .unwrap_or_default(),
                    match_any: r
                        .get("matchAny")
                        .map(Node::items)
                        .unwrap_or_default()
                        .iter()
                        .map(|g| {
                            g.get("matchFeatures")
                                .map(|m| parse_terms(what, m))
                                .transpose()
                                .map(Option::unwrap_or_default)
                        })
                        .collect::<Result<_, _>>()?,
                });
            }
            let weight = match c.get("weight").and_then(Node::as_str) {
                None => 0,
                Some(w) => w
                    .parse()
                    .map_err(|_| err(what, c, format!("weight {w:?} is not an integer")))?,
            };
            compatibilities.push(Compatibility {
                rules,
                weight,
                tag: c.get("tag").and_then(Node::as_str).map(str::to_owned),
                description: c
                    .get("description")
                    .and_then(Node::as_str)
                    .map(str::to_owned),
            });
        }
        Ok(Spec {
            version,
            compatibilities,
        })
    }

    /// The specs attached to `image` (artifacts whose `subject` is it).
    pub fn attached(image: &Image, limits: &Limits) -> Result<Vec<(String, Spec)>, ImageError> {
        let mut out = Vec::new();
        for m in image.referrers(ARTIFACT_TYPE, limits)? {
            out.extend(specs_of(image, &m)?);
        }
        Ok(out)
    }
}

fn specs_of(image: &Image, m: &Manifest) -> Result<Vec<(String, Spec)>, ImageError> {
    let mut out = Vec::new();
    for l in m.layers.iter().filter(|l| l.media_type == SPEC_MEDIA_TYPE) {
        let what = format!("NFD spec {}", l.digest.short());
        let bytes = image.read_blob(l, MAX_SPEC_BYTES, &what)?;
        let text = String::from_utf8_lossy(&bytes);
        out.push((what.clone(), Spec::parse(&text, &what)?));
    }
    Ok(out)
}

/// The node's features, in NFD's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFeatures {
    /// Flag features: name -> elements.
    pub flags: BTreeMap<String, BTreeSet<String>>,
    /// Attribute features: name -> element -> value.
    pub attributes: BTreeMap<String, BTreeMap<String, String>>,
    /// Instance features: name -> instances.
    pub instances: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

/// Linux `/proc/cpuinfo` flag -> NFD (`klauspost/cpuid`) name, where they
/// differ beyond case and underscores.
fn nfd_flag(linux: &str) -> String {
    match linux {
        "pni" => "SSE3".into(),
        "sse4_1" => "SSE4".into(),
        "sse4_2" => "SSE42".into(),
        "fma" => "FMA3".into(),
        "abm" => "LZCNT".into(),
        "cx16" => "CX16".into(),
        "aes" => "AESNI".into(),
        "pclmulqdq" => "CLMUL".into(),
        "sha_ni" => "SHA".into(),
        "lahf_lm" => "LAHF".into(),
        other => other.replace('_', "").to_ascii_uppercase(),
    }
}

/// iced-x86 feature name -> NFD name.
pub fn nfd_from_iced(iced: &str) -> String {
    match iced {
        "SSE4_1" => "SSE4".into(),
        "SSE4_2" => "SSE42".into(),
        "FMA" => "FMA3".into(),
        "CMPXCHG16B" => "CX16".into(),
        "AES" => "AESNI".into(),
        "PCLMULQDQ" => "CLMUL".into(),
        other => other.replace('_', ""),
    }
}

/// The NFD flags that define each x86-64 level (v2, v3, v4).
pub const LEVEL_FLAGS: [&[&str]; 3] = [
    &["CX16", "LAHF", "POPCNT", "SSE3", "SSE4", "SSE42", "SSSE3"],
    &[
        "AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA3", "LZCNT", "MOVBE", "XSAVE",
    ],
    &["AVX512BW", "AVX512CD", "AVX512DQ", "AVX512F", "AVX512VL"],
];

impl NodeFeatures {
    /// From the fingerprint (no I/O).
    pub fn from_fingerprint(fp: &NodeFingerprint) -> NodeFeatures {
        let mut nf = NodeFeatures::default();
        let mut cpuid: BTreeSet<String> = fp.cpu.flags.iter().map(|f| nfd_flag(f)).collect();
        if fp.cpu.platform == "x86_64" {
            cpuid.insert("X86_64_V1".into());
            for (i, flags) in LEVEL_FLAGS.iter().enumerate() {
                if flags.iter().all(|f| cpuid.contains(*f)) {
                    cpuid.insert(format!("X86_64_V{}", i + 2));
                } else {
                    break;
                }
            }
        }
        nf.flags.insert("cpu.cpuid".into(), cpuid);
        let vendor = match fp.cpu.vendor.as_str() {
            "GenuineIntel" => "Intel",
            "AuthenticAMD" => "AMD",
            other => other,
        };
        nf.attributes.insert(
            "cpu.model".into(),
            BTreeMap::from([("vendor_id".to_owned(), vendor.to_owned())]),
        );
        let mut kv = BTreeMap::from([("full".to_owned(), fp.kernel.release.clone())]);
        let nums: Vec<&str> = fp
            .kernel
            .release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .collect();
        for (k, v) in ["major", "minor", "revision"].iter().zip(nums) {
            if !v.is_empty() {
                kv.insert((*k).to_owned(), v.to_owned());
            }
        }
        nf.attributes.insert("kernel.version".into(), kv);
        nf.flags
            .insert("kernel.loadedmodule".into(), fp.kernel.modules.clone());
        nf.flags
            .insert("kernel.enabledmodule".into(), fp.kernel.modules.clone());
        nf
    }

    /// Adds `pci.device` from `/sys/bus/pci/devices` (bounded; absent sysfs
    /// gives no devices).
    pub fn with_sysfs_pci(mut self) -> NodeFeatures {
        let mut devs = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/bus/pci/devices") {
            for d in rd.flatten().take(4096) {
                let mut attrs = BTreeMap::new();
                for a in [
                    "class",
                    "vendor",
                    "device",
                    "subsystem_vendor",
                    "subsystem_device",
                ] {
                    if let Ok(v) = hpcc_common::io::read_text_bounded(&d.path().join(a), 64) {
                        let v = v.trim().trim_start_matches("0x");
                        // NFD keeps the class's base class and subclass only.
                        let v = if a == "class" && v.len() > 4 {
                            &v[..4]
                        } else {
                            v
                        };
                        attrs.insert(a.to_owned(), v.to_owned());
                    }
                }
                devs.push(attrs);
            }
        }
        self.instances.insert("pci.device".into(), devs);
        self
    }
}

/// Three-valued result: a rule over a feature hpcc does not provide is
/// unknown, not false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    /// Matches.
    Yes,
    /// Does not match.
    No,
    /// Cannot be decided here.
    Unknown,
}

impl Tri {
    fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::Yes,
        }
    }

    fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::No,
        }
    }
}

fn cmp_num(a: &str, b: &str, version: bool) -> Option<std::cmp::Ordering> {
    if version {
        let a = hpcc_common::version::Version::parse_prefix(a)?;
        let b = hpcc_common::version::Version::parse_prefix(b)?;
        return Some(a.cmp(&b));
    }
    Some(
        a.trim()
            .parse::<i64>()
            .ok()?
            .cmp(&b.trim().parse::<i64>().ok()?),
    )
}

/// Evaluates an expression on an element's value (`None`: absent).
fn eval(e: &Expr, v: Option<&str>) -> bool {
    use std::cmp::Ordering::*;
    let Some(v) = v else {
        return e.op == Op::DoesNotExist;
    };
    let c = |i: usize| cmp_num(v, &e.value[i], e.version);
    match e.op {
        Op::Exists => true,
        Op::DoesNotExist => false,
        Op::In => e.value.iter().any(|x| x == v),
        Op::NotIn => !e.value.iter().any(|x| x == v),
        Op::InRegexp => e.value.iter().any(|r| {
            regex::RegexBuilder::new(r)
                .size_limit(1 << 20)
                .build()
                .is_ok_and(|re| re.is_match(v))
        }),
        Op::Gt => c(0) == Some(Greater),
        Op::Ge => matches!(c(0), Some(Greater | Equal)),
        Op::Lt => c(0) == Some(Less),
        Op::Le => matches!(c(0), Some(Less | Equal)),
        Op::GtLt => c(0) == Some(Greater) && c(1) == Some(Less),
        Op::GeLe => matches!(c(0), Some(Greater | Equal)) && matches!(c(1), Some(Less | Equal)),
        Op::IsTrue => v == "true",
        Op::IsFalse => v == "false",
    }
}

fn describe(t: &Term) -> String {
    let mut parts: Vec<String> = t
        .expressions
        .iter()
        .map(|(k, e)| {
            if e.value.is_empty() {
                format!("{k} {:?}", e.op)
            } else {
                format!("{k} {:?} {}", e.op, e.value.join("|"))
            }
        })
        .collect();
    if let Some(n) = &t.name {
        parts.push(format!("name {:?} {}", n.op, n.value.join("|")));
    }
    format!("{}: {}", t.feature, parts.join(", "))
}

fn eval_term(t: &Term, node: &NodeFeatures) -> Tri {
    let ok = |b: bool| if b { Tri::Yes } else { Tri::No };
    if let Some(flags) = node.flags.get(&t.feature) {
        let exprs = t
            .expressions
            .iter()
            .all(|(k, e)| eval(e, flags.contains(k).then_some("")));
        let name = t
            .name
            .as_ref()
            .is_none_or(|n| flags.iter().any(|f| eval(n, Some(f))));
        return ok(exprs && name);
    }
    if let Some(attrs) = node.attributes.get(&t.feature) {
        let exprs = t
            .expressions
            .iter()
            .all(|(k, e)| eval(e, attrs.get(k).map(String::as_str)));
        let name = t
            .name
            .as_ref()
            .is_none_or(|n| attrs.keys().any(|a| eval(n, Some(a))));
        return ok(exprs && name);
    }
    if let Some(insts) = node.instances.get(&t.feature) {
        return ok(insts.iter().any(|i| {
            t.expressions
                .iter()
                .all(|(k, e)| eval(e, i.get(k).map(String::as_str)))
        }));
    }
    Tri::Unknown
}

fn eval_terms<'a>(terms: &'a [Term], node: &NodeFeatures, failed: &mut Vec<&'a Term>) -> Tri {
    terms.iter().fold(Tri::Yes, |acc, t| {
        let r = eval_term(t, node);
        if r != Tri::Yes {
            failed.push(t);
        }
        acc.and(r)
    })
}

/// Evaluates one rule; `failed` gets the terms that did not match.
pub fn eval_rule<'a>(r: &'a Rule, node: &NodeFeatures, failed: &mut Vec<&'a Term>) -> Tri {
    let mut res = eval_terms(&r.match_features, node, failed);
    if !r.match_any.is_empty() {
        let mut any = Tri::No;
        let mut any_failed = Vec::new();
        for g in &r.match_any {
            any = any.or(eval_terms(g, node, &mut any_failed));
        }
        if any != Tri::Yes {
            failed.extend(any_failed);
        }
        res = res.and(any);
    }
    res
}

fn check_of(feature: &str) -> Check {
    match feature.split('.').next() {
        Some("cpu") => Check::Cpu,
        Some("pci") | Some("usb") => Check::Gpu,
        _ => Check::Kernel,
    }
}

/// Scores a spec against the node: one finding per compatibility set (of
/// the selected `tags`, all when empty).
pub fn score(spec: &Spec, what: &str, node: &NodeFeatures, tags: &[String]) -> Vec<Finding> {
    let sets: Vec<&Compatibility> = spec
        .compatibilities
        .iter()
        .filter(|c| tags.is_empty() || c.tag.as_ref().is_some_and(|t| tags.contains(t)))
        .collect();
    if sets.is_empty() {
        return vec![Finding::new(
            Check::Annotations,
            Level::Degraded,
            format!(
                "{what}: no compatibility set{} to score",
                if tags.is_empty() {
                    ""
                } else {
                    " with the selected tags"
                }
            ),
        )];
    }
    let results: Vec<(Tri, Vec<&Term>)> = sets
        .iter()
        .map(|c| {
            let mut failed = Vec::new();
            let r = c
                .rules
                .iter()
                .fold(Tri::Yes, |acc, r| acc.and(eval_rule(r, node, &mut failed)));
            (r, failed)
        })
        .collect();
    let best_weight = sets.iter().map(|c| c.weight).max().unwrap_or(0);
    let preferred_ok = sets
        .iter()
        .zip(&results)
        .any(|(c, (r, _))| c.weight == best_weight && *r == Tri::Yes);
    let any_ok = results.iter().any(|(r, _)| *r == Tri::Yes);
    sets.iter()
        .zip(results)
        .map(|(c, (r, failed))| {
            let name = format!(
                "{what}: compatibility set {}{}(weight {})",
                c.tag.as_deref().map_or(String::new(), |t| format!("{t:?} ")),
                c.description.as_deref().map_or(String::new(), |d| format!("{d:?} ")),
                c.weight
            );
            let check = failed.first().map_or(
                c.rules
                    .first()
                    .and_then(|r| r.match_features.first())
                    .map_or(Check::Cpu, |t| check_of(&t.feature)),
                |t| check_of(&t.feature),
            );
            let needs = failed.iter().take(4).map(|t| describe(t)).collect::<Vec<_>>().join("; ");
            match r {
                Tri::Yes => Finding::new(check, Level::Ok, format!("{name} matches this node")),
                Tri::Unknown => Finding::new(
                    check,
                    Level::Degraded,
                    format!("{name} cannot be decided here: hpcc does not provide every feature it names"),
                )
                .image_evidence(needs),
                Tri::No if preferred_ok || (c.weight < best_weight && any_ok) => Finding::new(
                    check,
                    if c.weight == best_weight || preferred_ok { Level::Ok } else { Level::Degraded },
                    format!("{name} does not match; another set does"),
                )
                .image_evidence(needs),
                Tri::No if any_ok => Finding::new(
                    check,
                    Level::Degraded,
                    format!("{name} is preferred and does not match; only a lower-weight set does"),
                )
                .image_evidence(needs),
                Tri::No => Finding::new(check, Level::Fatal, format!("{name} does not match this node, and no other set does"))
                    .image_evidence(needs),
            }
        })
        .collect()
}

/// Writes the spec for what `hpcc annotate` found: one compatibility set
/// (tag `hpcc`) with the CPU flags the sampled code needs and the minimum
/// kernel of its ABI tags.
pub fn spec_yaml(p: &Proposals) -> String {
    let mut out = String::new();
    let level = p.cpu.level.unwrap_or(1);
    let _ = writeln!(
        out,
        "# NFD image compatibility spec written by hpcc annotate for {}",
        hpcc_common::text::escape(&p.image)
    );
    let _ = writeln!(out, "version: v1alpha1\ncompatibilities:");
    let desc = if p.cpu.platform == "x86_64" {
        format!("{} ({})", super::elfscan::level_name(level), p.cpu.platform)
    } else {
        p.cpu.platform.clone()
    };
    let _ = writeln!(
        out,
        "- description: \"hpcc annotate: the image needs {desc}\"\n  tag: hpcc\n  rules:"
    );
    let mut flags: BTreeSet<String> = BTreeSet::new();
    if p.cpu.platform == "x86_64" {
        for l in LEVEL_FLAGS
            .iter()
            .take(usize::from(level.saturating_sub(1)))
        {
            flags.extend(l.iter().map(|s| (*s).to_owned()));
        }
        flags.extend(p.cpu.extra_features.iter().map(|f| nfd_from_iced(f)));
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "  - name: \"cpu {desc}\"\n    matchFeatures:\n    - feature: cpu.cpuid\n      matchExpressions:");
        for f in &flags {
            let _ = writeln!(out, "        {f}: {{op: Exists}}");
        }
    }
    if let Some(k) = p
        .kernel_min
        .as_deref()
        .and_then(|k| hpcc_common::version::Version::parse(k).ok())
    {
        let (maj, min) = (k.major(), k.minor());
        let _ = writeln!(
            out,
            "  - name: \"kernel >= {maj}.{min}\"\n    matchAny:\n    - matchFeatures:\n      - feature: kernel.version\n        matchExpressions:\n          major: {{op: Gt, value: [\"{maj}\"]}}\n    - matchFeatures:\n      - feature: kernel.version\n        matchExpressions:\n          major: {{op: In, value: [\"{maj}\"]}}\n          minor: {{op: Gt, value: [\"{}\"]}}",
            min.saturating_sub(1)
        );
    }
    if flags.is_empty() && p.kernel_min.is_none() {
        let _ = writeln!(out, "  - name: \"any node\"\n    matchFeatures: []");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_common::testutil::node;

    const SPEC: &str = r#"
version: v1alpha1
compatibilities:
- tag: preferred
  weight: 10
  description: "AVX-512 build"
  rules:
  - name: avx512
    matchFeatures:
    - feature: cpu.cpuid
      matchExpressions:
        AVX512F: {op: Exists}
    - feature: kernel.version
      matchExpressions:
        major: {op: Gt, value: ["4"]}
- tag: fallback
  weight: 1
  rules:
  - name: avx2
    matchFeatures:
    - feature: cpu.cpuid
      matchName: {op: InRegexp, value: ["^AVX2$"]}
    - feature: kernel.loadedmodule
      matchExpressions:
        overlay: {op: Exists}
"#;

    fn features(arch: &str) -> NodeFeatures {
        NodeFeatures::from_fingerprint(&node(arch))
    }

    #[test]
    fn preferred_set_matches_on_a_capable_node() {
        let s = Spec::parse(SPEC, "t").unwrap();
        assert_eq!(s.compatibilities.len(), 2);
        let f = score(&s, "spec", &features("icelake"), &[]);
        assert!(f.iter().all(|x| x.level == Level::Ok), "{f:#?}");
    }

    #[test]
    fn fallback_only_is_orange_and_nothing_is_red() {
        let s = Spec::parse(SPEC, "t").unwrap();
        let f = score(&s, "spec", &features("haswell"), &[]);
        assert!(f.iter().any(|x| x.level == Level::Degraded), "{f:#?}");
        assert!(f.iter().all(|x| x.level != Level::Fatal));
        let mut n = features("haswell");
        n.flags.get_mut("kernel.loadedmodule").unwrap().clear();
        let f = score(&s, "spec", &n, &[]);
        assert!(f.iter().any(|x| x.level == Level::Fatal), "{f:#?}");
        assert!(f[0].image.as_deref().unwrap().contains("AVX512F"), "{f:#?}");
    }

    #[test]
    fn tags_select_and_unknown_features_are_orange() {
        let s = Spec::parse(SPEC, "t").unwrap();
        let f = score(&s, "spec", &features("icelake"), &["fallback".into()]);
        assert_eq!(f.len(), 1);
        let s = Spec::parse("version: v1alpha1\ncompatibilities:\n- rules:\n  - name: x\n    matchFeatures:\n    - feature: system.osrelease\n      matchExpressions:\n        ID: {op: In, value: [rhel]}\n", "t").unwrap();
        let f = score(&s, "spec", &features("icelake"), &[]);
        assert_eq!(f[0].level, Level::Degraded);
    }

    #[test]
    fn written_spec_parses_and_scores() {
        let p = Proposals {
            cpu: super::super::annotate::CpuNeeds {
                platform: "x86_64".into(),
                level: Some(4),
                extra_features: BTreeSet::from(["AES".to_owned()]),
            },
            kernel_min: Some("3.2.0".into()),
            ..Proposals::default()
        };
        let text = spec_yaml(&p);
        let s = Spec::parse(&text, "written").unwrap();
        let f = score(&s, "spec", &features("icelake"), &[]);
        assert_eq!(f[0].level, Level::Ok, "{text}\n{f:#?}");
        let f = score(&s, "spec", &features("haswell"), &[]);
        assert_eq!(f[0].level, Level::Fatal, "{f:#?}");
        assert!(
            text.contains("AVX512VL: {op: Exists}") && text.contains("AESNI"),
            "{text}"
        );
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(Spec::parse("version: v2\ncompatibilities: []\n", "t").is_err());
        let e = Spec::parse("version: v1alpha1\ncompatibilities:\n- rules:\n  - name: x\n    matchFeatures:\n    - feature: cpu.cpuid\n      matchExpressions:\n        A: {op: Gt}\n", "t").unwrap_err();
        assert!(e.to_string().contains("Gt"), "{e}");
    }
}
