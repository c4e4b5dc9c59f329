//! Located reading of KDL nodes: byte offsets to lines and columns, and
//! typed accessors that record a [`SpecError`] instead of failing.
//!
//! The decoder asks questions such as "the single string argument of this
//! node"; each helper answers `None` after recording an error at the
//! offending node or entry, so decoding carries on and a file's errors are
//! all reported at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdl::{KdlEntry, KdlError, KdlNode, KdlValue};
use miette::SourceSpan;

use super::SpecError;
use super::units;

/// A 1-based line and column in a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    /// Counted in characters, not bytes.
    pub column: usize,
}

/// A decoded value with the position of the node that declared it, kept for
/// errors found later (resolving an interpreter, reading an env file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

/// Turns the parser's byte offsets into lines and columns.
struct Locator<'t> {
    text: &'t str,
    /// Byte offset where each line starts; the first is always 0.
    line_starts: Vec<usize>,
}

impl<'t> Locator<'t> {
    fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Locator { text, line_starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let index = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(index).copied().unwrap_or(0);
        // A span never splits a character, but do not trust that blindly.
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        Pos { line: index + 1, column: column + 1 }
    }
}

/// The errors of one file, collected while decoding it.
pub(crate) struct Diagnostics<'t> {
    file: PathBuf,
    locator: Locator<'t>,
    pub errors: Vec<SpecError>,
}

/// A node's entries split into positional arguments and properties.
pub(crate) struct Shape<'n> {
    pub args: Vec<&'n KdlEntry>,
    pub props: Vec<(&'n str, &'n KdlEntry)>,
}

impl<'t> Diagnostics<'t> {
    pub fn new(file: &Path, text: &'t str) -> Self {
        Diagnostics { file: file.to_path_buf(), locator: Locator::new(text), errors: Vec::new() }
    }

    pub fn pos(&self, span: SourceSpan) -> Pos {
        self.locator.pos(span.offset())
    }

    /// Records an error at the start of `span`.
    pub fn at(&mut self, span: SourceSpan, message: impl Into<String>) {
        let pos = self.pos(span);
        self.at_pos(pos, message);
    }

    pub fn at_pos(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    /// Converts a parse failure: one error per parser diagnostic.
    pub fn kdl_error(&mut self, error: &KdlError) {
        for diagnostic in &error.diagnostics {
            let mut message = diagnostic.message.clone().unwrap_or_else(|| "invalid KDL".into());
            if let Some(label) = &diagnostic.label {
                message.push_str(&format!(" ({label})"));
            }
            if let Some(help) = &diagnostic.help {
                message.push_str(&format!("; {help}"));
            }
            self.at(diagnostic.span, format!("invalid KDL: {message}"));
        }
        if error.diagnostics.is_empty() {
            self.at_pos(Pos { line: 1, column: 1 }, "invalid KDL document");
        }
    }

    /// Errors on a key the context does not know, suggesting the closest.
    pub fn unknown_key(&mut self, node: &KdlNode, context: &str, known: &[&str]) {
        let key = node.name().value();
        let message = format!("unknown key `{key}` in {context}; {}", expected_one_of(key, known));
        self.at(node.span(), message);
    }

    /// Records that `node` appeared; errors when a key that may appear only
    /// once in `context` appears again.
    pub fn first_time(&mut self, seen: &mut HashMap<String, Pos>, node: &KdlNode, context: &str) -> bool {
        let key = node.name().value();
        if let Some(first) = seen.get(key) {
            let message = format!("`{key}` is given twice in {context}; first at line {}", first.line);
            self.at(node.span(), message);
            return false;
        }
        seen.insert(key.to_string(), self.pos(node.span()));
        true
    }

    /// Splits entries, rejecting properties outside `allowed` and repeated ones.
    pub fn shape<'n>(&mut self, node: &'n KdlNode, allowed: &[&str]) -> Shape<'n> {
        let key = node.name().value();
        let mut shape = Shape { args: Vec::new(), props: Vec::new() };
        for entry in node.entries() {
            let Some(name) = entry.name() else {
                shape.args.push(entry);
                continue;
            };
            let name = name.value();
            if allowed.is_empty() {
                self.at(entry.span(), format!("`{key}` takes no properties, found `{name}=`"));
            } else if !allowed.contains(&name) {
                let message = format!("unknown property `{name}` of `{key}`; {}", expected_one_of(name, allowed));
                self.at(entry.span(), message);
            } else if shape.props.iter().any(|(seen, _)| *seen == name) {
                self.at(entry.span(), format!("property `{name}` of `{key}` is given twice"));
            } else {
                shape.props.push((name, entry));
            }
        }
        shape
    }

    /// Errors when a node that takes no block has one.
    pub fn no_children(&mut self, node: &KdlNode) -> bool {
        if node.children().is_some() {
            self.at(node.span(), format!("`{}` takes no `{{ ... }}` block", node.name().value()));
            return false;
        }
        true
    }

    /// Errors on positional arguments past `max`.
    pub fn at_most_args(&mut self, node: &KdlNode, args: &[&KdlEntry], max: usize) -> bool {
        if let Some(extra) = args.get(max) {
            let key = node.name().value();
            let message = format!("unexpected extra argument to `{key}` (it takes {})", count(max, "argument"));
            self.at(extra.span(), message);
            return false;
        }
        true
    }

    /// The positional arguments of a plain `key ARG...` node (no properties,
    /// no block), at least `min` of them and at most `max`.
    pub fn plain_args<'n>(&mut self, node: &'n KdlNode, min: usize, max: usize) -> Option<Vec<&'n KdlEntry>> {
        let before = self.errors.len();
        let shape = self.shape(node, &[]);
        self.no_children(node);
        if shape.args.len() < min {
            let key = node.name().value();
            let message = format!("`{key}` expects {}, found {}", count(min, "argument"), shape.args.len());
            self.at(node.span(), message);
        }
        self.at_most_args(node, &shape.args, max);
        (self.errors.len() == before).then_some(shape.args)
    }

    /// The single string argument of `key "VALUE"`.
    pub fn string_arg(&mut self, node: &KdlNode) -> Option<String> {
        let args = self.plain_args(node, 1, 1)?;
        self.string(args[0], &format!("`{}`", node.name().value()))
    }

    /// One or more string arguments of `key "A" "B" ...`.
    pub fn string_args(&mut self, node: &KdlNode) -> Option<Vec<String>> {
        let args = self.plain_args(node, 1, usize::MAX)?;
        let what = format!("`{}`", node.name().value());
        let strings: Vec<Option<String>> = args.iter().map(|entry| self.string(entry, &what)).collect();
        strings.into_iter().collect()
    }

    /// Complains that `entry`, the value of `what`, is not what was expected.
    pub fn wrong(&mut self, entry: &KdlEntry, what: &str, expected: &str) {
        let message = format!("{what}: expected {expected}, found {}", describe(entry.value()));
        self.at(entry.span(), message);
    }

    pub fn string(&mut self, entry: &KdlEntry, what: &str) -> Option<String> {
        match entry.value() {
            KdlValue::String(s) => Some(s.clone()),
            _ => {
                self.wrong(entry, what, "a string");
                None
            }
        }
    }

    /// Accepts `#true`/`#false` (v2) and `true`/`false` (v1).
    pub fn bool(&mut self, entry: &KdlEntry, what: &str) -> Option<bool> {
        match entry.value() {
            KdlValue::Bool(b) => Some(*b),
            _ => {
                self.wrong(entry, what, "#true or #false");
                None
            }
        }
    }

    pub fn u32(&mut self, entry: &KdlEntry, what: &str) -> Option<u32> {
        match entry.value() {
            KdlValue::Integer(n) if u32::try_from(*n).is_ok() => u32::try_from(*n).ok(),
            _ => {
                self.wrong(entry, what, "a whole number >= 0");
                None
            }
        }
    }

    pub fn f64(&mut self, entry: &KdlEntry, what: &str) -> Option<f64> {
        match entry.value() {
            KdlValue::Float(f) if f.is_finite() => Some(*f),
            KdlValue::Integer(n) => Some(*n as f64),
            _ => {
                self.wrong(entry, what, "a number");
                None
            }
        }
    }

    /// Durations are strings so the unit is always visible: a bare `1600`
    /// could mean seconds (systemd) or milliseconds (PM2).
    pub fn duration(&mut self, entry: &KdlEntry, what: &str) -> Option<Duration> {
        let KdlValue::String(text) = entry.value() else {
            self.wrong(entry, what, "a duration string like \"1600ms\"");
            return None;
        };
        self.parsed(entry, what, units::parse_duration(text))
    }

    /// Sizes: an integer of bytes, or a string with a K/M/G suffix.
    pub fn size(&mut self, entry: &KdlEntry, what: &str) -> Option<u64> {
        match entry.value() {
            KdlValue::Integer(n) if u64::try_from(*n).is_ok() => u64::try_from(*n).ok(),
            KdlValue::String(text) => self.parsed(entry, what, units::parse_size(text)),
            _ => {
                self.wrong(entry, what, "a size like \"10M\" or a number of bytes");
                None
            }
        }
    }

    /// Signals: a name like `"SIGINT"` or a number 1..=64.
    pub fn signal(&mut self, entry: &KdlEntry, what: &str) -> Option<i32> {
        match entry.value() {
            KdlValue::Integer(n) => self.parsed(entry, what, units::signal_number(*n)),
            KdlValue::String(text) => self.parsed(entry, what, units::parse_signal_name(text)),
            _ => {
                self.wrong(entry, what, "a signal name like \"SIGINT\" or a number");
                None
            }
        }
    }

    fn parsed<T>(&mut self, entry: &KdlEntry, what: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.at(entry.span(), format!("{what}: {message}"))).ok()
    }
}

/// How a value reads in a message: `string "x"`, `integer 5`, `#true`.
pub fn describe(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("string {s:?}"),
        KdlValue::Integer(n) => format!("integer {n}"),
        KdlValue::Float(f) => format!("number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".to_string(),
    }
}

/// "expected one of `a`, `b`; did you mean `a`?"
pub fn expected_one_of(word: &str, known: &[&str]) -> String {
    let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    let mut message = format!("expected one of {}", list.join(", "));
    if let Some(best) = did_you_mean(word, known) {
        message.push_str(&format!("; did you mean `{best}`?"));
    }
    message
}

/// The known word closest to a typo, if it is close enough to be a guess
/// worth showing.
pub fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(word, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let locator = Locator::new("ab\né x\n\nz");
        assert_eq!(locator.pos(0), Pos { line: 1, column: 1 });
        assert_eq!(locator.pos(1), Pos { line: 1, column: 2 });
        assert_eq!(locator.pos(3), Pos { line: 2, column: 1 });
        // 'é' is two bytes; the 'x' after it is the third character.
        assert_eq!(locator.pos(6), Pos { line: 2, column: 3 });
        assert_eq!(locator.pos(8), Pos { line: 3, column: 1 });
        assert_eq!(locator.pos(9), Pos { line: 4, column: 1 });
        assert_eq!(locator.pos(999), Pos { line: 4, column: 2 });
        // Inside a character: still answers, never panics.
        assert_eq!(locator.pos(4).line, 2);
    }

    #[test]
    fn suggestions() {
        let known = ["instances", "interpreter", "env", "env-file"];
        assert_eq!(did_you_mean("instanse", &known), Some("instances"));
        assert_eq!(did_you_mean("envfile", &known), Some("env-file"));
        assert_eq!(did_you_mean("zzz", &known), None);
    }
}
