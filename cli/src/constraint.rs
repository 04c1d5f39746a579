//! Slurm `--constraint` expressions: the one hpcc derives for an image from
//! the node classes that run it, and a bounded reader and evaluator of the
//! user's own, so that the two can be combined and checked against the
//! features the nodes publish before a job queues.
//!
//! Slurm 22.05 evaluates a constraint left to right, parentheses first, with
//! no precedence between `&` and `|` (`a|b&c` is `(a|b)&c`), so every
//! expression hpcc writes is fully parenthesised and the evaluator here does
//! the same left-to-right walk. Slurm 22.05 has no negation: a class can
//! only be singled out by features it has and the others lack.

use std::collections::BTreeSet;

/// Longest constraint read.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses and brackets.
const MAX_DEPTH: usize = 16;

/// Why a constraint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Longer than [`MAX_LEN`].
    #[error("longer than {MAX_LEN} characters")]
    TooLong,
    /// More nesting than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Not an expression Slurm accepts.
    #[error("not a Slurm constraint expression at character {at}: {what}")]
    Syntax {
        /// 0-based character offset.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// How a term joins the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    And,
    Or,
}

/// A parsed expression: terms joined left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    terms: Vec<(Op, Term)>,
    /// Has a node count (`name*N`) or a matching OR (`[a|b]`): about a set
    /// of nodes, not one node, so [`Expr::matches`] cannot answer per node.
    pub set_wide: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Name(String),
    Group(Expr),
}

impl Expr {
    /// Reads a Slurm constraint (names, `&`, `|`, `( )`, `[ ]`, `name*N`).
    pub fn parse(text: &str) -> Result<Expr, ConstraintError> {
        if text.len() > MAX_LEN {
            return Err(ConstraintError::TooLong);
        }
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let e = parse_seq(&chars, &mut pos, 0, None)?;
        if pos != chars.len() {
            return Err(ConstraintError::Syntax {
                at: pos,
                what: "unbalanced closing bracket",
            });
        }
        Ok(e)
    }

    /// Whether a node with `features` satisfies the expression (left to
    /// right, as Slurm 22.05 evaluates it; counts ignored).
    pub fn matches(&self, features: &BTreeSet<String>) -> bool {
        let mut acc = false;
        for (i, (op, t)) in self.terms.iter().enumerate() {
            let v = match t {
                Term::Name(n) => features.contains(n),
                Term::Group(g) => g.matches(features),
            };
            acc = if i == 0 {
                v
            } else {
                match op {
                    Op::And => acc && v,
                    Op::Or => acc || v,
                }
            };
        }
        acc
    }
}

fn is_name_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '&' | '|' | '(' | ')' | '[' | ']' | '*' | ',' | '!'))
}

fn parse_seq(
    s: &[char],
    pos: &mut usize,
    depth: usize,
    close: Option<char>,
) -> Result<Expr, ConstraintError> {
    if depth > MAX_DEPTH {
        return Err(ConstraintError::TooDeep);
    }
    let syntax = |at, what| ConstraintError::Syntax { at, what };
    let mut terms = Vec::new();
    let mut set_wide = false;
    let mut op = Op::And;
    loop {
        // A term.
        let term = match s.get(*pos) {
            Some('(') | Some('[') => {
                let (open, want) = if s[*pos] == '(' {
                    ('(', ')')
                } else {
                    ('[', ']')
                };
                *pos += 1;
                let inner = parse_seq(s, pos, depth + 1, Some(want))?;
                set_wide |= inner.set_wide || open == '[';
                Term::Group(inner)
            }
            Some(&c) if is_name_char(c) => {
                let start = *pos;
                while s.get(*pos).is_some_and(|&c| is_name_char(c)) {
                    *pos += 1;
                }
                Term::Name(s[start..*pos].iter().collect())
            }
            Some(_) => return Err(syntax(*pos, "expected a feature name")),
            None => return Err(syntax(*pos, "expected a feature name at the end")),
        };
        // An optional node count.
        if s.get(*pos) == Some(&'*') {
            *pos += 1;
            let start = *pos;
            while s.get(*pos).is_some_and(char::is_ascii_digit) {
                *pos += 1;
            }
            if start == *pos {
                return Err(syntax(*pos, "expected a node count after `*`"));
            }
            set_wide = true;
        }
        terms.push((op, term));
        match s.get(*pos) {
            Some('&') => op = Op::And,
            Some('|') => op = Op::Or,
            Some(&c) if Some(c) == close => {
                *pos += 1;
                return Ok(Expr { terms, set_wide });
            }
            None if close.is_none() => return Ok(Expr { terms, set_wide }),
            None => return Err(syntax(*pos, "unclosed bracket")),
            Some(')') | Some(']') => return Err(syntax(*pos, "unbalanced closing bracket")),
            Some(_) => {
                return Err(syntax(
                    *pos,
                    "expected `&`, `|` or the end (Slurm 22.05 has no `,` or `!`)",
                ))
            }
        }
        *pos += 1;
    }
}

/// One node class as the derivation sees it.
#[derive(Debug, Clone)]
pub struct ClassFeatures {
    /// What its nodes publish.
    pub features: BTreeSet<String>,
    /// Whether it runs the image (green or orange, not refused).
    pub runs: bool,
}

/// The conjunctions (one per running class that features can single out,
/// the ones implied by a shorter one left out) that select every running
/// class and no other: each is a set of features a running class has and
/// every other class (and a node that publishes nothing) lacks at least
/// one of. Greedy: at each step the feature that leaves out the most
/// remaining others, then the one most running classes share (so terms
/// merge), then the one most classes have (the most general target, e.g.
/// `x86_64_v3` before `icelake`). Running classes no conjunction singles
/// out (another class has all their features) are not in any term.
pub fn derive(classes: &[ClassFeatures]) -> Vec<Vec<String>> {
    let others: Vec<&BTreeSet<String>> = classes
        .iter()
        .filter(|c| !c.runs)
        .map(|c| &c.features)
        .collect();
    let empty = BTreeSet::new();
    let count = |f: &String, pick: &dyn Fn(&ClassFeatures) -> bool| {
        classes
            .iter()
            .filter(|c| pick(c) && c.features.contains(f))
            .count()
    };
    let mut terms: Vec<Vec<String>> = Vec::new();
    for class in classes.iter().filter(|c| c.runs) {
        let mut chosen: Vec<String> = Vec::new();
        // A node that publishes nothing must never match either.
        let mut left: Vec<&BTreeSet<String>> = others.to_vec();
        left.push(&empty);
        while !left.is_empty() {
            let best = class
                .features
                .iter()
                .filter(|f| !chosen.contains(f))
                .map(|f| {
                    let excluded = left.iter().filter(|o| !o.contains(f)).count();
                    (
                        excluded,
                        count(f, &|c| c.runs),
                        count(f, &|_| true),
                        std::cmp::Reverse(f.clone()),
                    )
                })
                .max();
            match best {
                Some((excluded, _, _, std::cmp::Reverse(f))) if excluded > 0 => {
                    left.retain(|o| o.contains(&f));
                    chosen.push(f);
                }
                _ => break,
            }
        }
        if left.is_empty() {
            chosen.sort();
            if !terms.contains(&chosen) {
                terms.push(chosen);
            }
        }
    }
    // A term that contains another selects a subset of its nodes.
    let all = terms.clone();
    terms.retain(|t| {
        !all.iter()
            .any(|o| o != t && o.len() < t.len() && o.iter().all(|f| t.contains(f)))
    });
    terms.sort();
    terms
}

/// The Slurm form of `terms`: `a&b` for one, `(a&b)|c` for several
/// (parenthesised, since Slurm evaluates left to right).
pub fn slurm(terms: &[Vec<String>]) -> String {
    let parts: Vec<String> = terms
        .iter()
        .map(|t| {
            let j = t.join("&");
            if t.len() > 1 && terms.len() > 1 {
                format!("({j})")
            } else {
                j
            }
        })
        .collect();
    parts.join("|")
}

/// The user's constraint and hpcc's, both required: `(user)&(hpcc)`.
pub fn combine(user: &str, hpcc: &str) -> String {
    format!("({user})&({hpcc})")
}

/// Kubernetes' form: a pod's `affinity.nodeAffinity` requiring one node
/// selector term per conjunction (terms are ORed, a term's expressions
/// ANDed), on the labels NFD gives the features
/// (`feature.node.kubernetes.io/NAME=true`).
pub fn k8s_affinity(terms: &[Vec<String>]) -> String {
    let mut out = String::from(
        "affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n",
    );
    for t in terms {
        out.push_str("      - matchExpressions:\n");
        for f in t {
            out.push_str(&format!(
                "          - key: feature.node.kubernetes.io/{f}\n            operator: In\n            values: [\"true\"]\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn class(names: &[&str], runs: bool) -> ClassFeatures {
        ClassFeatures {
            features: set(names),
            runs,
        }
    }

    #[test]
    fn slurm_evaluates_left_to_right_and_so_does_the_reader() {
        let e = Expr::parse("a|b&c").unwrap();
        // (a|b)&c: a alone is not enough.
        assert!(!e.matches(&set(&["a"])));
        assert!(e.matches(&set(&["a", "c"])));
        let e = Expr::parse("a|(b&c)").unwrap();
        assert!(e.matches(&set(&["a"])));
        assert!(!e.matches(&set(&["b"])));
        assert!(!Expr::parse("x*2&y").unwrap().matches(&set(&[])));
        assert!(Expr::parse("[a|b]&c").unwrap().set_wide);
        assert!(Expr::parse("a*2").unwrap().set_wide);
        assert!(!Expr::parse("(a&b)|c").unwrap().set_wide);
    }

    #[test]
    fn bad_constraints_are_refused_with_where() {
        for bad in ["", "a&", "&a", "a,b", "(a", "a)", "a*", "!a", "a b", "[a|b"] {
            assert!(Expr::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Expr::parse(&"a&".repeat(3000)).unwrap_err(),
            ConstraintError::TooLong
        );
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(Expr::parse(&deep).unwrap_err(), ConstraintError::TooDeep);
    }

    #[test]
    fn the_running_class_is_singled_out_by_its_most_general_distinct_feature() {
        let v4 = [
            "hpcc.cpu.x86_64",
            "hpcc.cpu.x86_64_v2",
            "hpcc.cpu.x86_64_v3",
            "hpcc.cpu.x86_64_v4",
            "hpcc.cpu.zen4",
            "hpcc.mpi.mpich",
        ];
        let v2 = ["hpcc.cpu.x86_64", "hpcc.cpu.x86_64_v2", "hpcc.mpi.mpich"];
        let v3 = [
            "hpcc.cpu.x86_64",
            "hpcc.cpu.x86_64_v2",
            "hpcc.cpu.x86_64_v3",
            "hpcc.cpu.haswell",
            "hpcc.mpi.mpich",
        ];
        // An x86_64_v4 image: only the v4 class.
        let t = derive(&[class(&v4, true), class(&v2, false), class(&v3, false)]);
        assert_eq!(slurm(&t), "hpcc.cpu.x86_64_v4");
        // An x86_64_v3 image: v3 and v4 share x86_64_v3, one term.
        let t = derive(&[class(&v4, true), class(&v2, false), class(&v3, true)]);
        assert_eq!(slurm(&t), "hpcc.cpu.x86_64_v3");
        // Everything runs it: still only nodes that publish hpcc's features.
        let t = derive(&[class(&v4, true), class(&v2, true)]);
        assert_eq!(slurm(&t), "hpcc.cpu.x86_64");
        // Nothing runs it.
        assert!(derive(&[class(&v2, false)]).is_empty());
        // MPI sets the v4 class without MPICH apart.
        let v4_bare: Vec<&str> = v4[..5].to_vec();
        let t = derive(&[
            class(&v4, true),
            class(&v4_bare, false),
            class(&v2, false),
            class(&v3, false),
        ]);
        assert_eq!(slurm(&t), "hpcc.cpu.x86_64_v4&hpcc.mpi.mpich");
        let e = Expr::parse(&slurm(&t)).unwrap();
        assert!(e.matches(&set(&v4)) && !e.matches(&set(&v4_bare)));
    }

    #[test]
    fn classes_of_different_needs_are_ored_in_parentheses_and_implied_terms_dropped() {
        let a = class(&["cpu.a", "gpu.x", "mpi"], true);
        let b = class(&["cpu.b", "mpi"], true);
        let c = class(&["cpu.a", "mpi"], false);
        let d = class(&["cpu.b", "cuda"], false);
        let t = derive(&[a.clone(), b.clone(), c.clone(), d.clone()]);
        let s = slurm(&t);
        assert_eq!(s, "(cpu.b&mpi)|gpu.x");
        let e = Expr::parse(&s).unwrap();
        for k in [&a, &b, &c, &d] {
            assert_eq!(e.matches(&k.features), k.runs, "{s} on {:?}", k.features);
        }
        // A running class whose features another, refused class all has
        // cannot be singled out without negation: it is left out.
        let t = derive(&[class(&["x"], true), class(&["x", "y"], false)]);
        assert!(t.is_empty());
        assert_eq!(combine("big|small", "cpu.a"), "(big|small)&(cpu.a)");
    }

    #[test]
    fn affinity_has_one_selector_term_per_conjunction() {
        let y = k8s_affinity(&[vec!["a".into(), "b".into()], vec!["c".into()]]);
        assert_eq!(y.matches("- matchExpressions:").count(), 2);
        assert_eq!(y.matches("operator: In").count(), 3);
        assert!(y.contains("key: feature.node.kubernetes.io/a\n"), "{y}");
    }
}
