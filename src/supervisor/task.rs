//! One actor per instance: a handle the daemon keeps, a task that owns the
//! running process, and a [`Control`] enum between them.
//!
//! The task's loop only waits for something to happen (a control message,
//! the leader's exit from the reaper, a timer, the group becoming empty),
//! feeds it to the pure [`Lifecycle`], and performs the effects it returns.
//! What the instance looks like from outside is published in an
//! [`InstanceView`] behind a mutex, read by `status` without messaging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use super::state::{Effect, Event, Lifecycle, RestartReason, Status};
use crate::logs::LogHub;
use crate::process::{self, Credentials, ExitStatus, LaunchSpec};
use crate::spec::{InstanceSpec, SpecHash};

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
    /// `procd reset`.
    ResetCounters,
    /// Stop, then end the task (app removed, scale down, daemon shutdown).
    Remove,
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

/// Who owns a running leader pid.
#[derive(Clone)]
pub struct Route {
    pub app: Arc<str>,
    pub tx: mpsc::UnboundedSender<Control>,
}

impl Route {
    pub fn send(&self, msg: Control) {
        let _ = self.tx.send(msg);
    }
}

/// Routes exit statuses from the single reaper to the task owning the pid,
/// and tells the monitor which pids are instance leaders.
#[derive(Clone, Default)]
pub struct ExitRouter {
    routes: Arc<Mutex<HashMap<i32, Route>>>,
}

impl ExitRouter {
    fn register(&self, pid: i32, route: Route) {
        self.routes.lock().unwrap().insert(pid, route);
    }

    /// Delivers a reaped exit; pids nobody owns (orphaned grandchildren the
    /// subreaper collected) are ignored.
    pub fn deliver(&self, pid: i32, status: ExitStatus) {
        if let Some(route) = self.routes.lock().unwrap().remove(&pid) {
            route.send(Control::Exited { pid, status });
        }
    }

    /// Every running instance leader and its owner.
    pub fn routes(&self) -> Vec<(i32, Route)> {
        self.routes.lock().unwrap().iter().map(|(pid, r)| (*pid, r.clone())).collect()
    }
}

/// The daemon's side of an instance.
pub struct InstanceHandle {
    tx: mpsc::UnboundedSender<Control>,
    pub view: Arc<Mutex<InstanceView>>,
    pub join: JoinHandle<()>,
}

impl InstanceHandle {
    /// Creates the instance's task, initially stopped.
    pub fn spawn(ctx: InstanceContext, logs: LogHub, router: ExitRouter) -> InstanceHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = Arc::new(Mutex::new(InstanceView {
            index: ctx.index,
            pid: None,
            status: Status::Stopped,
            restarts: 0,
            online_since: None,
            restart_at: None,
            last_exit: None,
            last_reason: None,
            hash: ctx.hash.clone(),
            error: None,
            alive: true,
        }));
        let task = InstanceTask {
            ctx,
            logs,
            router,
            tx: tx.clone(),
            rx,
            view: view.clone(),
            lc: Lifecycle::default(),
            pid: None,
            restart_deadline: None,
            kill_deadline: None,
            awaiting_group: false,
            removing: false,
        };
        let join = tokio::spawn(task.run());
        InstanceHandle { tx, view, join }
    }

    pub fn send(&self, msg: Control) {
        // A send fails only when the task has ended, which is then the answer.
        let _ = self.tx.send(msg);
    }

    pub fn snapshot(&self) -> InstanceView {
        self.view.lock().unwrap().clone()
    }
}

struct InstanceTask {
    ctx: InstanceContext,
    logs: LogHub,
    router: ExitRouter,
    /// Our own sender, handed to the exit router for each new pid.
    tx: mpsc::UnboundedSender<Control>,
    rx: mpsc::UnboundedReceiver<Control>,
    view: Arc<Mutex<InstanceView>>,
    lc: Lifecycle,
    /// The group leader (and pgid) of the current or stopping run.
    pid: Option<i32>,
    restart_deadline: Option<tokio::time::Instant>,
    kill_deadline: Option<tokio::time::Instant>,
    awaiting_group: bool,
    /// `Remove` was received: end the task once stopped.
    removing: bool,
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
                _ = tokio::time::sleep(GROUP_POLL), if self.awaiting_group => {
                    match self.pid {
                        Some(pgid) if process::group_alive(pgid) => continue,
                        _ => Event::GroupGone,
                    }
                }
            };
            self.apply(event);
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
            Control::Replace { ctx, restart } => {
                self.ctx = *ctx;
                self.view.lock().unwrap().hash = self.ctx.hash.clone();
                restart.then_some(Event::Restart(RestartReason::SpecChange))
            }
            Control::Exited { pid, status } if Some(pid) == self.pid => Some(Event::Exited(status)),
            Control::Exited { .. } => None,
            Control::ResetCounters => {
                self.lc.reset_counters();
                self.publish();
                None
            }
        }
    }

    fn apply(&mut self, event: Event) {
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let label = format!("{event:?}");
            let effects = match self.lc.step(event, Instant::now(), &self.ctx.spec.restart) {
                Ok(fx) => fx,
                Err(illegal) => {
                    tracing::debug!(app = %self.ctx.app, index = self.ctx.index, "ignored: {illegal}");
                    continue;
                }
            };
            tracing::trace!(app = %self.ctx.app, index = self.ctx.index, "{label} -> {}", self.lc.status);
            for effect in effects {
                if let Some(next) = self.perform(effect) {
                    queue.push(next);
                }
            }
        }
        self.publish();
    }

    /// Carries out one effect; returns the event it produced synchronously.
    fn perform(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Spawn => Some(self.spawn()),
            Effect::SignalStop => {
                if let Some(pgid) = self.pid {
                    let _ = process::signal_group(pgid, self.ctx.spec.stop.signal);
                }
                self.kill_deadline = Some(tokio::time::Instant::now() + self.ctx.spec.stop.timeout);
                None
            }
            Effect::KillGroup => {
                if let Some(pgid) = self.pid {
                    let _ = process::signal_group(pgid, libc_sigkill());
                }
                None
            }
            Effect::AwaitGroupGone => {
                self.awaiting_group = true;
                None
            }
            Effect::CleanUpGroup => {
                if let Some(pgid) = self.pid.take() {
                    clean_up_group(pgid, self.ctx.spec.stop.signal, self.ctx.spec.stop.timeout);
                }
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

    fn spawn(&mut self) -> Event {
        // A run that ended by a stop leaves its pid here until the next start.
        self.pid = None;
        self.awaiting_group = false;
        self.kill_deadline = None;
        if let Some(e) = self.ctx.credential_error.clone() {
            self.view.lock().unwrap().error = Some(e.clone());
            return Event::SpawnFailed(e);
        }
        let spec = &self.ctx.spec;
        let cwd = spec.cwd.clone().unwrap_or_else(|| "/".into());
        let launch =
            LaunchSpec { argv: &spec.argv, cwd: &cwd, env: &self.ctx.env, credentials: self.ctx.credentials.as_ref(), cgroup: None };
        match process::launch(&launch) {
            Ok(launched) => {
                // Registered before this task yields, so the reaper (on the
                // same thread) cannot see the exit before the route exists.
                let route = Route { app: Arc::from(self.ctx.app.as_str()), tx: self.tx.clone() };
                self.router.register(launched.pid, route);
                self.pid = Some(launched.pid);
                self.logs.attach(&self.ctx.app, self.ctx.index, &spec.logs, launched.stdout, launched.stderr);
                self.view.lock().unwrap().error = None;
                Event::Spawned
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(app = %self.ctx.app, index = self.ctx.index, "cannot start: {msg}");
                self.view.lock().unwrap().error = Some(msg.clone());
                Event::SpawnFailed(msg)
            }
        }
    }

    fn publish(&self) {
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

fn libc_sigkill() -> i32 {
    9
}

/// The leader of a run died on its own; whatever it left in its group gets
/// the stop signal now and SIGKILL after the timeout, without holding up the
/// restart. Nothing the app forked outlives its run.
fn clean_up_group(pgid: i32, signal: i32, timeout: Duration) {
    if !process::group_alive(pgid) {
        return;
    }
    let _ = process::signal_group(pgid, signal);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if !process::group_alive(pgid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = process::signal_group(pgid, libc_sigkill());
    });
}
