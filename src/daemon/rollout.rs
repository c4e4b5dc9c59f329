//! Rolling reload of an app that listens: for each instance in turn, start
//! a new one beside it, wait until it is ready, then retire the old one
//! gracefully (its stop signal, its kill timeout). The listening sockets are
//! procd's, so no connection is refused at any point. A new instance that is
//! not ready in time (or exits) stops the rollout: it is removed, the old
//! instances that remain keep serving, and `status` says why (Kubernetes'
//! behaviour; PM2 kills the old instance anyway).
//!
//! The rollout runs as a task beside the daemon loop; it asks the loop to
//! swap an instance into the app (the loop owns the apps) over a channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::apps::AppLaunch;
use crate::logs::LogHub;
use crate::supervisor::task::Control;
use crate::supervisor::{InstanceHandle, InstanceRecord, InstanceView, KeeperClient, RestartReason, Status};

/// Slack on top of the `ready` timeout for the spawn itself.
const SPAWN_SLACK: Duration = Duration::from_secs(2);

/// What a rollout asks of the daemon loop.
pub enum LoopMsg {
    /// Put `handle` in place of instance `index` of `app`; the reply is the
    /// old instance's view (being retired), or an error if the app or index
    /// is gone (then `handle` was removed instead).
    Swap {
        app: String,
        index: u32,
        handle: InstanceHandle,
        reply: oneshot::Sender<Result<Arc<std::sync::Mutex<InstanceView>>, String>>,
    },
    /// A new instance that failed: keep its handle until it has stopped.
    Discard(InstanceHandle),
    /// The rollout of `app` ended: `Err` is the reason it was aborted.
    Finished { app: String, result: Result<(), String> },
    /// Replace the instance whose leader is `pid` by a rolling reload (it
    /// passed `max-memory`).
    ReloadInstance { app: String, pid: i32 },
}

/// One rollout's inputs.
pub struct Rollout {
    pub app: String,
    pub indices: Vec<u32>,
    pub launch: Arc<AppLaunch>,
    /// The old instances' counters, carried over to their replacements.
    pub restarts: Vec<u32>,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    /// How many new instances start at once (`rollout max-surge`); the old
    /// ones are retired only once their replacements are ready, so the
    /// serving count never drops (`max-unavailable` has nothing to add).
    pub max_surge: usize,
    pub logs: LogHub,
    pub keeper: KeeperClient,
    pub to_loop: mpsc::UnboundedSender<LoopMsg>,
    /// Set when the daemon stops: the rollout gives its new instances
    /// back (as `Discard`) and ends.
    pub cancel: watch::Receiver<bool>,
}

const STOPPING: &str = "reload aborted: the daemon is stopping";

impl Rollout {
    /// Runs the rollout; the result is also reported to the loop.
    pub async fn run(self) -> Result<(), String> {
        let result = self.replace_all().await;
        let _ = self.to_loop.send(LoopMsg::Finished { app: self.app.clone(), result: result.clone() });
        result
    }

    async fn replace_all(&self) -> Result<(), String> {
        let restarts: Vec<(u32, u32)> =
            self.indices.iter().enumerate().map(|(n, &i)| (i, self.restarts.get(n).copied().unwrap_or(0))).collect();
        for batch in restarts.chunks(self.max_surge.max(1)) {
            let mut fresh = Vec::new();
            for &(index, restarts) in batch {
                let record = InstanceRecord {
                    status: Status::Stopped,
                    restarts: restarts + 1,
                    last_exit: None,
                    last_reason: Some(RestartReason::Reload),
                };
                let ctx = self.launch.instance(index);
                // Provisional until swapped in: it neither writes nor clears
                // the instance's keeper record, which the old one still owns.
                let handle = InstanceHandle::provisional(ctx, self.logs.clone(), self.keeper.clone(), record);
                handle.send(Control::Start);
                fresh.push((index, handle));
            }
            let deadline = Instant::now() + self.ready_timeout + SPAWN_SLACK;
            let mut failure = None;
            for (index, handle) in &fresh {
                if *self.cancel.borrow() {
                    failure = Some(STOPPING.to_owned());
                    break;
                }
                if let Err(why) = wait_ready(handle, deadline, &self.cancel).await {
                    failure.get_or_insert(format!(
                        "reload aborted: the new instance {index} {why}; the old instances keep serving"
                    ));
                }
            }
            if let Some(failure) = failure {
                for (_, handle) in fresh {
                    handle.send(Control::Remove);
                    let _ = self.to_loop.send(LoopMsg::Discard(handle));
                }
                return Err(failure);
            }
            let mut retiring = Vec::new();
            for (index, handle) in fresh {
                let (reply, answer) = oneshot::channel();
                let swap = LoopMsg::Swap { app: self.app.clone(), index, handle, reply };
                if self.to_loop.send(swap).is_err() {
                    return Err(STOPPING.into());
                }
                // At shutdown the loop (or its final drain) still answers.
                retiring.push(answer.await.map_err(|_| STOPPING.to_string())??);
            }
            // The old instances of this batch retire, within their kill timeout.
            let retire_by = Instant::now() + self.stop_timeout + SPAWN_SLACK;
            while retiring.iter().any(|old| old.lock().unwrap().alive)
                && Instant::now() < retire_by
                && !*self.cancel.borrow()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }
}

/// Waits until the new instance is online; a restart, an exit or the
/// deadline is a failure, described for `status`.
async fn wait_ready(handle: &InstanceHandle, deadline: Instant, cancel: &watch::Receiver<bool>) -> Result<(), String> {
    // The new handle reads "stopped" until its task has taken `Start`.
    let mut started = false;
    loop {
        let v = handle.snapshot();
        if *cancel.borrow() {
            return Err("was not ready when the daemon stopped".into());
        }
        started |= matches!(v.status, Status::Starting | Status::Online);
        if !started && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        // The replacement starts with no exit on record: any exit, or any
        // state but starting/online (a missed ready deadline is a stop), is
        // a failed start.
        if v.status == Status::Online && v.last_exit.is_none() {
            return Ok(());
        }
        let failed = v.last_exit.is_some()
            || matches!(v.status, Status::Errored | Status::Stopped | Status::WaitingRestart | Status::Stopping);
        if failed {
            let detail = match (v.last_exit, &v.error) {
                (_, Some(e)) => format!("could not start: {e}"),
                (Some(exit), _) => format!("exited ({exit}) before it was ready"),
                _ => match &v.last_reason {
                    Some(r @ RestartReason::NotReady { .. }) => format!("was {r}"),
                    _ => "was not ready".into(),
                },
            };
            return Err(detail);
        }
        if Instant::now() >= deadline {
            let reason = v.last_reason.map(|r| format!(" ({r})")).unwrap_or_default();
            return Err(format!("was not ready in time{reason}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl super::Daemon {
    /// Starts a rolling reload of `indices` of `app` with its current spec;
    /// the receiver gets the result.
    pub(super) fn start_rollout(
        &mut self,
        app: &str,
        indices: Vec<u32>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        if self.rolling.contains(app) {
            return Err(format!("a rolling reload of `{app}` is already in progress"));
        }
        let Some(runtime) = self.apps.apps.get(app) else { return Err(format!("no app named `{app}`")) };
        let spec = runtime.spec.clone();
        let sockets = self.apps.sockets.get(app).cloned();
        let restarts = indices.iter().map(|i| runtime.instances.get(i).map_or(0, |h| h.snapshot().restarts)).collect();
        let launch = self.apps.launch_for(&spec, sockets);
        let job = Rollout {
            cancel: self.cancel_rollouts.subscribe(),
            app: app.to_owned(),
            indices,
            launch: Arc::new(launch),
            restarts,
            ready_timeout: spec.ready.timeout,
            stop_timeout: spec.template.stop.timeout,
            max_surge: spec.rollout.max_surge as usize,
            logs: self.apps.logs.clone(),
            keeper: self.apps.keeper.clone(),
            to_loop: self.loop_tx.clone(),
        };
        tracing::info!(app, "rolling reload");
        self.rolling.insert(app.to_owned());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.rollout_tasks.retain(|t| !t.is_finished());
        self.rollout_tasks.push(tokio::spawn(async move {
            let _ = tx.send(job.run().await);
        }));
        Ok(rx)
    }

    /// Ends every rollout: each gives its new instances back, and swaps
    /// still queued are refused, their instances removed with the rest.
    pub(super) async fn end_rollouts(&mut self, loop_rx: &mut mpsc::UnboundedReceiver<LoopMsg>) {
        let _ = self.cancel_rollouts.send(true);
        for task in std::mem::take(&mut self.rollout_tasks) {
            tokio::pin!(task);
            loop {
                tokio::select! {
                    _ = &mut task => break,
                    Some(msg) = loop_rx.recv() => match msg {
                        LoopMsg::Swap { handle, reply, .. } => {
                            handle.send(Control::Remove);
                            self.apps.draining.push(handle);
                            let _ = reply.send(Err("reload aborted: the daemon is stopping".into()));
                        }
                        LoopMsg::Discard(handle) => self.apps.draining.push(handle),
                        _ => {}
                    },
                }
            }
        }
        while let Ok(msg) = loop_rx.try_recv() {
            if let LoopMsg::Discard(handle) = msg {
                self.apps.draining.push(handle);
            }
        }
    }

    /// What a rollout asks of the loop.
    pub(super) fn on_rollout(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Swap { app, index, handle, reply } => {
                let slot = self.apps.apps.get_mut(&app).and_then(|a| a.instances.get_mut(&index));
                match slot {
                    // An operator stopped the app meanwhile: keep it stopped.
                    Some(_) if self.operator.stopped.contains(&app) => {
                        handle.send(Control::Remove);
                        self.apps.draining.push(handle);
                        let _ = reply.send(Err(format!("reload stopped: `{app}` was stopped")));
                    }
                    Some(slot) => {
                        let pid = handle.snapshot().pid;
                        handle.send(Control::Promote);
                        let old = std::mem::replace(slot, handle);
                        let view = old.view.clone();
                        old.send(Control::Retire);
                        self.apps.draining.push(old);
                        // If the daemon dies before the old run is gone, the
                        // next one keeps this run, not the retiring one.
                        self.apps.keeper.store(format!("promoted/{app}/{index}"), Some(&pid));
                        let _ = reply.send(Ok(view));
                    }
                    None => {
                        handle.send(Control::Remove);
                        self.apps.draining.push(handle);
                        let _ = reply.send(Err(format!("reload stopped: instance {index} of `{app}` is gone")));
                    }
                }
            }
            LoopMsg::Discard(handle) => self.apps.draining.push(handle),
            LoopMsg::ReloadInstance { app, pid } => {
                let index = self
                    .apps
                    .apps
                    .get(&app)
                    .and_then(|a| a.instances.iter().find(|(_, h)| h.snapshot().pid == Some(pid)).map(|(i, _)| *i));
                if index.is_some() && self.rolling.contains(&app) {
                    // Another rollout runs: roll the app again after it.
                    self.queued_rollouts.insert(app);
                } else if let Some(index) = index
                    && let Err(e) = self.start_rollout(&app, vec![index])
                {
                    tracing::error!(app, "{e}");
                }
            }
            LoopMsg::Finished { app, result } => {
                self.rolling.remove(&app);
                if self.queued_rollouts.remove(&app) && !self.operator.stopped.contains(&app) {
                    let indices: Vec<u32> =
                        self.apps.apps.get(&app).map(|a| a.instances.keys().copied().collect()).unwrap_or_default();
                    if let Err(e) = self.start_rollout(&app, indices) {
                        tracing::error!(app, "{e}");
                    }
                }
                match result {
                    Ok(()) => {
                        tracing::info!(app, "rolling reload done");
                        self.rollout_errors.remove(&app);
                    }
                    Err(e) => {
                        tracing::error!(app, "{e}");
                        self.rollout_errors.insert(app, e);
                    }
                }
            }
        }
    }
}
