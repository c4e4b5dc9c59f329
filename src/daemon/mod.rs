//! The daemon: wires the spec loader, the reconcile plan, the instance
//! actors, the control socket and the signals together.
//!
//! One loop owns all mutable state (apps, operator state, config errors) and
//! takes one thing at a time: a control request, a config change, a signal.
//! Everything slow happens elsewhere: instances in their own tasks, replies
//! that wait for processes on their connection's task, reaping in the reaper
//! task, sampling in the monitor task.

mod adopt;
mod apps;
mod host;
mod report;
mod requests;
mod rollout;
mod sockets;
mod usage;
mod watching;

use std::collections::HashMap;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::app_watch::{AppWatcher, WatchEvent};
use crate::control::server::{self, Incoming};
use crate::logs::LogHub;
use crate::logs::daemon_log::DaemonLog;
use crate::paths::Paths;
use crate::process::{self, Reaper};
use crate::spec::{AppSpec, LoadOptions, Loader, SpecDir, SpecError, WatchSpec};
use crate::state::OperatorState;
use crate::supervisor::keeper::KeeperError;
use crate::supervisor::{ExitRouter, KeeperClient};
use crate::watch::ConfigWatcher;

pub use apps::AppLaunch;
use apps::Apps;
use host::{base_env, detect_cgroups, reexec, route_notifications, sd_notify};
use usage::{Sampler, SharedSampler};

/// Settings of one daemon run.
#[derive(Clone)]
pub struct DaemonOptions {
    pub paths: Paths,
    /// The env profile selected with `--env`.
    pub env_profile: Option<String>,
    /// Quiet time after a config event before rescanning: editors and
    /// deploy tools write several files and renames in a burst.
    pub debounce: Duration,
    /// A full rescan this often even without events: changes to a
    /// symlink's target outside the watched tree produce none.
    pub rescan_every: Duration,
    /// How often instances' memory and CPU are sampled.
    pub sample_every: Duration,
    /// The daemon's own log file, reopened with the apps' on SIGUSR1 and
    /// `procd reload-logs`.
    pub daemon_log: Option<DaemonLog>,
    /// Use a cgroup per instance run where cgroup v2 is writable.
    pub cgroups: bool,
    /// SIGTERM/SIGINT end the daemon only; the keeper keeps the apps.
    pub keep_apps: bool,
}

/// How the daemon loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stop every app, then the keeper (SIGTERM/SIGINT, `procd kill`).
    StopApps,
    /// Leave the apps to the keeper for the next daemon (`--keep-apps`).
    KeepApps,
    /// Re-execute the keeper and the daemon (`procd update`).
    Update,
    /// The keeper is gone: re-execute the daemon, which starts a new one.
    KeeperLost,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Socket(#[from] server::ServerError),
    #[error("cannot create {path}: {source}")]
    Dir { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot set up {what}: {source}")]
    Setup { what: &'static str, source: std::io::Error },
    #[error("cannot watch the config dir: {0}")]
    Watch(#[from] notify::Error),
    #[error(transparent)]
    Keeper(#[from] KeeperError),
    #[error("another procd daemon runs with this state dir (it holds {path})")]
    Locked { path: std::path::PathBuf },
    #[error("cannot re-execute {exe}: {source}")]
    Reexec { exe: std::path::PathBuf, source: std::io::Error },
}

/// The state the daemon loop owns.
pub struct Daemon {
    opts: DaemonOptions,
    loader: Loader,
    dirs: Vec<SpecDir>,
    apps: Apps,
    /// The apps the files declare, as of the last load.
    desired: Vec<AppSpec>,
    errors: Vec<SpecError>,
    operator: OperatorState,
    /// Memory and CPU figures, and the `max-memory` limits they are
    /// checked against.
    sampler: SharedSampler,
    /// One file watcher per app with `watch`, with the spec it was made from.
    watchers: HashMap<String, (WatchSpec, AppWatcher)>,
    /// Where the watchers report changes.
    watch_tx: mpsc::UnboundedSender<WatchEvent>,
    /// Watchers that could not start (a missing path), shown with the
    /// config errors until fixed.
    watch_errors: Vec<SpecError>,
    /// When this daemon image started, for `procd update` to see the new one.
    started_ms: u64,
    /// Set by a request that ends the daemon (`update`, `kill`).
    exit: Option<Exit>,
    /// Where rollouts ask the loop to swap instances.
    loop_tx: mpsc::UnboundedSender<rollout::LoopMsg>,
    /// Apps with a rollout in progress.
    rolling: std::collections::HashSet<String>,
    /// Why an app's last rollout was aborted, shown in `status`.
    rollout_errors: std::collections::BTreeMap<String, String>,
    /// Apps whose spec changed during their rollout: rolled again, over
    /// every instance, with the new spec once it ends.
    queued_rollouts: std::collections::BTreeSet<String>,
    /// Running rollouts, and how shutdown tells them to end.
    rollout_tasks: Vec<tokio::task::JoinHandle<()>>,
    cancel_rollouts: tokio::sync::watch::Sender<bool>,
}

/// Runs the daemon until SIGTERM or SIGINT, then stops every app and returns.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let paths = opts.paths.clone();
    for dir in [&paths.config_dir, &paths.cli_apps_dir(), &paths.log_dir] {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir { path: dir.clone(), source })?;
    }
    // One daemon per state dir: two would share (or fight over) one keeper.
    let lock_path = paths.state_dir.join("daemon.lock");
    let _lock = process::lock_exclusive(&lock_path).map_err(|source| match source.kind() {
        std::io::ErrorKind::WouldBlock => DaemonError::Locked { path: lock_path.clone() },
        _ => DaemonError::Dir { path: lock_path.clone(), source },
    })?;
    let listener = server::bind(&paths.socket)?;
    if let Err(e) = process::raise_fd_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    // Orphaned grandchildren come back to us, so they are reaped and a
    // stop can wait until no process of a group is left.
    if let Err(e) = process::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let router = ExitRouter::default();
    // The apps are the keeper's children; ours are the keeper itself (at
    // first) and, as PID 1 in a container, every orphan of the namespace.
    let mut reaper = Reaper::new().map_err(|source| DaemonError::Setup { what: "the child reaper", source })?;
    tokio::spawn(async move {
        loop {
            for (pid, status) in reaper.reaped().await {
                tracing::debug!(pid, "reaped a child of the daemon: {status}");
            }
        }
    });
    let exe =
        std::env::current_exe().map_err(|source| DaemonError::Setup { what: "finding procd's binary", source })?;
    let (keeper, inventory) = KeeperClient::connect(&paths.keeper_socket(), &exe, router.clone()).await?;
    let _ = std::fs::write(paths.keeper_pid_file(), format!("{}\n", inventory.keeper_pid));
    if inventory.existing {
        tracing::info!(
            keeper = inventory.keeper_pid,
            "adopting {} running instance(s) from the keeper",
            inventory.runs.iter().filter(|r| r.exit.is_none()).count()
        );
    }
    // The systemd notify protocol for apps with `ready "notify"`: the
    // sender's pid (from the kernel) names the instance.
    let notify_path = paths.state_dir.join("notify.sock");
    let notify_socket = match crate::ready::NotifySocket::bind(&notify_path) {
        Ok(socket) => {
            tokio::spawn(route_notifications(socket, router.clone()));
            Some(notify_path)
        }
        Err(e) => {
            tracing::warn!("no notify socket, `ready \"notify\"` apps will never be ready: {e}");
            None
        }
    };
    let sampler = Sampler::new(router.clone());
    tokio::spawn(usage::sample_usage(sampler.clone(), opts.sample_every));

    let operator = OperatorState::load(&paths.state_file()).unwrap_or_else(|e| {
        tracing::error!("{e}; starting every declared app");
        OperatorState::default()
    });
    let dirs = vec![
        SpecDir { path: paths.config_dir.clone(), cli_created: false },
        SpecDir { path: paths.cli_apps_dir(), cli_created: true },
    ];
    let (app_watch_tx, mut app_watch_rx) = mpsc::unbounded_channel();
    let (loop_tx, mut loop_rx) = mpsc::unbounded_channel();
    let load_opts = LoadOptions { env_profile: opts.env_profile.clone(), ..LoadOptions::default() };
    let mut daemon = Daemon {
        loader: Loader::new(load_opts),
        dirs,
        apps: Apps {
            apps: Default::default(),
            draining: Vec::new(),
            logs: LogHub::new(paths.log_dir.clone()),
            keeper: keeper.clone(),
            adoptable: Default::default(),
            surplus: Vec::new(),
            records: Default::default(),
            sockets: Default::default(),
            held_sockets: Default::default(),
            listen_errors: Default::default(),
            rollouts: Vec::new(),
            notify_socket,
            base_env: base_env(),
            cgroups: if opts.cgroups { detect_cgroups(&paths) } else { None },
            cpus: process::cpu_count(),
        },
        desired: Vec::new(),
        errors: Vec::new(),
        operator,
        sampler,
        watchers: HashMap::new(),
        watch_tx: app_watch_tx,
        watch_errors: Vec::new(),
        started_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        exit: None,
        loop_tx,
        rolling: Default::default(),
        rollout_errors: Default::default(),
        queued_rollouts: Default::default(),
        rollout_tasks: Vec::new(),
        cancel_rollouts: tokio::sync::watch::channel(false).0,
        opts,
    };
    daemon.apps.take_inventory(inventory);
    daemon.apps.sweep_stray_cgroups();

    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let mut watcher = ConfigWatcher::new(daemon.dirs.iter().map(|d| d.path.clone()).collect(), watch_tx)?;
    let (req_tx, mut req_rx) = mpsc::channel::<Incoming>(64);
    tokio::spawn(server::serve(listener, req_tx));

    let sig = |kind: SignalKind, what: &'static str| signal(kind).map_err(|source| DaemonError::Setup { what, source });
    let mut term = sig(SignalKind::terminate(), "SIGTERM handling")?;
    let mut int = sig(SignalKind::interrupt(), "SIGINT handling")?;
    let mut hup = sig(SignalKind::hangup(), "SIGHUP handling")?;
    let mut usr1 = sig(SignalKind::user_defined1(), "SIGUSR1 handling")?;

    daemon.rescan();
    // Adopted runs no declared instance claimed: their app or index is gone.
    daemon.apps.stop_unclaimed();
    tracing::info!(
        config_dir = %daemon.opts.paths.config_dir.display(),
        socket = %daemon.opts.paths.socket.display(),
        "procd daemon ready"
    );

    let mut rescan_at: Option<Instant> = None;
    // The first event of a burst: a directory that never goes quiet is
    // still rescanned every ten debounce periods.
    let mut burst_start: Option<Instant> = None;
    let mut periodic = tokio::time::interval(daemon.opts.rescan_every);
    periodic.tick().await;
    let on_signal = if daemon.opts.keep_apps { Exit::KeepApps } else { Exit::StopApps };
    // Under systemd (Type=notify): ready once the first reconcile launched
    // the apps; watchdog pings from this loop, so a stuck loop misses them.
    sd_notify(crate::sd_notify::READY);
    let watchdog = crate::sd_notify::watchdog_interval().map(|d| d / 2);
    let mut pings = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let exit = loop {
        if let Some(exit) = daemon.exit {
            break exit;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            Some((request, reply)) = req_rx.recv() => {
                let _ = reply.send(daemon.handle(request));
            }
            _ = keeper.lost() => {
                // Killed, or crashed: without it nothing can be started or
                // reaped. Re-executing starts a fresh keeper; with cgroups
                // the lost keeper's apps are stopped and started again.
                tracing::error!("lost the keeper: restarting procd to start a new one");
                break Exit::KeeperLost;
            }
            Some(()) = watch_rx.recv() => {
                // Each event pushes the rescan back, so a burst is one rescan.
                let now = Instant::now();
                let start = *burst_start.get_or_insert(now);
                rescan_at = Some((now + daemon.opts.debounce).min(start + daemon.opts.debounce * 10));
            }
            _ = sleep_until(rescan_at.unwrap_or(far)), if rescan_at.is_some() => {
                rescan_at = None;
                burst_start = None;
                watcher.refresh();
                daemon.rescan();
            }
            Some(event) = app_watch_rx.recv() => daemon.on_file_change(event),
            Some(msg) = loop_rx.recv() => daemon.on_rollout(msg),
            _ = periodic.tick() => {
                daemon.rescan();
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the config dir");
                daemon.rescan();
            }
            _ = usr1.recv() => daemon.reopen_logs(),
            _ = pings.tick(), if watchdog.is_some() => sd_notify(crate::sd_notify::WATCHDOG),
            _ = term.recv() => break on_signal,
            _ = int.recv() => break on_signal,
        }
    };
    daemon.watchers.clear();
    daemon.end_rollouts(&mut loop_rx).await;
    if !matches!(exit, Exit::Update | Exit::KeeperLost) {
        sd_notify(crate::sd_notify::STOPPING);
    }
    match exit {
        Exit::StopApps => {
            tracing::info!("stopping every app");
            daemon.shutdown().await;
            keeper.exit();
            keeper.flush().await;
            let _ = std::fs::remove_file(daemon.opts.paths.keeper_pid_file());
            if let Some(cgroups) = &daemon.apps.cgroups {
                let _ = cgroups.remove();
            }
            let _ = std::fs::remove_file(&daemon.opts.paths.socket);
            Ok(())
        }
        Exit::KeepApps => {
            tracing::info!("exiting; the keeper keeps every app running for the next daemon");
            daemon.apps.logs.flush_partial_lines();
            tokio::time::sleep(Duration::from_millis(10)).await;
            keeper.flush().await;
            let _ = std::fs::remove_file(&daemon.opts.paths.socket);
            Ok(())
        }
        Exit::Update => {
            tracing::info!(exe = %exe.display(), "updating: re-executing the keeper, then the daemon");
            keeper.flush().await;
            keeper.reexec(&exe).await;
            // Lines written in part are split, not lost; the rest of the
            // output waits in the pipes the keeper holds.
            daemon.apps.logs.flush_partial_lines();
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(reexec(&exe))
        }
        Exit::KeeperLost => {
            // Its apps are orphans now (ours, as subreaper, or init's). Stop
            // them before the new image starts each instance once; with
            // cgroups the new image also sweeps whatever they left.
            for (pid, _) in daemon.apps.keeper.router().routes() {
                let _ = process::signal_group(pid, libc::SIGTERM);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (pid, _) in daemon.apps.keeper.router().routes() {
                let _ = process::kill_group(pid);
            }
            Err(reexec(&exe))
        }
    }
}

impl Daemon {
    /// Re-reads every spec file and applies the difference; returns the
    /// plan and the instances it started or restarted.
    fn rescan(&mut self) -> (Vec<crate::reconcile::Action>, Vec<(String, u32)>) {
        tracing::debug!("rescanning the config");
        let loaded = self.loader.load(&self.dirs);
        // Logged once per change, not on every rescan; `errors` also holds
        // the watchers' errors, appended after the spec errors.
        let previous = &self.errors[..self.errors.len() - self.watch_errors.len()];
        if loaded.errors != previous {
            for e in &loaded.errors {
                tracing::warn!("{e}");
            }
        }
        self.errors = loaded.errors;
        self.desired = loaded.apps;
        // An operator stop is forgotten with its app (as `pm2 delete` does):
        // a name declared again later starts.
        let before = self.operator.stopped.len();
        self.operator.stopped.retain(|name| self.desired.iter().any(|s| s.name == *name));
        if self.operator.stopped.len() != before
            && let Err(e) = self.save_operator_state()
        {
            tracing::error!("{e}");
        }
        {
            let mut sampler = self.sampler.lock().unwrap();
            sampler.limits = self.desired.iter().filter_map(|s| s.max_memory.map(|m| (s.name.clone(), m))).collect();
            sampler.listening = self.desired.iter().filter(|s| !s.listen.is_empty()).map(|s| s.name.clone()).collect();
            sampler.to_loop.get_or_insert_with(|| self.loop_tx.clone());
        }
        let actions = self.apps.plan(&self.desired);
        for a in &actions {
            tracing::info!("{a}");
        }
        let started = self.apps.apply(&actions, &self.desired, &self.operator.stopped);
        self.apps.drop_sockets(&self.desired);
        for (app, indices) in std::mem::take(&mut self.apps.rollouts) {
            // A rollout already running for the app finishes with the spec
            // it started with; this one follows it (see `on_rollout`).
            if self.rolling.contains(&app) {
                self.queued_rollouts.insert(app);
            } else if let Err(e) = self.start_rollout(&app, indices) {
                tracing::error!(app, "{e}");
            }
        }
        self.sync_watchers();
        for (app, message) in &self.apps.listen_errors {
            if let Some(spec) = self.desired.iter().find(|s| &s.name == app) {
                self.errors.push(SpecError {
                    file: spec.source.file.clone(),
                    line: spec.source.line,
                    column: 1,
                    message: message.clone(),
                });
            }
        }
        self.errors.extend(self.watch_errors.iter().cloned());
        process::release_free_memory();
        (actions, started)
    }

    /// Reopens every log file by path, after an external logrotate.
    fn reopen_logs(&self) {
        self.apps.logs.reopen();
        if let Some(log) = &self.opts.daemon_log {
            log.reopen();
        }
        tracing::info!("log files reopened");
    }

    fn save_operator_state(&self) -> Result<(), String> {
        self.operator.save(&self.opts.paths.state_file()).map_err(|e| e.to_string())
    }

    async fn shutdown(&mut self) {
        let handles = self.apps.all_handles();
        for h in &handles {
            h.send(crate::supervisor::task::Control::Remove);
        }
        for h in handles {
            let _ = h.join.await;
        }
    }
}
