//! A small YAML reader for admin- and image-supplied documents (curated
//! collections, NFD compatibility specs).
//!
//! Built on `yaml-rust2`'s event parser rather than its loader, for two
//! reasons: aliases are refused (the loader copies an alias's whole subtree
//! each time, so a few lines of nested aliases expand to gigabytes), and a
//! scalar keeps the text it was written with, so `python.version: 3.10`
//! stays `3.10` instead of becoming the float 3.1. Depth and node count are
//! bounded too.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes in one document.
pub const MAX_NODES: usize = 200_000;

/// Why a YAML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: line {line}: {reason}")]
pub struct YamlError {
    /// The document (file name).
    pub what: String,
    /// Line of the problem (1-based; 0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A YAML node. Mapping keys are scalars (their text); order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A scalar as written (`~`/`null` are kept as text too).
    Scalar {
        /// The text.
        text: String,
        /// Line it starts on.
        line: usize,
    },
    /// A sequence.
    Seq(Vec<Node>, usize),
    /// A mapping.
    Map(Vec<(String, Node)>, usize),
}

impl Node {
    /// The line this node starts on.
    pub fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq(_, line) | Node::Map(_, line) => *line,
        }
    }

    /// The scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A mapping's entry.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A sequence's items (an empty slice for anything else).
    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq(items, _) => items,
            _ => &[],
        }
    }

    /// A mapping's entries (an empty slice for anything else).
    pub fn entries(&self) -> &[(String, Node)] {
        match self {
            Node::Map(entries, _) => entries,
            _ => &[],
        }
    }

    /// `null`, `~` or an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, .. } if text.is_empty() || text == "~" || text == "null")
    }
}

enum Frame {
    Seq(Vec<Node>, usize),
    Map(Vec<(String, Node)>, Option<String>, usize),
}

struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    nodes: usize,
    error: Option<(usize, String)>,
}

impl Builder {
    fn fail(&mut self, line: usize, reason: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some((line, reason.into()));
        }
    }

    fn push(&mut self, node: Node) {
        let line = node.line();
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, key, _)) => match key.take() {
                None => match node {
                    Node::Scalar { text, .. } => *key = Some(text),
                    _ => self.fail(line, "mapping keys must be plain scalars"),
                },
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(line, format!("more than {MAX_NODES} nodes"));
            return;
        }
        match ev {
            Event::Alias(_) => self.fail(line, "aliases (*name) are not accepted"),
            Event::Scalar(text, ..) => self.push(Node::Scalar { text, line }),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(line, format!("nested deeper than {MAX_DEPTH}"));
                    return;
                }
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new(), line)
                } else {
                    Frame::Map(Vec::new(), None, line)
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, l)) => self.push(Node::Seq(items, l)),
                Some(Frame::Map(entries, _, l)) => self.push(Node::Map(entries, l)),
                None => self.fail(line, "unbalanced collection end"),
            },
            _ => {}
        }
    }
}

/// Parses every document of `text`. `what` names it in errors.
pub fn parse(text: &str, what: &str) -> Result<Vec<Node>, YamlError> {
    let mut b = Builder {
        stack: Vec::new(),
        docs: Vec::new(),
        nodes: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    let res = parser.load(&mut b, true);
    if let Some((line, reason)) = b.error {
        return Err(YamlError {
            what: what.to_owned(),
            line,
            reason,
        });
    }
    res.map_err(|e| YamlError {
        what: what.to_owned(),
        line: e.marker().line(),
        reason: e.info().to_owned(),
    })?;
    Ok(b.docs)
}

/// Parses a one-document file.
pub fn parse_one(text: &str, what: &str) -> Result<Node, YamlError> {
    let mut docs = parse(text, what)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(YamlError {
            what: what.to_owned(),
            line: 0,
            reason: format!("expected one YAML document, found {n}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text() {
        let n = parse_one("a: 3.10\nb: 12.0\nc: '4.0'\nd: [x, y]\n", "t").unwrap();
        assert_eq!(n.get("a").unwrap().as_str(), Some("3.10"));
        assert_eq!(n.get("b").unwrap().as_str(), Some("12.0"));
        assert_eq!(n.get("c").unwrap().as_str(), Some("4.0"));
        assert_eq!(n.get("d").unwrap().items().len(), 2);
    }

    #[test]
    fn aliases_are_refused() {
        let bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n";
        let e = parse_one(bomb, "bomb.yaml").unwrap_err();
        assert!(e.reason.contains("aliases"), "{e}");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse_one(&deep, "deep").is_err());
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse_one("a: b\n  c: : d\n", "bad.yaml").unwrap_err();
        assert!(e.to_string().contains("bad.yaml"), "{e}");
    }
}
