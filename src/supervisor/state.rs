//! The lifecycle of one instance as an explicit, pure state machine.
//!
//! [`Lifecycle::step`] takes the current state, an [`Event`] and the time,
//! and returns the [`Effect`]s the instance actor must carry out. Every policy
//! decision (restart or not, which delay, when to give up as `errored`) is
//! taken here, so it is tested with tables and no processes or clock; the
//! actor in `task.rs` only performs effects and feeds back what happened.
//! An event that makes no sense in the current state is an
//! [`IllegalTransition`]: the caller logs it and nothing changes.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backoff;
use crate::process::ExitStatus;
use crate::spec::{RestartPolicy, RestartSpec};

/// The status shown in `status`; the names are the interface contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Starting,
    Online,
    Stopping,
    Stopped,
    WaitingRestart,
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::WaitingRestart => "waiting-restart",
            Status::Errored => "errored",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an instance was (re)started; recorded for `status` and `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RestartReason {
    /// The program exited or was killed on its own.
    Exited { status: ExitStatus },
    /// The program could not be executed at all.
    SpawnFailed { error: String },
    /// `procd restart` or `procd start` by an operator.
    Operator,
    /// The app's spec hash changed.
    SpecChange,
    /// The instance's process tree passed `max-memory`.
    MemoryLimit { rss_bytes: u64, limit_bytes: u64 },
    /// A file under the app's `watch` paths changed.
    Watch { path: std::path::PathBuf },
    /// The started program did not pass its `ready` check in time.
    NotReady { timeout_ms: u64 },
    /// A `ready "notify"` instance sent no `WATCHDOG=1` for this long.
    Watchdog { timeout_ms: u64 },
    /// Replaced by a rolling reload (`procd reload`, a spec change or a
    /// memory restart of an app with `listen`).
    Reload,
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartReason::Exited { status } => write!(f, "{status}"),
            RestartReason::SpawnFailed { error } => write!(f, "spawn failed: {error}"),
            RestartReason::Operator => f.write_str("operator"),
            RestartReason::SpecChange => f.write_str("spec changed"),
            RestartReason::MemoryLimit { rss_bytes, limit_bytes } => {
                write!(f, "memory {} over the {} limit", mib(*rss_bytes), mib(*limit_bytes))
            }
            RestartReason::Watch { path } => write!(f, "watched file changed: {}", path.display()),
            RestartReason::NotReady { timeout_ms } => write!(f, "not ready within {timeout_ms} ms"),
            RestartReason::Watchdog { timeout_ms } => write!(f, "no watchdog ping for {timeout_ms} ms"),
            RestartReason::Reload => f.write_str("rolling reload"),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

/// What happened to the instance, as seen by its actor.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Reconcile or an operator wants the instance running.
    Start,
    /// An operator or reconcile wants the instance stopped and kept stopped.
    Stop,
    /// Stop (if running) and start again, counting a restart.
    Restart(RestartReason),
    /// The program was executed.
    Spawned,
    /// The program could not be executed.
    SpawnFailed(String),
    /// The group leader exited.
    Exited(ExitStatus),
    /// The stop signal was sent `timeout` ago and the group is still alive.
    KillTimeout,
    /// No process of the instance's group is left.
    GroupGone,
    /// The restart delay has elapsed.
    DelayElapsed,
    /// The program runs but did not pass its `ready` check in time.
    ReadyTimeout { timeout_ms: u64 },
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Execute the program (then feed back `Spawned` or `SpawnFailed`).
    Spawn,
    /// Send the spec's stop signal to the group and arm the kill timer.
    SignalStop,
    /// SIGKILL the whole group.
    KillGroup,
    /// Start watching for the group to be empty (feed back `GroupGone`).
    AwaitGroupGone,
    /// The leader died on its own: stop any process it left in its group,
    /// without delaying the restart.
    CleanUpGroup,
    /// Feed back `DelayElapsed` after this long.
    ArmRestartTimer(Duration),
    /// Forget a pending restart timer.
    CancelRestartTimer,
}

/// What to do once a stop completes.
#[derive(Debug, Clone, PartialEq)]
enum AfterStop {
    Stay,
    Start(Option<RestartReason>),
    /// Too many starts never became ready: `errored` once stopped.
    GiveUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    pub status: Status,
    pub event: String,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} is not valid in state {}", self.event, self.status)
    }
}

/// The pure state of one instance.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub status: Status,
    /// Restarts since creation or the last `reset`.
    pub restarts: u32,
    /// Consecutive exits that came before `min-uptime` (PM2's
    /// `unstable_restarts`); reaching `max-restarts` means `errored`.
    pub unstable_exits: u32,
    /// When the current run went online; `None` when not running.
    pub online_since: Option<Instant>,
    /// When a `waiting-restart` instance will be started.
    pub restart_at: Option<Instant>,
    /// The delay used for the pending or latest restart (backoff history).
    pub last_delay: Option<Duration>,
    pub last_exit: Option<ExitStatus>,
    pub last_reason: Option<RestartReason>,
    after_stop: AfterStop,
    /// The reason the next `Spawned` will be recorded under.
    pending_reason: Option<RestartReason>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            status: Status::Stopped,
            restarts: 0,
            unstable_exits: 0,
            online_since: None,
            restart_at: None,
            last_delay: None,
            last_exit: None,
            last_reason: None,
            after_stop: AfterStop::Stay,
            pending_reason: None,
        }
    }
}

impl Lifecycle {
    /// An instance whose process a previous daemon started and this one
    /// adopted from the keeper: online since `since`, with its counters.
    pub fn adopted(
        since: Instant,
        restarts: u32,
        last_exit: Option<ExitStatus>,
        last_reason: Option<RestartReason>,
    ) -> Lifecycle {
        Lifecycle {
            status: Status::Online,
            restarts,
            online_since: Some(since),
            last_exit,
            last_reason,
            ..Lifecycle::default()
        }
    }

    /// An instance with no process, as a previous daemon left it: `errored`
    /// stays errored (until an operator or a spec change starts it), any
    /// other status is stopped, ready to be started; counters are kept.
    pub fn restored(
        status: Status,
        restarts: u32,
        last_exit: Option<ExitStatus>,
        last_reason: Option<RestartReason>,
    ) -> Lifecycle {
        let status = if status == Status::Errored { Status::Errored } else { Status::Stopped };
        Lifecycle { status, restarts, last_exit, last_reason, ..Lifecycle::default() }
    }

    /// Applies `event` at `now` under `policy`; on an illegal transition the
    /// state is left exactly as it was.
    pub fn step(&mut self, event: Event, now: Instant, policy: &RestartSpec) -> Result<Vec<Effect>, IllegalTransition> {
        use Status::*;
        let illegal = |status: Status, event: &Event| IllegalTransition { status, event: format!("{event:?}") };
        let effects = match (self.status, event) {
            (Stopped | Errored, Event::Start) => {
                self.unstable_exits = 0;
                self.begin_start(None)
            }
            (WaitingRestart, Event::Start) => {
                let reason = self.pending_reason.take();
                let mut fx = vec![Effect::CancelRestartTimer];
                fx.extend(self.begin_start(reason));
                fx
            }
            (Starting | Online, Event::Start) => vec![],
            (Stopping, Event::Start) => {
                self.after_stop = AfterStop::Start(None);
                vec![]
            }

            (Starting | Online, Event::Stop) => self.begin_stop(AfterStop::Stay),
            (Stopping, Event::Stop) => {
                self.after_stop = AfterStop::Stay;
                vec![]
            }
            (WaitingRestart, Event::Stop) => {
                self.status = Stopped;
                self.restart_at = None;
                self.pending_reason = None;
                vec![Effect::CancelRestartTimer]
            }
            (Stopped | Errored, Event::Stop) => {
                self.status = Stopped;
                vec![]
            }

            (Starting | Online, Event::Restart(reason)) => self.begin_stop(AfterStop::Start(Some(reason))),
            (Stopping, Event::Restart(reason)) => {
                self.after_stop = AfterStop::Start(Some(reason));
                vec![]
            }
            (Stopped | Errored, Event::Restart(reason)) => {
                self.unstable_exits = 0;
                self.restarts += 1;
                self.begin_start(Some(reason))
            }
            (WaitingRestart, Event::Restart(reason)) => {
                self.restarts += 1;
                let mut fx = vec![Effect::CancelRestartTimer];
                fx.extend(self.begin_start(Some(reason)));
                fx
            }

            (Starting, Event::Spawned) => {
                self.status = Online;
                self.online_since = Some(now);
                if let Some(reason) = self.pending_reason.take() {
                    self.last_reason = Some(reason);
                }
                vec![]
            }
            // The program runs but is not ready yet (a `ready` check): its
            // exit or a missed deadline is a failed start.
            (Starting, Event::Exited(status)) => {
                self.last_exit = Some(status);
                self.online_since = Some(now);
                let mut fx = vec![Effect::CleanUpGroup];
                fx.extend(self.after_exit(RestartReason::Exited { status }, Some(status), now, policy));
                fx
            }
            (Starting, Event::ReadyTimeout { timeout_ms }) => {
                let reason = RestartReason::NotReady { timeout_ms };
                self.last_reason = Some(reason.clone());
                self.unstable_exits += 1;
                if self.unstable_exits >= policy.max_restarts {
                    self.begin_stop(AfterStop::GiveUp)
                } else {
                    self.begin_stop(AfterStop::Start(Some(reason)))
                }
            }
            (Starting, Event::SpawnFailed(error)) => {
                self.online_since = Some(now);
                self.after_exit(RestartReason::SpawnFailed { error }, None, now, policy)
            }
            (Online, Event::Exited(status)) => {
                self.last_exit = Some(status);
                let mut fx = vec![Effect::CleanUpGroup];
                fx.extend(self.after_exit(RestartReason::Exited { status }, Some(status), now, policy));
                fx
            }
            (Stopping, Event::Exited(status)) => {
                self.last_exit = Some(status);
                self.online_since = None;
                vec![]
            }
            (Stopping, Event::KillTimeout) => vec![Effect::KillGroup],
            (Stopping, Event::GroupGone) => {
                self.online_since = None;
                match std::mem::replace(&mut self.after_stop, AfterStop::Stay) {
                    AfterStop::Stay => {
                        self.status = Stopped;
                        vec![]
                    }
                    AfterStop::GiveUp => {
                        self.status = Errored;
                        vec![]
                    }
                    AfterStop::Start(reason) => {
                        if reason.is_some() {
                            self.restarts += 1;
                        }
                        self.begin_start(reason)
                    }
                }
            }
            (WaitingRestart, Event::DelayElapsed) => {
                self.restart_at = None;
                let reason = self.pending_reason.take();
                self.begin_start(reason)
            }
            (status, event) => return Err(illegal(status, &event)),
        };
        Ok(effects)
    }

    fn begin_start(&mut self, reason: Option<RestartReason>) -> Vec<Effect> {
        self.status = Status::Starting;
        self.restart_at = None;
        self.pending_reason = reason;
        vec![Effect::Spawn]
    }

    fn begin_stop(&mut self, after: AfterStop) -> Vec<Effect> {
        self.status = Status::Stopping;
        self.after_stop = after;
        vec![Effect::SignalStop, Effect::AwaitGroupGone]
    }

    /// The leader is gone (or never ran): decide between stopped, errored, an
    /// immediate restart and a delayed one.
    fn after_exit(
        &mut self,
        reason: RestartReason,
        status: Option<ExitStatus>,
        now: Instant,
        policy: &RestartSpec,
    ) -> Vec<Effect> {
        let uptime = self.online_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.online_since = None;
        let clean_exit = matches!(status, Some(ExitStatus::Code(0)));
        let wants_restart = match policy.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !clean_exit,
            RestartPolicy::Never => false,
        };
        if !wants_restart {
            self.status = Status::Stopped;
            self.last_reason = Some(reason);
            return vec![];
        }
        if uptime < policy.min_uptime {
            self.unstable_exits += 1;
        } else {
            self.unstable_exits = 0;
        }
        if self.unstable_exits >= policy.max_restarts {
            self.status = Status::Errored;
            self.last_reason = Some(reason);
            return vec![];
        }
        let delay = backoff::next_delay(policy, self.last_delay, uptime);
        self.last_delay = Some(delay);
        self.restarts += 1;
        if delay.is_zero() {
            return self.begin_start(Some(reason));
        }
        self.status = Status::WaitingRestart;
        self.restart_at = Some(now + delay);
        self.pending_reason = Some(reason);
        vec![Effect::ArmRestartTimer(delay)]
    }

    /// `procd reset`: zero the counters, keep the state.
    pub fn reset_counters(&mut self) {
        self.restarts = 0;
        self.unstable_exits = 0;
        self.last_delay = None;
    }
}

#[cfg(test)]
mod tests;
