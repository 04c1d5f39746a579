//! archspec's microarchitecture database as static tables, generated at
//! build time by archspec itself (`common/build.rs`).
//!
//! Reading a CPU annotation and matching it against the node is on every
//! container start (hook, runtime, Slurm plugin). archspec 0.2 parses its
//! embedded JSON the first time it is asked, about 0.6 ms per process; the
//! tables give the same facts for nothing. The tests below hold them equal
//! to archspec's, so an archspec upgrade cannot make them drift.

/// One archspec target, with what hpcc asks of it.
#[derive(Debug)]
pub(crate) struct Target {
    /// archspec's name (`icelake`, `x86_64_v3`, `neoverse_v2`).
    pub name: &'static str,
    /// Its family, the root of its tree (`x86_64`, `aarch64`).
    pub family: &'static str,
    /// `GenuineIntel`, `AuthenticAMD`, `ARM`, ..., or `generic`.
    pub vendor: &'static str,
    /// Every feature, its ancestors' included (sorted).
    pub features: &'static [&'static str],
    /// Every ancestor (sorted), itself excluded.
    pub ancestors: &'static [&'static str],
}

/// One of archspec's synthesised features: present when the target has
/// any of `any_of`, or belongs to one of `families`.
#[derive(Debug)]
pub(crate) struct FeatureAlias {
    /// The feature's name.
    pub name: &'static str,
    /// Features that imply it.
    pub any_of: &'static [&'static str],
    /// Families that have it.
    pub families: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/cpu_targets.rs"));

/// The archspec target called `name`.
pub(crate) fn target(name: &str) -> Option<&'static Target> {
    TARGETS
        .binary_search_by(|t| t.name.cmp(name))
        .ok()
        .map(|i| &TARGETS[i])
}

/// Every archspec target name.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    TARGETS.iter().map(|t| t.name)
}

/// archspec's synthesised feature `name`, if it is one.
pub(crate) fn feature_alias(name: &str) -> Option<&'static FeatureAlias> {
    FEATURE_ALIASES
        .binary_search_by(|a| a.name.cmp(name))
        .ok()
        .map(|i| &FEATURE_ALIASES[i])
}

/// The vendor name of an ARM implementer code (`0x41` -> `ARM`).
pub(crate) fn arm_vendor(code: &str) -> Option<&'static str> {
    ARM_VENDORS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn targets_are_archspecs() {
        let known = archspec::cpu::Microarchitecture::known_targets();
        assert_eq!(TARGETS.len(), known.len());
        for (name, m) in known {
            let t = target(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(t.name, m.name());
            assert_eq!(t.family, m.family().name(), "{name}");
            assert_eq!(t.vendor, m.vendor(), "{name}");
            let all = m.all_features();
            let features: BTreeSet<&str> = all.iter().map(String::as_str).collect();
            let ours: BTreeSet<&str> = t.features.iter().copied().collect();
            assert_eq!(ours, features, "{name}");
            let ancestors: BTreeSet<&str> = m.ancestors().iter().map(|a| a.name()).collect();
            let ours: BTreeSet<&str> = t.ancestors.iter().copied().collect();
            assert_eq!(ours, ancestors, "{name}");
            for other in known.values() {
                assert_eq!(
                    t.ancestors.contains(&other.name()),
                    m.decendent_of(other),
                    "{name} / {}",
                    other.name()
                );
            }
        }
        assert!(target("no-such-cpu").is_none());
    }

    #[test]
    fn aliases_and_vendors_are_archspecs() {
        let schema = archspec::schema::MicroarchitecturesSchema::schema();
        assert_eq!(FEATURE_ALIASES.len(), schema.feature_aliases.len());
        for (name, a) in &schema.feature_aliases {
            let ours = feature_alias(name).unwrap();
            let any: BTreeSet<&str> = a.any_of.iter().flatten().map(|s| s.as_str()).collect();
            let fam: BTreeSet<&str> = a.families.iter().flatten().map(|s| s.as_str()).collect();
            assert_eq!(ours.any_of.iter().copied().collect::<BTreeSet<_>>(), any);
            assert_eq!(ours.families.iter().copied().collect::<BTreeSet<_>>(), fam);
        }
        assert_eq!(ARM_VENDORS.len(), schema.conversions.arm_vendors.len());
        for (code, vendor) in &schema.conversions.arm_vendors {
            assert_eq!(arm_vendor(code), Some(vendor.as_str()));
        }
    }
}
