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
use super::decode_cluster::{check_cluster, decode_listen, decode_ready, decode_rollout};
use super::decode_policies::{decode_max_memory, decode_watch};
use super::kdl_value::{Diagnostics, Located, Pos, did_you_mean};
use super::{
    Instances, ListenSpec, LogSpec, MemoryLimit, ReadySpec, RestartSpec, RolloutSpec, SpecError, StopSpec, WatchSpec,
};

/// Keys of the spec contract that this version parses but does not
/// implement; they get their own error so nobody is silently ignored.
/// Shrink this list as features land (empty since `listen` and `ready`).
pub const NOT_YET_SUPPORTED: &[&str] = &[];

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
    "max-memory",
    "watch",
    "listen",
    "ready",
    "rollout",
];
/// Keys of an `app` block that may appear more than once.
const REPEATABLE: &[&str] = &["env", "env-file", "listen"];
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
    pub max_memory: Option<MemoryLimit>,
    /// Watch paths as written (relative to the cwd); `resolve` makes them absolute.
    pub watch: Option<WatchSpec>,
    /// In declaration order (the order of the fds from 3); relative Unix
    /// paths as written, made absolute by `resolve`.
    pub listen: Vec<ListenSpec>,
    pub ready: ReadySpec,
    pub rollout: RolloutSpec,
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
            let hint = did_you_mean(key, &["app"]).map_or(String::new(), |_| "; did you mean `app`?".into());
            let message =
                format!("unknown top-level key `{key}`; a spec file holds only `app \"NAME\" {{ ... }}` nodes{hint}");
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
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.is_empty() || !valid_chars || name.starts_with(['-', '.']) {
        return Err(format!(
            "invalid app name {name:?}; use letters, digits, `_`, `.` and `-`, not starting with `-` or `.`"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("app name {name:?} is reserved (it means every app on the command line)"));
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
    max_memory: Option<MemoryLimit>,
    /// `Some(None)` is `watch #false`.
    watch: Option<Option<WatchSpec>>,
    listen: Vec<Located<ListenSpec>>,
    ready: Option<Located<ReadySpec>>,
    rollout: Option<RolloutSpec>,
}

fn decode_app(d: &mut Diagnostics, node: &KdlNode, names: &mut HashMap<String, Pos>) -> Option<AppDecl> {
    let pos = d.pos(node.span());
    let shape = d.shape(node, &[]);
    d.at_most_args(node, &shape.args, 1);
    let name = match shape.args.first() {
        Some(entry) => d.string(entry, "app name"),
        None => {
            d.at(node.span(), "missing app name; expected `app \"NAME\" { ... }`");
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
            d.at(node.span(), format!("app `{name}` is declared twice in this file; first at line {}", first.line));
        } else {
            names.insert(name.clone(), pos);
        }
    }
    let display = name.clone().unwrap_or_else(|| "?".into());
    let Some(children) = node.children() else {
        d.at(node.span(), format!("app `{display}` has no block; expected `app \"{display}\" {{ run \"PROGRAM\" }}`"));
        return None;
    };
    let context = format!("app `{display}`");
    let mut p = Partial::default();
    let mut seen = HashMap::new();
    for child in children.nodes() {
        let key = child.name().value();
        if NOT_YET_SUPPORTED.contains(&key) {
            d.at(child.span(), format!("`{key}` is not supported by this version of procd yet"));
            continue;
        }
        if APP_KEYS.contains(&key) && !REPEATABLE.contains(&key) && !d.first_time(&mut seen, child, &context) {
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
            "max-memory" => p.max_memory = decode_max_memory(d, child),
            "watch" => p.watch = decode_watch(d, child),
            "listen" => p.listen.extend(decode_listen(d, child)),
            "ready" => p.ready = decode_ready(d, child).map(|value| Located { value, pos: here }),
            "rollout" => p.rollout = decode_rollout(d, child),
            _ => d.unknown_key(child, &context, APP_KEYS),
        }
    }
    check_cluster(d, &p.listen, p.ready.as_ref());
    let command = match (p.run, p.run_pos, p.script, p.script_pos) {
        (_, Some(run), _, Some(script)) => {
            let later = if (run.line, run.column) > (script.line, script.column) { run } else { script };
            d.at_pos(later, format!("{context} has both `run` and `script`; use one of them"));
            None
        }
        (None, None, None, None) => {
            d.at(node.span(), format!("{context} needs `run \"PROGRAM\" \"ARG\"...` or `script \"PATH\"`"));
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
            d.at_pos(*args_pos, "`args` applies to `script` only; with `run`, put the arguments in `run`");
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
        max_memory: p.max_memory,
        watch: p.watch.flatten(),
        listen: p.listen.into_iter().map(|socket| socket.value).collect(),
        ready: p.ready.map(|ready| ready.value).unwrap_or_default(),
        rollout: p.rollout.unwrap_or_default(),
    })
}

/// `instances N | "max" | -N`.
fn decode_instances(d: &mut Diagnostics, node: &KdlNode) -> Option<Instances> {
    let args = d.plain_args(node, 1, 1)?;
    let entry = args[0];
    let expected = "a count N >= 1, \"max\" (one per CPU) or -N (CPUs minus N)";
    match entry.value() {
        KdlValue::Integer(0) => d.at(entry.span(), format!("`instances` cannot be 0; expected {expected}")),
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
        d.at(node.span(), "`env` expects a block: `env { KEY \"value\"; }`");
        return;
    };
    let mut vars = BTreeMap::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for var in children.nodes() {
        let key = var.name().value();
        if key.is_empty() || key.contains(['=', '\0']) {
            d.at(var.span(), format!("invalid environment variable name {key:?}"));
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
            d.at(args[0].span(), format!("`env` value of `{key}` contains a NUL character"));
            continue;
        }
        vars.insert(key.to_string(), text);
    }
    match profile {
        None if p.env.is_some() => d.at(node.span(), format!("the `env` block is given twice in {context}")),
        None => p.env = Some(vars),
        Some(name) if p.env_profiles.contains_key(&name) => {
            d.at(node.span(), format!("env profile `{name}` is given twice in {context}"));
        }
        Some(name) => {
            p.env_profiles.insert(name, vars);
        }
    }
}

/// For the decoders' table tests: one app `a` with `run "x"` and `body`,
/// decoded; the errors as `FILE:LINE:COL: message` strings.
#[cfg(test)]
pub(crate) fn decode_one_key(body: &str) -> Result<AppDecl, Vec<String>> {
    let text = format!("app \"a\" {{\n    run \"x\"\n    {body}\n}}\n");
    let (apps, errors) = decode_document(std::path::Path::new("t.kdl"), &text);
    if errors.is_empty() {
        Ok(apps.into_iter().next().expect("one app"))
    } else {
        Err(errors.iter().map(|e| e.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::{BackoffSpec, LogFormat, RestartPolicy, RotateSpec};

    fn decode(text: &str) -> (Vec<AppDecl>, Vec<SpecError>) {
        decode_document(Path::new("/etc/procd/conf.d/t.kdl"), text)
    }

    fn one_app(text: &str) -> AppDecl {
        let (apps, errors) = decode(text);
        assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
        assert_eq!(apps.len(), 1);
        apps.into_iter().next().unwrap()
    }

    /// (line, column, message) of every error.
    fn errors(text: &str) -> Vec<(usize, usize, String)> {
        decode(text).1.into_iter().map(|e| (e.line, e.column, e.message)).collect()
    }

    /// The contract example of FEATURES.md §1 without the keys decoded
    /// elsewhere (`max-memory`, `watch`: decode_policies; `listen`, `ready`:
    /// decode_cluster, whose tests decode the full example).
    const CONTRACT_EXAMPLE: &str = r#"
app "web" {
    run "node" "server.js" "--port" "8080"   // argv; or: script "server.js" (interpreter by extension)
    cwd "/srv/web"
    user "www-data"                           // optional; group, groups
    instances 4                               // N, "max" (one per CPU), or -N (CPUs minus N)
    env { NODE_ENV "production"; PORT "8080"; }
    env "staging" { NODE_ENV "staging"; }     // a named profile, PM2's env_<name>
    env-file "/etc/web.env"
    restart "on-failure" {                    // always (default) | on-failure | never
        delay "0ms"                           // fixed delay (PM2 restart_delay)
        backoff initial="100ms" factor=1.5 max="15s" reset-after="30s"
        max-restarts 16 min-uptime="1s"       // then the app is "errored"
    }
    stop signal="SIGINT" timeout="1600ms"     // then SIGKILL to the group
    logs {
        out "/var/log/web.out.log"            // "/dev/null" disables
        err "/var/log/web.err.log"
        combined "/var/log/web.log"
        format "json"                          // plain (default) | json
        timestamp "%Y-%m-%d %H:%M:%S%.3f"      // prefix for plain lines
        merge true                             // instances share files
        rotate size="10M" keep=5
    }
}
"#;

    #[test]
    fn contract_example_decodes() {
        let app = one_app(CONTRACT_EXAMPLE);
        assert_eq!(app.name, "web");
        assert_eq!(app.pos, Pos { line: 2, column: 1 });
        assert_eq!(
            app.command,
            CommandDecl::Run(vec!["node".into(), "server.js".into(), "--port".into(), "8080".into()])
        );
        assert_eq!(app.cwd.as_deref(), Some("/srv/web"));
        assert_eq!(app.user.as_deref(), Some("www-data"));
        assert_eq!(app.instances, Instances::Count(4));
        assert_eq!(app.env.get("PORT").map(String::as_str), Some("8080"));
        assert_eq!(app.env_profiles["staging"]["NODE_ENV"], "staging");
        assert_eq!(app.env_files[0].value, "/etc/web.env");
        assert_eq!(app.env_files[0].pos, Pos { line: 9, column: 5 });
        assert_eq!(app.restart.policy, RestartPolicy::OnFailure);
        assert_eq!(app.restart.backoff, Some(BackoffSpec::default()));
        assert_eq!(app.restart.max_restarts, 16);
        assert_eq!(app.stop, StopSpec::default());
        assert_eq!(app.logs.format, LogFormat::Json);
        assert!(app.logs.merge);
        assert_eq!(app.logs.rotate, Some(RotateSpec { size: 10 << 20, keep: 5, compress: false }));
    }

    #[test]
    fn contract_example_in_v2_syntax_decodes_the_same() {
        let v2 = CONTRACT_EXAMPLE.replace("merge true", "merge #true");
        assert_eq!(one_app(&v2), one_app(CONTRACT_EXAMPLE));
    }

    #[test]
    fn defaults_and_small_forms() {
        let app = one_app("app \"w\" {\n script \"w.py\"\n args \"-v\" \"x\"\n restart \"never\"\n}");
        assert_eq!(app.command, CommandDecl::Script(Located { value: "w.py".into(), pos: Pos { line: 2, column: 2 } }));
        assert_eq!(app.args, ["-v", "x"]);
        assert_eq!(app.instances, Instances::Count(1));
        assert_eq!(app.restart.policy, RestartPolicy::Never);
        assert_eq!(one_app("app \"w\" { run \"x\"; restart; }").restart, RestartSpec::default());
        assert_eq!(one_app("app \"w\" { run \"x\"; instances \"max\"; }").instances, Instances::Max);
        assert_eq!(one_app("app \"w\" { run \"x\"; instances -1; }").instances, Instances::CpusMinus(1));
        let app = one_app("app \"w\" { run \"x\"; env { A 1; B 2.5; C #false; D \"d\"; }; }");
        let env: Vec<_> = app.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["A=1", "B=2.5", "C=false", "D=d"]);
        let app = one_app("app \"w\" { run \"x\"; stop signal=15 timeout=\"2s\"; }");
        assert_eq!(app.stop, StopSpec { signal: 15, timeout: Duration::from_secs(2) });
        assert_eq!(one_app("app \"w\" { run \"x\"; stop signal=\"term\"; }").stop.signal, 15);
        let app = one_app("app \"w\" { run \"x\"; logs { rotate size=1024 keep=2 compress=#true; }; }");
        assert_eq!(app.logs.rotate, Some(RotateSpec { size: 1024, keep: 2, compress: true }));
    }

    #[test]
    fn several_apps_and_names() {
        let (apps, errors) = decode("app \"a\" { run \"x\"; }\napp \"b.c-d_1\" { run \"y\"; }\n");
        assert!(errors.is_empty());
        assert_eq!(apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a", "b.c-d_1"]);
        for bad in ["-a", ".a", "a b", "", "all", "é"] {
            assert!(validate_app_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Every kind of error, with its exact position and the gist of its message.
    #[test]
    fn error_table() {
        let table: &[(&str, usize, usize, &str)] = &[
            (
                "app \"web\" {\n  run \"x\"\n  instanse 2\n}",
                3,
                3,
                "unknown key `instanse` in app `web`; expected one of `run`",
            ),
            ("app \"web\" {\n  run \"x\"\n  instanse 2\n}", 3, 3, "did you mean `instances`?"),
            (
                "app \"w\" {\n  run \"x\"\n  listen \"tcp:/:80\"\n}",
                3,
                10,
                "`listen` address \"tcp:/:80\": expected `tcp://HOST:PORT` or `unix:///PATH`",
            ),
            ("app \"w\" { run \"x\"; ready \"notfy\"; }", 1, 26, "`ready` kind: expected \"notify\", \"tcp\""),
            ("app \"w\" { run \"x\"; rollout max-surge=-1; }", 1, 28, "`max-surge` of `rollout`: expected a whole"),
            ("service \"w\" { run \"x\"; }", 1, 1, "unknown top-level key `service`"),
            ("ap \"w\" { run \"x\"; }", 1, 1, "did you mean `app`?"),
            ("app { run \"x\"; }", 1, 1, "missing app name"),
            ("app \"w\" \"v\" { run \"x\"; }", 1, 9, "unexpected extra argument to `app`"),
            ("app 5 { run \"x\"; }", 1, 5, "app name: expected a string, found integer 5"),
            ("app \"-w\" { run \"x\"; }", 1, 1, "invalid app name"),
            ("app \"all\" { run \"x\"; }", 1, 1, "reserved"),
            ("app \"w\"", 1, 1, "app `w` has no block"),
            (
                "app \"w\" { run \"x\"; }\n\napp \"w\" { run \"y\"; }",
                3,
                1,
                "app `w` is declared twice in this file; first at line 1",
            ),
            ("app \"w\" { cwd \"/\"; }", 1, 1, "needs `run \"PROGRAM\" \"ARG\"...` or `script \"PATH\"`"),
            ("app \"w\" {\n run \"x\"\n script \"y\"\n}", 3, 2, "has both `run` and `script`"),
            ("app \"w\" {\n run \"x\"\n interpreter \"ruby\"\n}", 3, 2, "`interpreter` applies to `script` only"),
            ("app \"w\" {\n run \"x\"\n args \"a\"\n}", 3, 2, "`args` applies to `script` only"),
            ("app \"w\" { run; }", 1, 11, "`run` expects 1 argument, found 0"),
            ("app \"w\" { run \"x\" 5; }", 1, 19, "`run`: expected a string, found integer 5"),
            ("app \"w\" { run \"x\" k=\"v\"; }", 1, 19, "`run` takes no properties, found `k=`"),
            ("app \"w\" { run \"x\" { a; }; }", 1, 11, "`run` takes no `{ ... }` block"),
            ("app \"w\" { run \"x\"; cwd \"a\" \"b\"; }", 1, 28, "unexpected extra argument to `cwd`"),
            (
                "app \"w\" { run \"x\"; cwd \"a\"; cwd \"b\"; }",
                1,
                29,
                "`cwd` is given twice in app `w`; first at line 1",
            ),
            ("app \"w\" { run \"x\"; user 0; }", 1, 25, "`user`: expected a string, found integer 0"),
            ("app \"w\" { run \"x\"; instances 0; }", 1, 30, "`instances` cannot be 0"),
            ("app \"w\" { run \"x\"; instances \"many\"; }", 1, 30, "expected a count N >= 1, \"max\""),
            ("app \"w\" { run \"x\"; instances 1.5; }", 1, 30, "found number 1.5"),
            (
                "app \"w\" {\n run \"x\"\n env { PORT #null; }\n}",
                3,
                13,
                "`env` value of `PORT`: expected a string, found #null",
            ),
            ("app \"w\" {\n run \"x\"\n env { A \"1\"; A \"2\"; }\n}", 3, 15, "`A` is given twice in `env`"),
            ("app \"w\" {\n run \"x\"\n env\n}", 3, 2, "`env` expects a block"),
            ("app \"w\" {\n run \"x\"\n env {}\n env {}\n}", 4, 2, "the `env` block is given twice"),
            ("app \"w\" {\n run \"x\"\n env \"s\" {}\n env \"s\" {}\n}", 4, 2, "env profile `s` is given twice"),
            (
                "app \"w\" { run \"x\"; stop sigal=\"INT\"; }",
                1,
                25,
                "unknown property `sigal` of `stop`; expected one of `signal`, `timeout`; did you mean `signal`?",
            ),
            ("app \"w\" { run \"x\"; stop \"INT\"; }", 1, 25, "`stop` takes only properties"),
            (
                "app \"w\" { run \"x\"; stop signal=\"SIGFOO\"; }",
                1,
                25,
                "`signal` of `stop`: unknown signal \"SIGFOO\"",
            ),
            ("app \"w\" { run \"x\"; stop signal=99; }", 1, 25, "out of range"),
            (
                "app \"w\" { run \"x\"; stop timeout=1600; }",
                1,
                25,
                "`timeout` of `stop`: expected a duration string like \"1600ms\", found integer 1600",
            ),
            ("app \"w\" { run \"x\"; stop timeout=\"soon\"; }", 1, 25, "expected a duration string like \"1600ms\""),
            (
                "app \"w\" { run \"x\"; stop signal=\"INT\" signal=\"TERM\"; }",
                1,
                38,
                "property `signal` of `stop` is given twice",
            ),
            (
                "app \"w\" { run \"x\"; restart \"sometimes\"; }",
                1,
                28,
                "`restart` policy: expected \"always\", \"on-failure\" or \"never\"",
            ),
            (
                "app \"w\" {\n run \"x\"\n restart {\n  dealy \"1s\"\n }\n}",
                4,
                3,
                "unknown key `dealy` in `restart`; expected one of `delay`, `backoff`, `max-restarts`; did you mean `delay`?",
            ),
            ("app \"w\" { run \"x\"; restart { delay 5; }; }", 1, 36, "`delay`: expected a duration string"),
            (
                "app \"w\" { run \"x\"; restart { backoff factor=0.5; }; }",
                1,
                38,
                "`factor` of `backoff` must be at least 1",
            ),
            (
                "app \"w\" { run \"x\"; restart { backoff factor=\"x\"; }; }",
                1,
                38,
                "`factor` of `backoff`: expected a number",
            ),
            (
                "app \"w\" { run \"x\"; restart { max-restarts -1; }; }",
                1,
                43,
                "`max-restarts`: expected a whole number >= 0",
            ),
            (
                "app \"w\" { run \"x\"; restart { max-restarts min-uptime=\"1s\"; }; }",
                1,
                30,
                "`max-restarts` expects a count",
            ),
            (
                "app \"w\" { run \"x\"; restart { max-restarts 3 min-uptim=\"1s\"; }; }",
                1,
                45,
                "did you mean `min-uptime`?",
            ),
            (
                "app \"w\" { run \"x\"; logs { format \"xml\"; }; }",
                1,
                27,
                "`format`: expected \"plain\" or \"json\", found \"xml\"",
            ),
            (
                "app \"w\" { run \"x\"; logs { merge \"yes\"; }; }",
                1,
                33,
                "`merge`: expected #true or #false, found string \"yes\"",
            ),
            ("app \"w\" { run \"x\"; logs { rotate keep=5; }; }", 1, 27, "`rotate` needs `size=`"),
            (
                "app \"w\" { run \"x\"; logs { rotate size=\"10X\"; }; }",
                1,
                34,
                "`size` of `rotate`: expected a size like \"10M\"",
            ),
            ("app \"w\" { run \"x\"; logs { rotate size=-1; }; }", 1, 34, "expected a size"),
            ("app \"w\" { run \"x\"; logs { outt \"a\"; }; }", 1, 27, "did you mean `out`?"),
            ("app \"w\" { run \"x\"; logs; }", 1, 20, "`logs` expects a block"),
            ("app \"w\" {\n  run \"x\n}\n", 2, 7, "invalid KDL: Unexpected newline in single-line quoted string"),
        ];
        let mut failures = Vec::new();
        for (text, line, column, message) in table {
            let found = errors(text);
            if !found.iter().any(|(l, c, m)| (l, c) == (line, column) && m.contains(message)) {
                failures.push(format!("for {text:?} expected {line}:{column}: {message}\nfound {found:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn all_errors_of_a_file_are_collected_and_bad_apps_dropped() {
        let text = "app \"a\" { run \"x\"; instanse 2; }\napp \"b\" { run \"y\"; }\napp \"c\" { stop timeout=1; }\n";
        let (apps, errors) = decode(text);
        assert_eq!(apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["b"]);
        // The typo, then for `c` the bad timeout and the missing command.
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert_eq!(errors[0].to_string(), format!("/etc/procd/conf.d/t.kdl:1:20: {}", errors[0].message));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "\n",
            "app",
            "app \"\"",
            "app \"w\" { env \"\" { \"\" 1; }; }",
            "/-",
            "app \"w\" { run \"\u{0}\"; }",
            "(t)app \"w\" { (u)run \"x\"; }",
        ] {
            let _ = decode(text);
        }
    }
}
