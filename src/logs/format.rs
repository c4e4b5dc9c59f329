//! How a chunk of whole lines becomes the bytes written to a file: as is
//! (plain), with a timestamp prefix, or as JSON lines.
//!
//! The clock is read once per chunk, not per line, and output is built in a
//! buffer reused across chunks, so the cost per line is a copy plus (JSON) an
//! escape scan.
//!
//! # Timestamp syntax
//!
//! `timestamp "FORMAT"` takes chrono's strftime syntax in **local time**
//! (<https://docs.rs/chrono/latest/chrono/format/strftime/>), e.g.
//! `%Y-%m-%d %H:%M:%S%.3f` (the default when the given format is invalid,
//! with a warning). The stamp and one space precede each plain line.
//!
//! # JSON lines
//!
//! One object per line: `timestamp` (RFC 3339, milliseconds, local offset),
//! `type` (`out`/`err`), `app`, `instance`, PM2's `app_name` and
//! `process_id` (same values), and `message` (the line without its newline;
//! invalid UTF-8 is replaced by U+FFFD so the JSON stays valid).

use std::io::Write;

use chrono::format::{Item, StrftimeItems};
use chrono::{Local, SecondsFormat};

/// The default timestamp format, also used when a given one is invalid.
pub const DEFAULT_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The app's stdout.
    Out,
    /// The app's stderr.
    Err,
}

impl Stream {
    /// The name used in file names and JSON `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

enum Style {
    /// Bytes pass through untouched: the hot path.
    Plain,
    /// Parsed once so formatting a stamp does not re-parse the pattern.
    Timestamped(Vec<Item<'static>>),
    /// Every field after `timestamp`, pre-rendered, ending with `"message":"`.
    Json(Vec<u8>),
}

/// Formats chunks of whole lines for one stream of one instance.
pub struct Formatter {
    style: Style,
    /// Reused output buffer.
    out: Vec<u8>,
}

impl Formatter {
    /// Bytes written as read.
    pub fn plain() -> Formatter {
        Formatter { style: Style::Plain, out: Vec::new() }
    }

    /// Each line prefixed by the local time in strftime `format`.
    pub fn timestamped(format: &str) -> Formatter {
        let mut items: Vec<Item<'static>> = StrftimeItems::new(format).parse_to_owned().unwrap_or_default();
        if items.is_empty() || items.iter().any(|i| matches!(i, Item::Error)) {
            tracing::warn!(format, "invalid log timestamp format; using {DEFAULT_TIMESTAMP}");
            items = StrftimeItems::new(DEFAULT_TIMESTAMP).parse_to_owned().unwrap_or_default();
        }
        Formatter { style: Style::Timestamped(items), out: Vec::new() }
    }

    /// JSON lines carrying the app, instance and stream.
    pub fn json(app: &str, instance: u32, stream: Stream) -> Formatter {
        let app = serde_json::to_string(app).unwrap_or_else(|_| "\"\"".into());
        let fields = format!(
            "\",\"type\":\"{}\",\"app\":{app},\"instance\":{instance},\"app_name\":{app},\"process_id\":{instance},\"message\":\"",
            stream.as_str()
        );
        Formatter { style: Style::Json(fields.into_bytes()), out: Vec::new() }
    }

    /// The bytes to write for `lines` (whole lines, each ending in '\n').
    pub fn format<'a>(&'a mut self, lines: &'a [u8]) -> &'a [u8] {
        self.out.clear();
        match &self.style {
            Style::Plain => return lines,
            Style::Timestamped(items) => {
                let mut stamp = Vec::with_capacity(32);
                let _ = write!(stamp, "{} ", Local::now().format_with_items(items.iter()));
                for line in each_line(lines) {
                    self.out.extend_from_slice(&stamp);
                    self.out.extend_from_slice(line);
                }
            }
            Style::Json(fields) => {
                self.out.reserve(lines.len() * 2);
                let mut head = b"{\"timestamp\":\"".to_vec();
                head.extend_from_slice(Local::now().to_rfc3339_opts(SecondsFormat::Millis, false).as_bytes());
                head.extend_from_slice(fields);
                for line in each_line(lines) {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    self.out.extend_from_slice(&head);
                    if is_plain_ascii(line) {
                        self.out.extend_from_slice(line);
                    } else {
                        escape_into(&mut self.out, &String::from_utf8_lossy(line));
                    }
                    self.out.extend_from_slice(b"\"}\n");
                }
            }
        }
        &self.out
    }
}

/// The lines of `data`, each with its '\n', found with SIMD `memchr`.
fn each_line(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data).map(move |i| {
        let line = &data[start..=i];
        start = i + 1;
        line
    })
}

/// True when `line` is ASCII needing no JSON escape: the common case, copied
/// as is. Written branch-free so the compiler vectorises it.
fn is_plain_ascii(line: &[u8]) -> bool {
    !line.iter().fold(false, |bad, &b| bad | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\'))
}

/// Bytes that must be escaped inside a JSON string.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` JSON-escaped, copying runs of plain bytes in one go.
fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !NEEDS_ESCAPE[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_parse_with_every_field() {
        let mut f = Formatter::json("we\"b", 2, Stream::Err);
        let out = f.format(b"hello \"x\"\t\x01\n\xffbad\n").to_vec();
        let lines: Vec<serde_json::Value> =
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "hello \"x\"\t\u{1}");
        assert_eq!(lines[0]["type"], "err");
        assert_eq!(lines[0]["app"], "we\"b");
        assert_eq!(lines[0]["process_id"], 2);
        assert_eq!(lines[1]["message"], "\u{fffd}bad");
        assert!(chrono::DateTime::parse_from_rfc3339(lines[1]["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn timestamp_prefixes_each_line_and_bad_formats_fall_back() {
        let mut f = Formatter::timestamped("[%Y]");
        let out = String::from_utf8(f.format(b"a\nb\n").to_vec()).unwrap();
        assert!(out.lines().all(|l| l.starts_with("[20") && l.len() == 8), "{out}");
        let mut bad = Formatter::timestamped("%Q%");
        assert!(bad.format(b"a\n").len() > 20);
    }
}
