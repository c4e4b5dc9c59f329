//! Decoding of the app-level policies that sit outside the instance hash:
//! `max-memory` and `watch`.

use std::collections::HashMap;
use std::path::PathBuf;

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::kdl_value::Diagnostics;
use super::{MemoryLimit, WatchSpec};

const WATCH_KEYS: &[&str] = &["ignore", "debounce", "poll", "follow-symlinks"];

/// `max-memory "300M" every="1s"`.
pub(crate) fn decode_max_memory(d: &mut Diagnostics, node: &KdlNode) -> Option<MemoryLimit> {
    let before = d.errors.len();
    let shape = d.shape(node, &["every"]);
    d.no_children(node);
    d.at_most_args(node, &shape.args, 1);
    let Some(limit) = shape.args.first() else {
        d.at(node.span(), "`max-memory` needs a size, e.g. `max-memory \"300M\"`");
        return None;
    };
    let bytes = d.size(limit, "`max-memory`");
    if bytes == Some(0) {
        d.at(limit.span(), "`max-memory` must be above 0");
    }
    let mut every = None;
    for (_, entry) in shape.props {
        every = d.duration(entry, "`every` of `max-memory`");
        if every.is_some_and(|e| e.is_zero()) {
            d.at(entry.span(), "`every` of `max-memory` must be above 0");
        }
    }
    (d.errors.len() == before).then_some(MemoryLimit { bytes: bytes?, every })
}

/// `watch #true`, `watch #false`, `watch "src" "lib" { ignore "*.tmp"; debounce "200ms"; poll #true; follow-symlinks #true }`.
/// Returns `Some(None)` for `watch #false`; paths are as written.
pub(crate) fn decode_watch(d: &mut Diagnostics, node: &KdlNode) -> Option<Option<WatchSpec>> {
    let before = d.errors.len();
    let shape = d.shape(node, &[]);
    let mut paths = Vec::new();
    let mut enabled = true;
    for (i, entry) in shape.args.iter().enumerate() {
        match entry.value() {
            KdlValue::Bool(b) if shape.args.len() == 1 && i == 0 => enabled = *b,
            KdlValue::String(s) if !s.is_empty() => paths.push(PathBuf::from(s)),
            _ => d.wrong(entry, "`watch`", "paths as strings, or #true / #false"),
        }
    }
    let mut spec = WatchSpec {
        paths,
        ignore: Vec::new(),
        debounce: WatchSpec::DEFAULT_DEBOUNCE,
        poll: false,
        follow_symlinks: false,
    };
    let mut seen = HashMap::new();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        let key = child.name().value();
        if WATCH_KEYS.contains(&key) && !d.first_time(&mut seen, child, "`watch`") {
            continue;
        }
        match key {
            "ignore" => {
                let globs = d.string_args(child).unwrap_or_default();
                for g in &globs {
                    if let Err(e) = globset::Glob::new(g) {
                        d.at(child.span(), format!("invalid glob `{g}` in `ignore`: {e}"));
                    }
                }
                spec.ignore = globs;
            }
            "debounce" => {
                if let Some(args) = d.plain_args(child, 1, 1) {
                    spec.debounce = d.duration(args[0], "`debounce`").unwrap_or(spec.debounce);
                }
            }
            "poll" | "follow-symlinks" => {
                if let Some(args) = d.plain_args(child, 1, 1) {
                    let value = d.bool(args[0], &format!("`{key}`")).unwrap_or(false);
                    if key == "poll" {
                        spec.poll = value;
                    } else {
                        spec.follow_symlinks = value;
                    }
                }
            }
            _ => d.unknown_key(child, "`watch`", WATCH_KEYS),
        }
    }
    if d.errors.len() != before {
        return None;
    }
    Some(enabled.then_some(spec))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::spec::decode::decode_one_key as decode;

    #[test]
    fn max_memory() {
        let a = decode("max-memory \"300M\" every=\"500ms\"").unwrap();
        let m = a.max_memory.unwrap();
        assert_eq!(m.bytes, 300 * 1024 * 1024);
        assert_eq!(m.every, Some(Duration::from_millis(500)));
        assert_eq!(decode("max-memory 4096").unwrap().max_memory.unwrap().bytes, 4096);
        for bad in [
            "max-memory",
            "max-memory \"lots\"",
            "max-memory 0",
            "max-memory \"1M\" every=\"0s\"",
            "max-memory \"1M\" evry=\"1s\"",
        ] {
            let errors = decode(bad).unwrap_err();
            assert!(errors[0].starts_with("t.kdl:3:"), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn watch() {
        let w = decode("watch #true").unwrap().watch.unwrap();
        assert!(w.paths.is_empty());
        assert_eq!(w.debounce, Duration::from_millis(100));
        assert!(decode("watch #false").unwrap().watch.is_none());
        let w = decode("watch \"src\" \"lib\" {\n ignore \"*.tmp\" \"dist\"\n debounce \"250ms\"\n poll #true\n follow-symlinks #true\n }")
            .unwrap()
            .watch
            .unwrap();
        assert_eq!(w.paths, [Path::new("src"), Path::new("lib")]);
        assert_eq!(w.ignore, ["*.tmp", "dist"]);
        assert_eq!(w.debounce, Duration::from_millis(250));
        assert!(w.poll && w.follow_symlinks);
        let w = decode("watch { ignore \"x\"; }").unwrap().watch.unwrap();
        assert!(w.paths.is_empty(), "a block alone watches the cwd");
        for bad in [
            "watch 3",
            "watch \"a\" #true",
            "watch { ignor \"x\"; }",
            "watch { ignore \"[\"; }",
            "watch { debounce 5; }",
        ] {
            let errors = decode(bad).unwrap_err();
            assert!(errors[0].starts_with("t.kdl:3:"), "{bad}: {errors:?}");
        }
    }
}
