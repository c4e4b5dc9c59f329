//! From a KDL document to unresolved app declarations ([`AppDecl`]).
//!
//! This module owns the spec *syntax*: which keys exist, what arguments and
//! properties each takes, and the errors for everything else. It does no
//! I/O; paths, env files and interpreters stay as written and are handled by
//! `resolve`. Every error of a file is collected, each with its line and
//! column, and an app with any error is left out of the result.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::decode_blocks::{decode_logs, decode_restart, decode_stop};
use super::kdl_value::{Diagnostics, Located, Pos, did_you_mean};
use super::{Instances, LogSpec, RestartSpec, SpecError, StopSpec};

/// Keys of the spec contract that this version parses but does not
/// implement; they get their own error so nobody is silently ignored.
/// Shrink this list as features land.
pub const NOT_YET_SUPPORTED: &[&str] = &["listen", "ready", "max-memory", "watch"];

/// The keys an `app` block accepts in this version.
const APP_KEYS: &[&str] = &[
    "run",
    "script",
    "interpreter",
    "args",
    "cwd",
    "user",
    "group",
    "groups",
    "instances",
    "env",
    "env-file",
    "stop",
    "restart",
    "logs",
];
/// Keys of an `app` block that may appear more than once.
const REPEATABLE: &[&str] = &["env", "env-file"];
/// Names reserved by the command line (`procd stop all`).
const RESERVED_NAMES: &[&str] = &["all"];

/// What an app runs, before the interpreter is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandDecl {
    /// `run "argv0" "arg"...`: executed as is.
    Run(Vec<String>),
    /// `script "path"`: interpreter chosen by extension or `interpreter`.
    Script(Located<String>),
}

/// One `app` node as written: valid syntax, not yet resolved against the
/// file system, the env profile or PATH.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDecl {
    pub name: String,
    /// Position of the `app` node; becomes [`SourceRef`](super::SourceRef)'s line.
    pub pos: Pos,
    pub command: CommandDecl,
    /// Only with `script`; a path or a bare name looked up in PATH.
    pub interpreter: Option<Located<String>>,
    /// Appended after the script (PM2's `args`); only with `script`.
    pub args: Vec<String>,
    /// As written; relative means relative to the declaring file's directory.
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub groups: Vec<String>,
    pub instances: Instances,
    /// The `env { }` block.
    pub env: BTreeMap<String, String>,
    /// `env "NAME" { }` blocks, applied over `env` when selected.
    pub env_profiles: BTreeMap<String, BTreeMap<String, String>>,
    /// `env-file` paths in declaration order (later files win).
    pub env_files: Vec<Located<String>>,
    pub stop: StopSpec,
    pub restart: RestartSpec,
    /// Log paths as written; `resolve` makes relative ones absolute.
    pub logs: LogSpec,
}

/// Decodes a whole spec file. Returns the apps that decoded without error
/// and every error found; the file is good only when the errors are empty.
pub fn decode_document(file: &Path, text: &str) -> (Vec<AppDecl>, Vec<SpecError>) {
    let mut d = Diagnostics::new(file, text);
    let document = match KdlDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            d.kdl_error(&error);
            return (Vec::new(), d.errors);
        }
    };
    let mut apps = Vec::new();
    let mut names: HashMap<String, Pos> = HashMap::new();
    for node in document.nodes() {
        if node.name().value() != "app" {
            let key = node.name().value();
            let hint = did_you_mean(key, &["app"])
                .map_or(String::new(), |_| "; did you mean `app`?".into());
            let message = format!(
                "unknown top-level key `{key}`; a spec file holds only `app \"NAME\" {{ ... }}` nodes{hint}"
            );
            d.at(node.span(), message);
            continue;
        }
        let before = d.errors.len();
        let app = decode_app(&mut d, node, &mut names);
        if d.errors.len() == before {
            apps.extend(app);
        }
    }
    (apps, d.errors)
}

/// Checks an app name: `[A-Za-z0-9_.-]+`, not starting with `-` or `.`
/// (they would read as flags or hidden files), and not a reserved word.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.is_empty() || !valid_chars || name.starts_with(['-', '.']) {
        return Err(format!(
            "invalid app name {name:?}; use letters, digits, `_`, `.` and `-`, not starting with `-` or `.`"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "app name {name:?} is reserved (it means every app on the command line)"
        ));
    }
    Ok(())
}

/// Fields of an app collected while walking its block.
#[derive(Default)]
struct Partial {
    run: Option<Vec<String>>,
    run_pos: Option<Pos>,
    script: Option<Located<String>>,
    script_pos: Option<Pos>,
    interpreter: Option<Located<String>>,
    args: Option<(Vec<String>, Pos)>,
    cwd: Option<String>,
    user: Option<String>,
    group: Option<String>,
    groups: Vec<String>,
    instances: Option<Instances>,
    env: Option<BTreeMap<String, String>>,
    env_profiles: BTreeMap<String, BTreeMap<String, String>>,
    env_files: Vec<Located<String>>,
    stop: Option<StopSpec>,
    restart: Option<RestartSpec>,
    logs: Option<LogSpec>,
}

fn decode_app(
    d: &mut Diagnostics,
    node: &KdlNode,
    names: &mut HashMap<String, Pos>,
) -> Option<AppDecl> {
    let pos = d.pos(node.span());
    let shape = d.shape(node, &[]);
    d.at_most_args(node, &shape.args, 1);
    let name = match shape.args.first() {
        Some(entry) => d.string(entry, "app name"),
        None => {
            d.at(
                node.span(),
                "missing app name; expected `app \"NAME\" { ... }`",
            );
            None
        }
    };
    let name = name.filter(|name| match validate_app_name(name) {
        Ok(()) => true,
        Err(message) => {
            d.at(node.span(), message);
            false
        }
    });
    if let Some(name) = &name {
        if let Some(first) = names.get(name) {
            d.at(
                node.span(),
                format!(
                    "app `{name}` is declared twice in this file; first at line {}",
                    first.line
                ),
            );
        } else {
            names.insert(name.clone(), pos);
        }
    }
    let display = name.clone().unwrap_or_else(|| "?".into());
    let Some(children) = node.children() else {
        d.at(
            node.span(),
            format!(
                "app `{display}` has no block; expected `app \"{display}\" {{ run \"PROGRAM\" }}`"
            ),
        );
        return None;
    };
    let context = format!("app `{display}`");
    let mut p = Partial::default();
    let mut seen = HashMap::new();
    for child in children.nodes() {
        let key = child.name().value();
        if NOT_YET_SUPPORTED.contains(&key) {
            d.at(
                child.span(),
                format!("`{key}` is not supported by this version of procd yet"),
            );
            continue;
        }
        if APP_KEYS.contains(&key)
            && !REPEATABLE.contains(&key)
            && !d.first_time(&mut seen, child, &context)
        {
            continue;
        }
        let here = d.pos(child.span());
        let located = |value| Located { value, pos: here };
        match key {
            "run" => (p.run, p.run_pos) = (d.string_args(child), Some(here)),
            "script" => (p.script, p.script_pos) = (d.string_arg(child).map(located), Some(here)),
            "interpreter" => p.interpreter = d.string_arg(child).map(located),
            "args" => p.args = d.string_args(child).map(|args| (args, here)),
            "cwd" => p.cwd = d.string_arg(child),
            "user" => p.user = d.string_arg(child),
            "group" => p.group = d.string_arg(child),
            "groups" => p.groups = d.string_args(child).unwrap_or_default(),
            "instances" => p.instances = decode_instances(d, child),
            "env" => decode_env(d, child, &context, &mut p),
            "env-file" => p.env_files.extend(d.string_arg(child).map(located)),
            "stop" => p.stop = decode_stop(d, child),
            "restart" => p.restart = decode_restart(d, child),
            "logs" => p.logs = decode_logs(d, child),
            _ => d.unknown_key(child, &context, APP_KEYS),
        }
    }
    let command = match (p.run, p.run_pos, p.script, p.script_pos) {
        (_, Some(run), _, Some(script)) => {
            let later = if (run.line, run.column) > (script.line, script.column) {
                run
            } else {
                script
            };
            d.at_pos(
                later,
                format!("{context} has both `run` and `script`; use one of them"),
            );
            None
        }
        (None, None, None, None) => {
            d.at(
                node.span(),
                format!("{context} needs `run \"PROGRAM\" \"ARG\"...` or `script \"PATH\"`"),
            );
            None
        }
        (Some(argv), ..) => Some(CommandDecl::Run(argv)),
        (_, _, Some(script), _) => Some(CommandDecl::Script(script)),
        // `run` or `script` was present but invalid; its error is recorded.
        _ => None,
    };
    if matches!(command, Some(CommandDecl::Run(_))) {
        if let Some(interpreter) = &p.interpreter {
            let message = "`interpreter` applies to `script` only; with `run`, put the program first in `run`";
            d.at_pos(interpreter.pos, message);
        }
        if let Some((_, args_pos)) = &p.args {
            d.at_pos(
                *args_pos,
                "`args` applies to `script` only; with `run`, put the arguments in `run`",
            );
        }
    }
    Some(AppDecl {
        name: name?,
        pos,
        command: command?,
        interpreter: p.interpreter,
        args: p.args.map(|(args, _)| args).unwrap_or_default(),
        cwd: p.cwd,
        user: p.user,
        group: p.group,
        groups: p.groups,
        instances: p.instances.unwrap_or(Instances::Count(1)),
        env: p.env.unwrap_or_default(),
        env_profiles: p.env_profiles,
        env_files: p.env_files,
        stop: p.stop.unwrap_or_default(),
        restart: p.restart.unwrap_or_default(),
        logs: p.logs.unwrap_or_default(),
    })
}

/// `instances N | "max" | -N`.
fn decode_instances(d: &mut Diagnostics, node: &KdlNode) -> Option<Instances> {
    let args = d.plain_args(node, 1, 1)?;
    let entry = args[0];
    let expected = "a count N >= 1, \"max\" (one per CPU) or -N (CPUs minus N)";
    match entry.value() {
        KdlValue::Integer(0) => d.at(
            entry.span(),
            format!("`instances` cannot be 0; expected {expected}"),
        ),
        KdlValue::Integer(n) if *n > 0 => match u32::try_from(*n) {
            Ok(n) => return Some(Instances::Count(n)),
            Err(_) => d.at(entry.span(), format!("`instances` {n} is too large")),
        },
        KdlValue::Integer(n) => match u32::try_from(n.unsigned_abs()) {
            Ok(n) => return Some(Instances::CpusMinus(n)),
            Err(_) => d.at(entry.span(), format!("`instances` {n} is too large")),
        },
        KdlValue::String(s) if s == "max" => return Some(Instances::Max),
        _ => d.wrong(entry, "`instances`", expected),
    }
    None
}

/// `env { KEY "value"; ... }` or `env "profile" { ... }`.
fn decode_env(d: &mut Diagnostics, node: &KdlNode, context: &str, p: &mut Partial) {
    let shape = d.shape(node, &[]);
    d.at_most_args(node, &shape.args, 1);
    let profile = match shape.args.first() {
        Some(entry) => match d.string(entry, "`env` profile name") {
            Some(name) => Some(name),
            None => return,
        },
        None => None,
    };
    let Some(children) = node.children() else {
        d.at(
            node.span(),
            "`env` expects a block: `env { KEY \"value\"; }`",
        );
        return;
    };
    let mut vars = BTreeMap::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for var in children.nodes() {
        let key = var.name().value();
        if key.is_empty() || key.contains(['=', '\0']) {
            d.at(
                var.span(),
                format!("invalid environment variable name {key:?}"),
            );
            continue;
        }
        if !d.first_time(&mut seen, var, "`env`") {
            continue;
        }
        let Some(args) = d.plain_args(var, 1, 1) else {
            continue;
        };
        let text = match args[0].value() {
            KdlValue::String(s) => s.clone(),
            KdlValue::Integer(n) => n.to_string(),
            KdlValue::Float(f) => f.to_string(),
            KdlValue::Bool(b) => b.to_string(),
            KdlValue::Null => {
                d.wrong(args[0], &format!("`env` value of `{key}`"), "a string");
                continue;
            }
        };
        if text.contains('\0') {
            d.at(
                args[0].span(),
                format!("`env` value of `{key}` contains a NUL character"),
            );
            continue;
        }
        vars.insert(key.to_string(), text);
    }
    match profile {
        None if p.env.is_some() => d.at(
            node.span(),
            format!("the `env` block is given twice in {context}"),
        ),
        None => p.env = Some(vars),
        Some(name) if p.env_profiles.contains_key(&name) => {
            d.at(
                node.span(),
                format!("env profile `{name}` is given twice in {context}"),
            );
        }
        Some(name) => {
            p.env_profiles.insert(name, vars);
        }
    }
}
