//! The layering of `hpcc-common`, checked: the files of `common/src` form
//! a module graph without a cycle. An edge runs from a file to the file of
//! every module it names by a `crate::`, `super::` or `self::` path (in a
//! `use` or inline, test modules included), resolved to the longest module
//! prefix that is a file of its own. A parent naming its own child by a bare
//! relative path (`mod x; pub use x::Y;`) is containment, not an edge.
//!
//! A cycle means two layers each need the other, so neither can be read,
//! tested or changed alone; shared vocabulary goes into a small module below
//! both users instead (`verdict.rs`, `process.rs`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Tokens of a Rust source, comments and literals dropped, each with its
/// line (1-based).
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&c, i) {
            line += c[i..end].iter().filter(|&&x| x == '\n').count();
            i = end;
        } else if ch == '"' || (ch == 'b' && next == Some('"')) {
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if c.get(i) == Some(&'\n') {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && next == Some('\'')) {
            let q = if ch == 'b' { i + 1 } else { i };
            if c.get(q + 1) == Some(&'\\') {
                // An escaped char literal: skip to its closing quote.
                i = q + 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                // A lifetime or label: its name follows as an identifier.
                i = q + 1;
            }
        } else if ch == 'r' && next == Some('#') && c.get(i + 2).is_some_and(|&x| ident_start(x)) {
            i += 2; // a raw identifier
        } else if ident_start(ch) {
            let s = i;
            while i < c.len() && ident_start(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[s..i].iter().collect()), line));
        } else if ch == ':' && next == Some(':') {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// Where a raw (byte) string starting at `i` ends, if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    // (Only called at the start of a token: identifiers are taken whole.)
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// The paths of a use tree or inline path starting at `toks[*i]`, which
/// follows a `::`; each is the list of its segments after `prefix`.
fn path_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) | None => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        _ => path_tree(toks, i, path.clone(), out),
                    }
                }
            }
            Some(Tok::Ident(name)) => {
                *i += 1;
                if name != "self" {
                    path.push(name.clone());
                }
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Sep) {
                    *i += 1;
                    continue;
                }
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Ident("as".into())) {
                    *i += 2;
                }
                out.push(path);
                return;
            }
            _ => {
                // `*`, `<`: the path so far is what is named.
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Punct('*')) {
                    *i += 1;
                }
                out.push(path);
                return;
            }
        }
    }
}

/// The module of each file under `src`: `a/mod.rs` and `a.rs` are `a`,
/// `a/b.rs` is `a::b`, `lib.rs` is the root.
fn module_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, at: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let mut m = at.to_vec();
            if p.is_dir() {
                m.push(name);
                walk(&p, &m, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                if stem != "mod" && stem != "lib" {
                    m.push(stem.to_owned());
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// An edge: from a file to a file, with the line that makes it.
type Edges = BTreeMap<(Vec<String>, Vec<String>), usize>;

/// What one file's scan finds.
#[derive(Default)]
struct Scan {
    /// Absolute module paths named outside test code, with their lines.
    paths: Vec<(Vec<String>, usize)>,
    /// File modules declared under `#[cfg(test)]` (`mod tests;`).
    test_children: Vec<Vec<String>>,
}

/// Whether `toks[i..]` starts with `#[cfg(test)]`.
fn cfg_test_at(toks: &[(Tok, usize)], i: usize) -> bool {
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.len() >= i + want.len() && toks[i..i + want.len()].iter().map(|t| &t.0).eq(want.iter())
}

/// The paths of the file of `module`. Code under `#[cfg(test)]` is left
/// out: tests sit above every layer (a test of the image library scan's
/// bound may drive the MPI plan that uses it), so they are no part of the
/// layering.
fn scan(module: &[String], src: &str) -> Scan {
    let toks = tokens(src);
    let mut out = Scan::default();
    // Inline modules (`mod tests { .. }`) open at a brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    // A `#[cfg(test)]` item: the depth it starts at, whether its body
    // has opened.
    let mut test_item: Option<(usize, bool)> = None;
    let mut i = 0;
    while i < toks.len() {
        let line = toks[i].1;
        if test_item.is_none() && cfg_test_at(&toks, i) {
            test_item = Some((depth, false));
            i += 7;
            continue;
        }
        match &toks[i].0 {
            Tok::Punct('{') => {
                if let Some((d, opened)) = &mut test_item {
                    if *d == depth {
                        *opened = true;
                    }
                }
                depth += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                if test_item == Some((depth, true)) {
                    test_item = None;
                }
            }
            Tok::Punct(';') if test_item == Some((depth, false)) => test_item = None,
            Tok::Ident(kw) if kw == "mod" => match (toks.get(i + 1), toks.get(i + 2)) {
                (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) => {
                    inline.push((name.clone(), depth));
                }
                (Some((Tok::Ident(name), _)), Some((Tok::Punct(';'), _)))
                    if test_item.is_some() =>
                {
                    let mut child = module.to_vec();
                    child.extend(inline.iter().map(|m| m.0.clone()));
                    child.push(name.clone());
                    out.test_children.push(child);
                }
                _ => {}
            },
            Tok::Ident(head)
                if matches!(head.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep)
                    && (i == 0 || toks[i - 1].0 != Tok::Sep) =>
            {
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|m| m.0.clone()));
                let mut base = match head.as_str() {
                    "crate" => Vec::new(),
                    "self" => here,
                    _ => {
                        here.pop();
                        here
                    }
                };
                i += 2;
                while toks.get(i).map(|t| &t.0) == Some(&Tok::Ident("super".into()))
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep)
                {
                    base.pop();
                    i += 2;
                }
                let mut paths = Vec::new();
                path_tree(&toks, &mut i, base, &mut paths);
                if test_item.is_none() {
                    out.paths.extend(paths.into_iter().map(|p| (p, line)));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn edges(files: &BTreeMap<Vec<String>, PathBuf>) -> Edges {
    let scans: BTreeMap<&Vec<String>, Scan> = files
        .iter()
        .map(|(m, f)| (m, scan(m, &std::fs::read_to_string(f).unwrap())))
        .collect();
    let test_files: Vec<&Vec<String>> = scans.values().flat_map(|s| &s.test_children).collect();
    let is_test = |m: &Vec<String>| test_files.iter().any(|t| m.starts_with(t));
    let mut edges = Edges::new();
    for (module, scan) in &scans {
        if is_test(module) {
            continue;
        }
        for (p, line) in &scan.paths {
            let target = (0..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|m| files.contains_key(m))
                .unwrap();
            if &target != *module {
                edges.entry(((*module).clone(), target)).or_insert(*line);
            }
        }
    }
    edges
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<Vec<String>>> {
    let mut adj: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default();
    }
    struct T<'a> {
        adj: &'a BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, (usize, usize)>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, (n, n));
        t.stack.push(v);
        t.on.insert(v);
        for &w in &t.adj[v] {
            if !t.index.contains_key(w) {
                visit(t, w);
                let low = t.index[w].1.min(t.index[v].1);
                t.index.get_mut(v).unwrap().1 = low;
            } else if t.on.contains(w) {
                let low = t.index[w].0.min(t.index[v].1);
                t.index.get_mut(v).unwrap().1 = low;
            }
        }
        if t.index[v].0 == t.index[v].1 {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        adj: &adj,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in adj.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn common_has_no_module_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
    let edges = edges(&files);
    let cycles = cycles(&edges);
    let name = |m: &Vec<String>| files[m].strip_prefix(&src).unwrap().display().to_string();
    let mut report = String::new();
    for scc in &cycles {
        report += &format!("a cycle of {} files:\n", scc.len());
        for ((a, b), line) in &edges {
            if scc.contains(a) && scc.contains(b) {
                report += &format!("  {}:{} -> {}\n", name(a), line, name(b));
            }
        }
    }
    assert!(cycles.is_empty(), "{report}");
}

#[test]
fn the_scanner_sees_what_it_must() {
    let toks = tokens(
        "use crate::{a::{B, c::D as E}, f}; // crate::g::H\n\
         let s = \"crate::i::J\"; let r = r#\"crate::k\"#; let q = '\"';\n\
         fn f<'a>(x: &'a u8) -> crate::l::M<'a> { super::super::n::O }",
    );
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].0 == Tok::Ident("crate".into()) {
            i += 2;
            path_tree(&toks, &mut i, Vec::new(), &mut found);
        } else {
            i += 1;
        }
    }
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["a::B", "a::c::D", "f", "l::M"]);
}
