//! What `status`, `show` and the waiting replies read: snapshots of the
//! instance views, rendered into the protocol's report types.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::protocol::{AppStatus, InstanceStatus, StatusReport};
use crate::supervisor::{InstanceView, Status};

use super::Daemon;

impl Daemon {
    /// The status of every app (or one), and the config errors.
    pub(super) fn report(&self, only: Option<&str>, detail: bool) -> StatusReport {
        let now = Instant::now();
        let usage = self.sampler.lock().unwrap().usage_for_status(2 * self.opts.sample_every);
        let mut apps = Vec::new();
        for (name, app) in &self.apps.apps {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let instances: Vec<InstanceStatus> = app
                .instances
                .values()
                .map(|h| {
                    let v = h.snapshot();
                    let u = v.pid.and_then(|p| usage.get(&p));
                    let logs = self.apps.logs.stats(name, v.index);
                    InstanceStatus {
                        index: v.index,
                        pid: v.pid,
                        status: v.status.as_str().to_string(),
                        restarts: v.restarts,
                        uptime_ms: v.online_since.map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                        memory_bytes: u.map_or(0, |u| u.rss_bytes),
                        cpu_percent: u.map_or(0.0, |u| u.cpu_percent),
                        last_exit: v.last_exit.as_ref().and_then(|e| serde_json::to_value(e).ok()),
                        last_restart_reason: v.last_reason.as_ref().map(|r| r.to_string()),
                        restart_in_ms: v.restart_at.map(|t| t.saturating_duration_since(now).as_millis() as u64),
                        error: v.error.clone(),
                        log_lines_lost: logs.lines_lost,
                        log_error: logs.last_error,
                    }
                })
                .collect();
            let stopped = self.operator.stopped.contains(name);
            let detail = detail.then(|| {
                let paths: Vec<_> = app
                    .instances
                    .keys()
                    .map(|i| {
                        let p = self.apps.logs.paths(name, *i, &app.spec.template.logs);
                        serde_json::json!({ "out": p.out, "err": p.err, "combined": p.combined })
                    })
                    .collect();
                serde_json::json!({
                    "spec": app.spec.template,
                    "instances": app.spec.instances,
                    "log_files": paths,
                })
            });
            apps.push(AppStatus {
                name: name.clone(),
                source: app.spec.source.file.display().to_string(),
                spec_hash: app.spec.hash.to_string(),
                instances_desired: app.spec.instances.resolve(self.apps.cpus),
                state: app_state(stopped, &instances).to_string(),
                instances,
                rollout: self.rollout_errors.get(name).cloned(),
                detail,
            });
        }
        StatusReport { apps, errors: self.errors.clone() }
    }
}

fn app_state(operator_stopped: bool, instances: &[InstanceStatus]) -> &'static str {
    let any = |s: &str| instances.iter().any(|i| i.status == s);
    if operator_stopped {
        if any("stopping") { "stopping" } else { "stopped" }
    } else if any("errored") {
        "errored"
    } else if any("starting") || any("waiting-restart") {
        "starting"
    } else if any("stopping") {
        "stopping"
    } else if any("online") {
        "running"
    } else {
        "stopped"
    }
}

/// What a waiting reply waits for.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// Online, in a run that began at or after `since`, for at least
    /// `settle` (a run shorter than `min-uptime` did not really start).
    Online { since: Instant, settle: Duration, fresh: bool },
    /// Stopped with no process left.
    Stopped,
    /// The instance task has ended (removed).
    Gone,
}

/// A shared view to wait on, labelled `app:index`.
pub type Watched = (String, Arc<Mutex<InstanceView>>);

/// Polls `views` until each reaches `goal`, or fails, or `timeout` passes;
/// returns the labels of the instances that did not get there, with why.
pub async fn wait_for(views: Vec<Watched>, goal: Goal, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    // Control messages reach the instance tasks a moment after the request;
    // states seen before then are the old ones, not failures.
    let grace = Duration::from_millis(50);
    let mut pending = views;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let mut failed = Vec::new();
        pending.retain(|(label, view)| {
            let v = view.lock().unwrap().clone();
            match goal {
                Goal::Online { since, settle, fresh } => {
                    let run_ok = v.online_since.is_some_and(|t| !fresh || t >= since);
                    if v.status == Status::Online && run_ok {
                        return now.saturating_duration_since(v.online_since.unwrap_or(now)) < settle;
                    }
                    let gave_up = v.status == Status::Errored
                        || (matches!(v.status, Status::WaitingRestart | Status::Stopped)
                            && now.duration_since(start) > grace);
                    if gave_up || !v.alive {
                        let why = v
                            .error
                            .clone()
                            .or_else(|| v.last_exit.as_ref().map(|e| e.to_string()))
                            .unwrap_or_else(|| v.status.to_string());
                        failed.push(format!("{label}: {} ({why})", v.status));
                        return false;
                    }
                    true
                }
                Goal::Stopped => !(matches!(v.status, Status::Stopped | Status::Errored) && v.pid.is_none()),
                Goal::Gone => v.alive,
            }
        });
        if !failed.is_empty() || pending.is_empty() {
            return failed;
        }
        if now.duration_since(start) > timeout {
            return pending.into_iter().map(|(label, _)| format!("{label}: timed out")).collect();
        }
    }
}
