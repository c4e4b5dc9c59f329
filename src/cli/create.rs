//! `procd start`: start existing apps by target, or create a persisted app
//! from a script as PM2 does. A created app is a KDL file in the state dir
//! that the user can read; the daemon validates it like any conf.d file.

use std::fmt::Write;
use std::path::Path;

use super::args::StartArgs;
use super::{CliError, Outcome, done};
use crate::control::Client;
use crate::control::protocol::{Request, Response};

pub fn start(client: &Client, args: StartArgs) -> Outcome {
    let known = match client.call(Request::Status { app: None, detail: false })? {
        Response::Status(report) => report.apps.into_iter().map(|a| a.name).collect::<Vec<_>>(),
        other => return done(other),
    };
    let creating = args.name.is_some()
        || args.instances.is_some()
        || args.interpreter.is_some()
        || !args.args.is_empty()
        || args.cwd.is_some()
        || args.watch
        || args.max_memory.is_some()
        || (args.targets.len() == 1 && !known.contains(&args.targets[0]) && Path::new(&args.targets[0]).is_file());
    if !creating {
        return done(client.call(Request::Start { targets: args.targets })?);
    }
    let [script] = args.targets.as_slice() else {
        return Err(CliError::Failed("give exactly one script to create an app from".into()));
    };
    let (name, kdl) = app_kdl(script, &args)?;
    done(client.call(Request::Create { name, kdl })?)
}

/// The KDL of an app created from the command line.
fn app_kdl(script: &str, args: &StartArgs) -> Result<(String, String), CliError> {
    let cwd = match &args.cwd {
        Some(c) => std::path::absolute(c)?,
        None => std::env::current_dir()?,
    };
    let path = Path::new(script);
    if !cwd.join(path).exists() {
        return Err(CliError::Failed(format!("{script}: no such file (and no app by that name)")));
    }
    let script_abs = std::path::absolute(cwd.join(path))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| script.to_string()),
    };
    let mut kdl = String::new();
    let _ = writeln!(kdl, "// Created by `procd start`; remove with `procd delete {name}`.");
    let _ = writeln!(kdl, "app {} {{", quote(&name));
    let _ = writeln!(kdl, "    script {}", quote(&script_abs.to_string_lossy()));
    if !args.args.is_empty() {
        let list: Vec<String> = args.args.iter().map(|a| quote(a)).collect();
        let _ = writeln!(kdl, "    args {}", list.join(" "));
    }
    if let Some(i) = &args.interpreter {
        let _ = writeln!(kdl, "    interpreter {}", quote(i));
    }
    let _ = writeln!(kdl, "    cwd {}", quote(&cwd.to_string_lossy()));
    if let Some(n) = &args.instances {
        match n.parse::<i64>() {
            Ok(n) => {
                let _ = writeln!(kdl, "    instances {n}");
            }
            Err(_) => {
                let _ = writeln!(kdl, "    instances {}", quote(n));
            }
        }
    }
    if let Some(m) = &args.max_memory {
        let _ = writeln!(kdl, "    max-memory {}", quote(m));
    }
    if args.watch {
        if args.ignore_watch.is_empty() {
            let _ = writeln!(kdl, "    watch #true");
        } else {
            let globs: Vec<String> = args.ignore_watch.iter().map(|g| quote(g)).collect();
            let _ = writeln!(kdl, "    watch #true {{\n        ignore {}\n    }}", globs.join(" "));
        }
    }
    kdl.push_str("}\n");
    Ok((name, kdl))
}

/// A KDL string literal (the escapes KDL v1 and v2 share).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny"), r#""x\ny""#);
    }
}
