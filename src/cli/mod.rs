//! Client commands: each talks to the daemon through [`Client`] (or, for
//! `check` and `logs`, reads files directly) and prints the result. Only
//! `main` turns the outcome into an exit code.

pub mod args;
mod create;
pub mod render;
mod startup;

use std::io::Write;
use std::path::PathBuf;

use crate::control::protocol::{Request, Response, StatusReport};
use crate::control::{Client, ClientError};
use crate::paths::Paths;
use crate::spec::{LoadOptions, check_paths};

pub use args::{Cli, Command};

/// What went wrong in a client command, for `main` to print.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
}

/// `Ok(true)`: success; `Ok(false)`: the operation failed and said why.
pub type Outcome = Result<bool, CliError>;

/// Runs a client command (every command but `daemon`).
pub fn run(cli: Cli) -> Outcome {
    // Init-system files neither need nor reach a daemon.
    match cli.command {
        Command::Startup(args) => return startup::startup(args, cli.home, cli.config_dir),
        Command::Unstartup(args) => return startup::unstartup(args),
        _ => {}
    }
    let paths = Paths::resolve(cli.config_dir.as_deref(), cli.home.as_deref());
    let client = Client::new(&paths.socket);
    match cli.command {
        Command::Daemon(_) => unreachable!("main runs the daemon"),
        Command::Check { paths: given, env } => check(&paths, given, env),
        Command::Status { app, json } => {
            let report = status(&client, app, false)?;
            if json {
                print_json(&report)?;
            } else {
                print!("{}", render::status(&report));
            }
            Ok(true)
        }
        Command::Show { app, json } => {
            let report = status(&client, Some(app), true)?;
            let Some(app) = report.apps.first() else { return Err(CliError::Unexpected("no app".into())) };
            if json {
                print_json(app)?;
            } else {
                print!("{}", render::show(app));
            }
            Ok(true)
        }
        Command::Env { target } => {
            let (app, index) = match target.rsplit_once(':') {
                Some((a, i)) => {
                    let i = i.parse().map_err(|_| CliError::Failed(format!("`{i}` is not an instance index")))?;
                    (a.to_string(), i)
                }
                None => (target, 0),
            };
            match client.call(Request::Env { app, index })? {
                Response::Env { vars } => {
                    let mut out = std::io::stdout().lock();
                    for (k, v) in vars {
                        writeln!(out, "{k}={v}")?;
                    }
                    Ok(true)
                }
                other => done(other),
            }
        }
        Command::Start(args) => create::start(&client, args),
        Command::Stop { targets } => done(client.call(Request::Stop { targets })?),
        Command::Restart { targets } => done(client.call(Request::Restart { targets })?),
        Command::Reset { targets } => done(client.call(Request::Reset { targets })?),
        Command::Reload { targets } => done(client.call(Request::Reload { targets })?),
        Command::Delete { app } => done(client.call(Request::Delete { app })?),
        Command::Reconcile { dry_run, wait, timeout, json } => {
            let timeout_ms = timeout.as_millis() as u64;
            match client.call(Request::Reconcile { dry_run, wait, timeout_ms })? {
                Response::Plan { actions, errors, applied, failed } => {
                    if json {
                        print_json(&serde_json::json!({
                            "actions": actions, "errors": errors, "applied": applied, "failed": failed
                        }))?;
                    } else {
                        print!("{}", render::plan(&actions, applied));
                        eprint!("{}", render::errors(&errors));
                        for f in &failed {
                            eprintln!("failed: {f}");
                        }
                    }
                    Ok(errors.is_empty() && failed.is_empty())
                }
                other => done(other),
            }
        }
        Command::Logs { app, lines, follow, err, out } => logs(&client, app, lines, follow, err, out),
        Command::Flush { app } => done(client.call(Request::Flush { app })?),
        Command::ReloadLogs => done(client.call(Request::ReloadLogs)?),
        Command::Update { timeout } => update(&client, timeout),
        Command::Kill => kill(&client, &paths),
        Command::Keeper { .. } => unreachable!("main runs the keeper"),
        Command::Startup(_) | Command::Unstartup(_) => unreachable!("handled above"),
    }
}

/// `procd update`: asks the daemon to re-execute, then waits until the new
/// image answers (same pid, new start time).
fn update(client: &Client, timeout: std::time::Duration) -> Outcome {
    let before = match client.call(Request::Ping)? {
        Response::Pong { started_ms, .. } => started_ms,
        other => return done(other),
    };
    let start = std::time::Instant::now();
    done(client.call(Request::Update)?)?;
    while start.elapsed() < timeout {
        if let Ok(Response::Pong { started_ms, version, pid }) = client.call(Request::Ping)
            && started_ms != before
        {
            println!("procd {version} (pid {pid}) answers after {} ms", start.elapsed().as_millis());
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    eprintln!("procd: the updated daemon did not answer within {timeout:?}");
    Ok(false)
}

/// `procd kill`: stops every app, the keeper and the daemon, and waits
/// until the daemon's socket is gone.
fn kill(client: &Client, paths: &Paths) -> Outcome {
    done(client.call(Request::Kill)?)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while paths.socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(!paths.socket.exists())
}

fn check(paths: &Paths, given: Vec<PathBuf>, env: Option<String>) -> Outcome {
    let targets = if given.is_empty() { vec![paths.config_dir.clone()] } else { given };
    let errors = check_paths(&targets, &LoadOptions { env_profile: env, ..LoadOptions::default() });
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(errors.is_empty())
}

fn status(client: &Client, app: Option<String>, detail: bool) -> Result<StatusReport, CliError> {
    match client.call(Request::Status { app, detail })? {
        Response::Status(report) => Ok(report),
        Response::Error { message } => Err(CliError::Failed(message)),
        other => Err(CliError::Unexpected(format!("{other:?}"))),
    }
}

/// Prints the outcome of a simple operation.
fn done(response: Response) -> Outcome {
    match response {
        Response::Done { message } => {
            println!("{message}");
            Ok(true)
        }
        Response::Error { message } => Err(CliError::Failed(message)),
        other => Err(CliError::Unexpected(format!("{other:?}"))),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| CliError::Unexpected(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

fn logs(client: &Client, app: Option<String>, lines: usize, follow: bool, err: bool, out: bool) -> Outcome {
    let report = status(client, app.clone(), true)?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for a in &report.apps {
        let Some(sets) = a.detail.as_ref().and_then(|d| d.get("log_files")).and_then(|f| f.as_array()) else {
            continue;
        };
        for (i, set) in sets.iter().enumerate() {
            for (stream, wanted) in [("out", !err), ("err", !out)] {
                let Some(path) = set.get(stream).and_then(|p| p.as_str()).filter(|_| wanted) else { continue };
                let label =
                    if sets.len() > 1 { format!("{}:{i} {stream}", a.name) } else { format!("{} {stream}", a.name) };
                let path = PathBuf::from(path);
                if !files.iter().any(|(_, p)| *p == path) {
                    files.push((label, path));
                }
            }
        }
    }
    let labelled = app.is_none() || files.len() > 1;
    let mut stdout = std::io::stdout().lock();
    for (label, line) in crate::logs::tail::last_lines(&files, lines)? {
        if labelled {
            writeln!(stdout, "{label} | {line}")?;
        } else {
            writeln!(stdout, "{line}")?;
        }
    }
    stdout.flush()?;
    if follow {
        crate::logs::tail::follow(&files, &mut stdout, &|| false)?;
    }
    Ok(true)
}
