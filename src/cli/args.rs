//! The command line, as clap types. Only parsing lives here; `cli::run`
//! carries the commands out and `main` picks exit codes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// procd: a declarative process manager for Linux servers.
#[derive(Debug, Parser)]
#[command(name = "procd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Put socket, state and logs under this directory (like PM2_HOME).
    #[arg(long, global = true, env = "PROCD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The conf.d directory of app specs.
    #[arg(long, global = true, env = "PROCD_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Validate spec files or directories without a daemon.
    Check {
        /// Files or directories; the config dir when none is given.
        paths: Vec<PathBuf>,
        /// Select this env profile, as the daemon's --env would.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
    },
    /// Apps, instances and config errors.
    #[command(visible_aliases = ["ls", "list"])]
    Status {
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one app.
    Show {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// The environment an instance runs with, one KEY=VALUE per line.
    Env {
        /// APP or APP:INDEX (index 0 by default).
        target: String,
    },
    /// Start apps (names, `all`, `/regex/`), or create one from a script.
    Start(StartArgs),
    /// Stop apps; they stay stopped until started again, across daemon restarts.
    Stop { targets: Vec<String> },
    /// Restart apps.
    Restart { targets: Vec<String> },
    /// Replace apps' instances one by one without downtime (apps with
    /// `listen`); a restart for the others.
    Reload { targets: Vec<String> },
    /// Reset restart counters.
    Reset { targets: Vec<String> },
    /// Remove an app created with `procd start SCRIPT`.
    Delete { app: String },
    /// Re-read the config dir now and apply it.
    Reconcile {
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Return once started instances are online; fail if one is not.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Print the last lines of an app's logs, and follow them.
    Logs {
        app: Option<String>,
        #[arg(long, default_value_t = 15)]
        lines: usize,
        #[arg(long, short)]
        follow: bool,
        /// Only stderr.
        #[arg(long, conflicts_with = "out")]
        err: bool,
        /// Only stdout.
        #[arg(long)]
        out: bool,
    },
    /// Truncate log files (one app's, or all).
    Flush { app: Option<String> },
    /// Reopen every log file (after an external logrotate).
    ReloadLogs,
    /// Replace the running daemon (and its keeper) by the procd binary now
    /// on disk, without restarting any app.
    Update {
        /// How long to wait for the new daemon to answer.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Stop every app, then the daemon and its keeper (PM2's `kill`).
    Kill,
    /// The keeper process the daemon starts; not for interactive use.
    #[command(hide = true)]
    Keeper {
        /// The listening socket, inherited from the daemon.
        #[arg(long)]
        listen_fd: i32,
        /// The state of the keeper this one replaces (`procd update`).
        #[arg(long)]
        resume_fd: Option<i32>,
    },
    /// Print (or with --install, install) the init-system file that starts the daemon at boot.
    Startup(StartupArgs),
    /// Print (or with --install, run) the commands that remove what `startup --install` installed.
    Unstartup(UnstartupArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Select the env profile NAME of every app that defines one.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Quiet time after a config change before rescanning.
    #[arg(long, default_value = "30ms", value_parser = humantime::parse_duration)]
    pub debounce: std::time::Duration,
    /// Full rescan period, for changes no event reports.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub rescan: std::time::Duration,
    /// How often memory and CPU of instances are sampled.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub sample_every: std::time::Duration,
    /// Do not put instances in cgroups even where cgroup v2 is writable
    /// (stops then reach process groups only).
    #[arg(long)]
    pub no_cgroups: bool,
    /// On SIGTERM/SIGINT, exit without stopping the apps: the keeper keeps
    /// them running and the next daemon adopts them (the systemd unit uses
    /// this, so `systemctl restart procd` restarts no app).
    #[arg(long)]
    pub keep_apps: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// App names, `all`, `/regex/`, or a script to create an app from.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Name of the created app (default: the script's name without extension).
    #[arg(long, short)]
    pub name: Option<String>,
    /// Instances: N, `max`, or -N.
    #[arg(long = "instances", short = 'i', allow_hyphen_values = true)]
    pub instances: Option<String>,
    /// Interpreter for the script (default: chosen by its extension).
    #[arg(long)]
    pub interpreter: Option<String>,
    /// Working directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Restart the app when files under its working directory change.
    #[arg(long)]
    pub watch: bool,
    /// A glob of paths `--watch` ignores (repeatable).
    #[arg(long = "ignore-watch", value_name = "GLOB", requires = "watch")]
    pub ignore_watch: Vec<String>,
    /// Restart an instance whose memory passes SIZE (e.g. 300M).
    #[arg(long = "max-memory-restart", value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Arguments passed to the script, after `--`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// The init system; detected when omitted.
    #[arg(value_enum)]
    pub platform: Option<crate::startup::Platform>,
    /// Run the daemon as this user (default: root).
    #[arg(long, short)]
    pub user: Option<String>,
    /// The daemon's --home (for -u USER: ~USER/.procd by default).
    #[arg(long = "hp", value_name = "DIR")]
    pub hp: Option<PathBuf>,
    /// The service's name (default: procd, or procd-USER for -u USER).
    #[arg(long, value_parser = crate::startup::parse_service_name)]
    pub service_name: Option<String>,
    /// Write the file and enable the service now (needs root).
    #[arg(long)]
    pub install: bool,
}

#[derive(Debug, Args)]
pub struct UnstartupArgs {
    /// The init system; detected when omitted.
    #[arg(value_enum)]
    pub platform: Option<crate::startup::Platform>,
    /// The user given to `startup -u` (only to derive the default service name).
    #[arg(long, short)]
    pub user: Option<String>,
    /// The service's name (default: procd, or procd-USER for -u USER).
    #[arg(long, value_parser = crate::startup::parse_service_name)]
    pub service_name: Option<String>,
    /// Stop the daemon, disable the service and remove its file now (needs root).
    #[arg(long)]
    pub install: bool,
}
