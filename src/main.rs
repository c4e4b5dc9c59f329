//! The `procd` binary: parses arguments, hands over to the daemon or to a
//! client command, and is the only place that prints errors and picks exit
//! codes (0 success, 1 failed operation, 2 bad usage, as clap does).

use std::process::ExitCode;

use clap::Parser;
use procd::cli::{self, Cli, Command};
use procd::daemon::{self, DaemonOptions};
use procd::logs::daemon_log::DaemonLog;
use procd::paths::Paths;

fn main() -> ExitCode {
    // The keeper is recognised before clap runs: every code page it touches
    // is resident in it for as long as the apps run (its memory budget is
    // 1 MiB), and argument parsing is a large share of the binary.
    if let Some(start) = keeper_args() {
        return match procd::process::keeper::run(start) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("procd keeper: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    if let Command::Daemon(args) = &cli.command {
        let paths = Paths::resolve(cli.config_dir.as_deref(), cli.home.as_deref());
        let daemon_log = init_tracing(&paths.log_dir);
        let opts = DaemonOptions {
            paths,
            env_profile: args.env.clone(),
            debounce: args.debounce,
            rescan_every: args.rescan,
            sample_every: args.sample_every,
            daemon_log: Some(daemon_log),
            cgroups: !args.no_cgroups,
            keep_apps: args.keep_apps,
        };
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("procd: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match runtime.block_on(daemon::run(opts)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("procd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match cli::run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("procd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `procd keeper --listen-fd N [--resume-fd M]`, exactly as the daemon
/// and a re-executing keeper write it; anything else is left to clap.
fn keeper_args() -> Option<procd::process::keeper::KeeperStart> {
    use procd::process::keeper::KeeperStart;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fd = |v: &String| v.parse::<i32>().ok();
    match args.as_slice() {
        [cmd, l, listen] if cmd == "keeper" && l == "--listen-fd" => Some(KeeperStart::Listen(fd(listen)?)),
        [cmd, l, listen, r, state] if cmd == "keeper" && l == "--listen-fd" && r == "--resume-fd" => {
            Some(KeeperStart::Resume { listen: fd(listen)?, state: fd(state)? })
        }
        _ => None,
    }
}

/// The daemon logs to stderr (the foreground, journald) and to a
/// size-rotated `procd.log` in the log dir; `RUST_LOG` filters both.
fn init_tracing(log_dir: &std::path::Path) -> DaemonLog {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("procd=info"));
    let file = DaemonLog::new(log_dir);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .with(fmt::layer().with_ansi(false).with_writer(file.clone()))
        .init();
    file
}
