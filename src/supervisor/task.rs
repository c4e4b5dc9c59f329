//! One actor per instance: a handle the daemon keeps, a task that owns the
//! running process, and a [`Control`] enum between them.
//!
//! The task's loop only waits for something to happen (a control message,
//! the leader's exit from the reaper, a timer, the group becoming empty),
//! feeds it to the pure [`Lifecycle`], and performs the effects it returns.
//! What the instance looks like from outside is published in an
//! [`InstanceView`] behind a mutex, read by `status` without messaging.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::sleep_until;

mod cleanup;
mod handle;
mod readiness;

use cleanup::{clean_up_run, kill_run, signal_run};

pub use handle::InstanceHandle;

use super::keeper::{InstanceRecord, KeeperClient, RunTag};
use super::router::Route;
use super::state::{Effect, Event, Lifecycle, RestartReason, Status};
use crate::listen::ListenSet;
use crate::logs::LogHub;
use crate::process::keeper::LaunchRequest;
use crate::process::{self, CgroupRoot, Credentials, ExitStatus, InstanceCgroup};
use crate::ready::NotifyMsg;
use crate::spec::{InstanceSpec, ReadyCheck, ReadySpec, SpecHash};
use readiness::watchdog_of;

/// How often a stopping instance checks whether its group is empty. Short,
/// because a restart waits for it; cheap, because it is one `kill(-pgid, 0)`.
const GROUP_POLL: Duration = Duration::from_millis(5);

/// Everything an instance needs to (re)start its program.
#[derive(Debug, Clone)]
pub struct InstanceContext {
    pub app: String,
    pub index: u32,
    pub spec: Arc<InstanceSpec>,
    pub hash: SpecHash,
    /// The complete environment of the program (daemon env + spec env +
    /// `PROCD_*`), computed once per spec.
    pub env: Arc<Vec<(String, String)>>,
    pub credentials: Option<Credentials>,
    /// Why `user`/`group` could not be resolved; every start fails with it.
    pub credential_error: Option<String>,
    /// Where each run gets its own cgroup, when the host offers cgroup v2.
    pub cgroups: Option<Arc<CgroupRoot>>,
    /// The app's listening sockets, passed to every run on fds 3, 4, ...
    pub sockets: Option<Arc<ListenSet>>,
    /// When a started run counts as online.
    pub ready: ReadySpec,
    /// Give the run a Node IPC channel (after the sockets) and take
    /// `process.send('ready')` on it as ready.
    pub node_ipc: bool,
}

/// Messages from the daemon (and the reaper) to an instance's task.
#[derive(Debug)]
pub enum Control {
    Start,
    Stop,
    Restart(RestartReason),
    /// Restart only a running instance: a file change or a memory check
    /// must never start an app an operator stopped.
    RestartIfRunning(RestartReason),
    /// Take a new spec; restart with it if running (`restart`), or just keep
    /// it for the next start (an operator-stopped app).
    Replace {
        ctx: Box<InstanceContext>,
        restart: bool,
    },
    /// The leader exited (sent by the reaper through the [`ExitRouter`]).
    Exited {
        pid: i32,
        status: ExitStatus,
    },
    /// Run `pid` passed its `ready` probe.
    Ready {
        pid: i32,
    },
    /// Run `pid` (or a process of it) spoke the notify protocol.
    Notify {
        pid: i32,
        messages: Vec<NotifyMsg>,
    },
    /// `procd reset`.
    ResetCounters,
    /// Stop, then end the task (app removed, scale down, daemon shutdown).
    Remove,
    /// [`Control::Remove`] of an instance a rollout replaced: its successor
    /// owns the instance's record now.
    Retire,
    /// A rollout's replacement took its place: it owns the record now.
    Promote,
}

/// The outside view of an instance, kept current by its task.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub index: u32,
    pub pid: Option<i32>,
    pub status: Status,
    pub restarts: u32,
    pub online_since: Option<Instant>,
    pub restart_at: Option<Instant>,
    pub last_exit: Option<ExitStatus>,
    pub last_reason: Option<RestartReason>,
    pub hash: SpecHash,
    /// The last spawn error, shown until the next successful start.
    pub error: Option<String>,
    /// False once the task has ended (after `Remove`).
    pub alive: bool,
}

struct InstanceTask {
    ctx: InstanceContext,
    logs: LogHub,
    /// Spawns our runs and reports their exits; keeps our record.
    keeper: KeeperClient,
    /// Our own sender, handed to the exit router for each new pid.
    tx: mpsc::UnboundedSender<Control>,
    rx: mpsc::UnboundedReceiver<Control>,
    view: Arc<Mutex<InstanceView>>,
    lc: Lifecycle,
    /// The group leader (and pgid) of the current or stopping run.
    pid: Option<i32>,
    /// The cgroup of the current or stopping run. A run that left
    /// processes behind keeps its cgroup for their cleanup and the next run
    /// gets a fresh one, so the cleanup never touches the successor; an
    /// empty one is reused.
    run_cgroup: Option<InstanceCgroup>,
    /// The id of the latest run's cgroup (see `next_run_id`).
    runs: u64,
    restart_deadline: Option<tokio::time::Instant>,
    kill_deadline: Option<tokio::time::Instant>,
    /// A started run must pass its `ready` check before this.
    ready_deadline: Option<tokio::time::Instant>,
    /// A notify run with a watchdog must ping before this.
    watchdog_deadline: Option<tokio::time::Instant>,
    awaiting_group: bool,
    /// `Remove` was received: end the task once stopped.
    removing: bool,
    /// The record last given to the keeper, to send only changes.
    recorded: Option<InstanceRecord>,
    /// Not the owner of the instance's keeper record: retired by a rollout
    /// (the successor owns it), or a replacement not yet swapped in.
    retired: bool,
    /// The keeper key of the run's Node IPC channel copy.
    node_hold: Option<String>,
}

impl InstanceTask {
    async fn run(mut self) {
        loop {
            if self.removing && matches!(self.lc.status, Status::Stopped | Status::Errored) {
                break;
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(86400);
            let event = tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(msg) => match self.control(msg) {
                        Some(event) => event,
                        None => continue,
                    },
                    None => Event::Stop,
                },
                _ = sleep_until(self.restart_deadline.unwrap_or(far)), if self.restart_deadline.is_some() => {
                    self.restart_deadline = None;
                    Event::DelayElapsed
                }
                _ = sleep_until(self.kill_deadline.unwrap_or(far)), if self.kill_deadline.is_some() => {
                    self.kill_deadline = None;
                    Event::KillTimeout
                }
                _ = sleep_until(self.ready_deadline.unwrap_or(far)), if self.ready_deadline.is_some() => {
                    self.ready_deadline = None;
                    Event::ReadyTimeout { timeout_ms: self.ctx.ready.timeout.as_millis() as u64 }
                }
                _ = sleep_until(self.watchdog_deadline.unwrap_or(far)), if self.watchdog_deadline.is_some() => {
                    self.watchdog_deadline = None;
                    if self.lc.status != Status::Online {
                        continue;
                    }
                    let timeout_ms = watchdog_of(&self.ctx.ready).map_or(0, |d| d.as_millis() as u64);
                    tracing::warn!(app = %self.ctx.app, index = self.ctx.index, "no watchdog ping for {timeout_ms} ms");
                    Event::Restart(RestartReason::Watchdog { timeout_ms })
                }
                _ = tokio::time::sleep(GROUP_POLL), if self.awaiting_group => {
                    if self.run_alive() {
                        continue;
                    }
                    // The run's cgroup is empty now: kept for the next run.
                    Event::GroupGone
                }
            };
            self.apply(event).await;
        }
        if let Some(cg) = self.run_cgroup.take() {
            let _ = cg.remove();
        }
        self.release_node_channel();
        if !self.retired {
            self.keeper.store(InstanceRecord::key(&self.ctx.app, self.ctx.index), None::<&InstanceRecord>);
        }
        let mut view = self.view.lock().unwrap();
        view.alive = false;
        view.status = Status::Stopped;
    }

    /// Turns a control message into a lifecycle event, handling the ones
    /// that are not lifecycle events itself.
    fn control(&mut self, msg: Control) -> Option<Event> {
        match msg {
            Control::Start => Some(Event::Start),
            Control::Stop => Some(Event::Stop),
            Control::Restart(reason) => Some(Event::Restart(reason)),
            Control::RestartIfRunning(reason) => {
                matches!(self.lc.status, Status::Starting | Status::Online).then_some(Event::Restart(reason))
            }
            Control::Remove => {
                self.removing = true;
                Some(Event::Stop)
            }
            Control::Retire => {
                self.removing = true;
                self.retired = true;
                Some(Event::Stop)
            }
            Control::Promote => {
                self.retired = false;
                self.recorded = None;
                self.publish();
                None
            }
            Control::Replace { ctx, restart } => {
                self.ctx = *ctx;
                self.view.lock().unwrap().hash = self.ctx.hash.clone();
                restart.then_some(Event::Restart(RestartReason::SpecChange))
            }
            Control::Exited { pid, status } if Some(pid) == self.pid => {
                self.ready_deadline = None;
                self.watchdog_deadline = None;
                Some(Event::Exited(status))
            }
            Control::Exited { .. } => None,
            Control::Ready { pid } => self.became_ready(pid),
            Control::Notify { pid, messages } => {
                let mut event = None;
                for m in messages {
                    match m {
                        NotifyMsg::Ready if matches!(self.ctx.ready.check, ReadyCheck::Notify { .. }) => {
                            event = event.or(self.became_ready(pid));
                        }
                        NotifyMsg::Watchdog if self.watchdog_deadline.is_some() => self.arm_watchdog(),
                        _ => {}
                    }
                }
                event
            }
            Control::ResetCounters => {
                self.lc.reset_counters();
                self.publish();
                None
            }
        }
    }

    async fn apply(&mut self, event: Event) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            // Formatted only when traced: this runs on every respawn.
            let label = tracing::enabled!(tracing::Level::TRACE).then(|| format!("{event:?}"));
            let effects = match self.lc.step(event, Instant::now(), &self.ctx.spec.restart) {
                Ok(fx) => fx,
                Err(illegal) => {
                    tracing::debug!(app = %self.ctx.app, index = self.ctx.index, "ignored: {illegal}");
                    continue;
                }
            };
            if let Some(label) = label {
                tracing::trace!(app = %self.ctx.app, index = self.ctx.index, "{label} -> {}", self.lc.status);
            }
            for effect in effects {
                if let Some(next) = self.perform(effect).await {
                    queue.push(next);
                }
            }
        }
        self.publish();
    }

    /// Carries out one effect; returns the event it produced synchronously.
    async fn perform(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Spawn => self.spawn().await,
            Effect::SignalStop => {
                // A stopping run is past readiness and watchdog: neither
                // may turn the stop into a restart.
                self.ready_deadline = None;
                self.watchdog_deadline = None;
                signal_run(self.pid, self.run_cgroup.as_ref(), self.ctx.spec.stop.signal);
                self.kill_deadline = Some(tokio::time::Instant::now() + self.ctx.spec.stop.timeout);
                None
            }
            Effect::KillGroup => {
                kill_run(self.pid, self.run_cgroup.as_ref());
                None
            }
            Effect::AwaitGroupGone => {
                self.awaiting_group = true;
                None
            }
            Effect::CleanUpGroup => {
                self.run_cgroup = clean_up_run(
                    self.pid.take(),
                    self.run_cgroup.take(),
                    self.ctx.spec.stop.signal,
                    self.ctx.spec.stop.timeout,
                );
                None
            }
            Effect::ArmRestartTimer(delay) => {
                self.restart_deadline = Some(tokio::time::Instant::now() + delay);
                None
            }
            Effect::CancelRestartTimer => {
                self.restart_deadline = None;
                None
            }
        }
    }

    /// Starts a run. `None` while it must still pass its `ready` check
    /// (`Control::Ready`/`Notify` or the deadline produce the event).
    async fn spawn(&mut self) -> Option<Event> {
        // A run that ended by a stop leaves its pid here until the next start.
        self.pid = None;
        self.awaiting_group = false;
        self.kill_deadline = None;
        self.ready_deadline = None;
        self.watchdog_deadline = None;
        if let Some(e) = self.ctx.credential_error.clone() {
            self.view.lock().unwrap().error = Some(e.clone());
            return Some(Event::SpawnFailed(e));
        }
        let spec = self.ctx.spec.clone();
        // An empty cgroup from the previous run is reused: creating and
        // removing one per restart would sit on the respawn path.
        self.run_cgroup = match self.run_cgroup.take() {
            Some(cg) if !cg.populated() => Some(cg),
            _ => {
                // Unique across instances of one index (a rollout runs two)
                // and across daemons: the old one's cleanup never touches it.
                self.runs = next_run_id();
                self.ctx.cgroups.as_ref().and_then(|root| {
                    let key = format!("{}-{}-run{:x}", self.ctx.app, self.ctx.index, self.runs);
                    root.instance(&key).map_err(|e| tracing::warn!("no cgroup for {key}: {e}")).ok()
                })
            }
        };
        let launch = LaunchRequest {
            argv: spec.argv.clone(),
            cwd: spec.cwd.clone().unwrap_or_else(|| "/".into()),
            env: self.ctx.env.as_ref().clone(),
            credentials: self.ctx.credentials.clone(),
            cgroup: self.run_cgroup.as_ref().map(|c| c.path().to_owned()),
            listen_pid: self.ctx.sockets.is_some(),
        };
        self.release_node_channel();
        let sockets = self.ctx.sockets.clone();
        let mut fds = sockets.as_ref().map(|s| s.fds()).unwrap_or_default();
        let channel = if self.ctx.node_ipc {
            match crate::ready::NodeChannel::pair() {
                Ok(pair) => Some(pair),
                Err(e) => {
                    let msg = e.to_string();
                    self.view.lock().unwrap().error = Some(msg.clone());
                    return Some(Event::SpawnFailed(msg));
                }
            }
        } else {
            None
        };
        if let Some((child_end, _)) = &channel {
            fds.push(child_end.as_fd());
        }
        let tag = RunTag {
            app: self.ctx.app.clone(),
            index: self.ctx.index,
            hash: self.ctx.hash.clone(),
            cgroup: launch.cgroup.clone(),
            runs: self.runs,
            started_ms: unix_ms_now(),
            stop_signal: spec.stop.signal,
            stop_timeout_ms: spec.stop.timeout.as_millis() as u64,
        };
        // The route is registered by the keeper client before any exit of
        // the new pid can be delivered.
        match self.keeper.spawn(launch, &tag, self.route(), &fds).await {
            Ok(spawned) => {
                self.pid = Some(spawned.pid);
                self.logs.attach(&self.ctx.app, self.ctx.index, &spec.logs, spawned.stdout, spawned.stderr);
                self.view.lock().unwrap().error = None;
                if let Some((_, channel)) = channel {
                    self.read_node_channel(spawned.pid, channel);
                }
                self.await_ready(spawned.pid)
            }
            Err(msg) => {
                tracing::warn!(app = %self.ctx.app, index = self.ctx.index, "cannot start: {msg}");
                self.view.lock().unwrap().error = Some(msg.clone());
                Some(Event::SpawnFailed(msg))
            }
        }
    }

    fn route(&self) -> Route {
        Route { app: Arc::from(self.ctx.app.as_str()), tx: self.tx.clone(), cgroup: self.run_cgroup.clone() }
    }

    fn publish(&mut self) {
        let record = InstanceRecord {
            status: self.lc.status,
            restarts: self.lc.restarts,
            last_exit: self.lc.last_exit,
            last_reason: self.lc.last_reason.clone(),
        };
        if self.recorded.as_ref() != Some(&record) && !self.retired {
            self.keeper.store(InstanceRecord::key(&self.ctx.app, self.ctx.index), Some(&record));
            self.recorded = Some(record);
        }
        let mut v = self.view.lock().unwrap();
        v.pid = match self.lc.status {
            Status::Starting | Status::Online | Status::Stopping => self.pid,
            _ => None,
        };
        v.status = self.lc.status;
        v.restarts = self.lc.restarts;
        v.online_since = self.lc.online_since;
        v.restart_at = self.lc.restart_at;
        v.last_exit = self.lc.last_exit;
        v.last_reason = self.lc.last_reason.clone();
    }
}

impl InstanceTask {
    /// Whether any process of the current run is left: its process group,
    /// and its cgroup where there is one (which also holds descendants that
    /// left the group).
    fn run_alive(&self) -> bool {
        self.pid.is_some_and(process::group_alive) || self.run_cgroup.as_ref().is_some_and(InstanceCgroup::populated)
    }
}

/// A run id no other run of this host has had: microseconds since the
/// epoch at the daemon's first run, counting up.
fn next_run_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let _ = NEXT.compare_exchange(
        0,
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64),
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
