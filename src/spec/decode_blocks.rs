//! Decoding of the nested setting blocks of an app: `stop`, `restart` (with
//! `backoff`) and `logs` (with `rotate`).
//!
//! Split from `decode` so that file holds the app-level structure and this
//! one the per-block syntax; each function records its errors and returns
//! `None` when the block had any.

use std::collections::HashMap;
use std::path::PathBuf;

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::kdl_value::Diagnostics;
use super::{BackoffSpec, LogFormat, LogSpec, RestartPolicy, RestartSpec, RotateSpec, StopSpec};

const RESTART_KEYS: &[&str] = &["delay", "backoff", "max-restarts"];
const LOG_KEYS: &[&str] = &["out", "err", "combined", "format", "timestamp", "merge", "rotate"];

/// `stop signal="SIGINT" timeout="1600ms"`.
pub(crate) fn decode_stop(d: &mut Diagnostics, node: &KdlNode) -> Option<StopSpec> {
    let before = d.errors.len();
    let shape = d.shape(node, &["signal", "timeout"]);
    d.no_children(node);
    if let Some(arg) = shape.args.first() {
        d.at(arg.span(), "`stop` takes only properties: `stop signal=\"SIGINT\" timeout=\"1600ms\"`");
    }
    let mut stop = StopSpec::default();
    for (name, entry) in shape.props {
        match name {
            "signal" => stop.signal = d.signal(entry, "`signal` of `stop`").unwrap_or(stop.signal),
            _ => stop.timeout = d.duration(entry, "`timeout` of `stop`").unwrap_or(stop.timeout),
        }
    }
    (d.errors.len() == before).then_some(stop)
}

/// `restart "policy" { delay; backoff; max-restarts N min-uptime= }`.
pub(crate) fn decode_restart(d: &mut Diagnostics, node: &KdlNode) -> Option<RestartSpec> {
    let before = d.errors.len();
    let shape = d.shape(node, &[]);
    d.at_most_args(node, &shape.args, 1);
    let mut restart = RestartSpec::default();
    if let Some(entry) = shape.args.first() {
        match entry.value() {
            KdlValue::String(s) if s == "always" => restart.policy = RestartPolicy::Always,
            KdlValue::String(s) if s == "on-failure" => restart.policy = RestartPolicy::OnFailure,
            KdlValue::String(s) if s == "never" => restart.policy = RestartPolicy::Never,
            _ => d.wrong(entry, "`restart` policy", "\"always\", \"on-failure\" or \"never\""),
        }
    }
    let mut seen = HashMap::new();
    for child in node.children().map(KdlDocument::nodes).unwrap_or_default() {
        let key = child.name().value();
        if RESTART_KEYS.contains(&key) && !d.first_time(&mut seen, child, "`restart`") {
            continue;
        }
        match key {
            "delay" => {
                if let Some(args) = d.plain_args(child, 1, 1) {
                    restart.delay = d.duration(args[0], "`delay`").unwrap_or_default();
                }
            }
            "backoff" => restart.backoff = decode_backoff(d, child),
            "max-restarts" => {
                let shape = d.shape(child, &["min-uptime"]);
                d.no_children(child);
                d.at_most_args(child, &shape.args, 1);
                match shape.args.first() {
                    Some(entry) => restart.max_restarts = d.u32(entry, "`max-restarts`").unwrap_or_default(),
                    None => d.at(child.span(), "`max-restarts` expects a count: `max-restarts 16 min-uptime=\"1s\"`"),
                }
                if let Some((_, entry)) = shape.props.first() {
                    restart.min_uptime = d.duration(entry, "`min-uptime`").unwrap_or_default();
                }
            }
            _ => d.unknown_key(child, "`restart`", RESTART_KEYS),
        }
    }
    (d.errors.len() == before).then_some(restart)
}

/// `backoff initial="100ms" factor=1.5 max="15s" reset-after="30s"`; every
/// property is optional and defaults to PM2's value.
fn decode_backoff(d: &mut Diagnostics, node: &KdlNode) -> Option<BackoffSpec> {
    let shape = d.shape(node, &["initial", "factor", "max", "reset-after"]);
    d.no_children(node);
    d.at_most_args(node, &shape.args, 0);
    let mut backoff = BackoffSpec::default();
    for (name, entry) in shape.props {
        let what = format!("`{name}` of `backoff`");
        match name {
            "initial" => backoff.initial = d.duration(entry, &what).unwrap_or_default(),
            "max" => backoff.max = d.duration(entry, &what).unwrap_or_default(),
            "reset-after" => backoff.reset_after = d.duration(entry, &what).unwrap_or_default(),
            _ => match d.f64(entry, &what) {
                Some(factor) if factor >= 1.0 => backoff.factor = factor,
                Some(_) => d.at(entry.span(), format!("{what} must be at least 1")),
                None => {}
            },
        }
    }
    Some(backoff)
}

/// `logs { out; err; combined; format; timestamp; merge; rotate }`.
pub(crate) fn decode_logs(d: &mut Diagnostics, node: &KdlNode) -> Option<LogSpec> {
    let before = d.errors.len();
    let shape = d.shape(node, &[]);
    d.at_most_args(node, &shape.args, 0);
    let Some(children) = node.children() else {
        d.at(node.span(), "`logs` expects a block: `logs { out \"/var/log/app.log\" }`");
        return None;
    };
    let mut logs = LogSpec::default();
    let mut seen = HashMap::new();
    for child in children.nodes() {
        let key = child.name().value();
        if LOG_KEYS.contains(&key) && !d.first_time(&mut seen, child, "`logs`") {
            continue;
        }
        match key {
            "out" => logs.out = d.string_arg(child).map(PathBuf::from),
            "err" => logs.err = d.string_arg(child).map(PathBuf::from),
            "combined" => logs.combined = d.string_arg(child).map(PathBuf::from),
            "timestamp" => logs.timestamp = d.string_arg(child),
            "format" => match d.string_arg(child).as_deref() {
                Some("plain") => logs.format = LogFormat::Plain,
                Some("json") => logs.format = LogFormat::Json,
                Some(other) => d.at(child.span(), format!("`format`: expected \"plain\" or \"json\", found {other:?}")),
                None => {}
            },
            "merge" => {
                if let Some(args) = d.plain_args(child, 1, 1) {
                    logs.merge = d.bool(args[0], "`merge`").unwrap_or_default();
                }
            }
            "rotate" => logs.rotate = decode_rotate(d, child),
            _ => d.unknown_key(child, "`logs`", LOG_KEYS),
        }
    }
    (d.errors.len() == before).then_some(logs)
}

/// `rotate size="10M" keep=5 compress=#false`; `size` is required.
fn decode_rotate(d: &mut Diagnostics, node: &KdlNode) -> Option<RotateSpec> {
    let shape = d.shape(node, &["size", "keep", "compress"]);
    d.no_children(node);
    d.at_most_args(node, &shape.args, 0);
    let mut rotate = RotateSpec { size: 0, keep: 5, compress: false };
    let mut has_size = false;
    for (name, entry) in shape.props {
        let what = format!("`{name}` of `rotate`");
        match name {
            "size" => {
                has_size = true;
                rotate.size = d.size(entry, &what).unwrap_or_default();
            }
            "keep" => rotate.keep = d.u32(entry, &what).unwrap_or_default(),
            _ => rotate.compress = d.bool(entry, &what).unwrap_or_default(),
        }
    }
    if !has_size {
        d.at(node.span(), "`rotate` needs `size=`, e.g. `rotate size=\"10M\" keep=5`");
    }
    Some(rotate)
}
