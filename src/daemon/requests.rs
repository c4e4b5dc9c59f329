//! One handler per control request. Handlers run on the daemon loop and
//! must not block: anything that waits for processes is returned as a
//! [`Reply::Later`] future.

use std::time::{Duration, Instant};

use regex::Regex;

use super::Daemon;
use super::report::{Goal, Watched, wait_for};
use crate::control::protocol::{Request, Response};
use crate::control::server::Reply;
use crate::spec::decode_file;
use crate::supervisor::RestartReason;
use crate::supervisor::task::Control;

/// How long `start`/`stop`/`restart` wait for the instances before
/// answering anyway.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

fn error(message: impl Into<String>) -> Reply {
    Reply::Now(Response::Error { message: message.into() })
}

impl Daemon {
    pub(super) fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Ping => Reply::Now(Response::Pong {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_ms: self.started_ms,
            }),
            Request::Status { app, detail } => {
                if let Some(name) = &app
                    && !self.apps.apps.contains_key(name)
                {
                    return error(format!("no app named `{name}`"));
                }
                Reply::Now(Response::Status(self.report(app.as_deref(), detail)))
            }
            Request::Env { app, index } => self.env(&app, index),
            Request::Start { targets } => self.operate(&targets, Op::Start),
            Request::Stop { targets } => self.operate(&targets, Op::Stop),
            Request::Restart { targets } => self.operate(&targets, Op::Restart),
            Request::Reset { targets } => match self.resolve_targets(&targets) {
                Ok(names) => {
                    self.apps.send_all(&names, || Control::ResetCounters);
                    Reply::Now(Response::Done { message: format!("reset {}", names.join(", ")) })
                }
                Err(e) => error(e),
            },
            Request::Reload { targets } => self.reload(&targets),
            Request::Reconcile { dry_run, wait, timeout_ms } => self.reconcile(dry_run, wait, timeout_ms),
            Request::Create { name, kdl } => self.create(&name, &kdl),
            Request::Delete { app } => self.delete(&app),
            Request::ReloadLogs => {
                self.reopen_logs();
                Reply::Now(Response::Done { message: "log files reopened".into() })
            }
            Request::Update => {
                self.exit = Some(super::Exit::Update);
                Reply::Now(Response::Done { message: "updating: the daemon and its keeper re-execute".into() })
            }
            Request::Kill => {
                self.exit = Some(super::Exit::StopApps);
                Reply::Now(Response::Done { message: "stopping every app, the keeper and the daemon".into() })
            }
            Request::Flush { app } => match self.apps.logs.flush(app.as_deref()) {
                Ok(files) => Reply::Now(Response::Done { message: format!("flushed {} log file(s)", files.len()) }),
                Err(e) => error(format!("flush failed: {e}")),
            },
        }
    }

    /// Names matching `targets`: app names, `all`, or `/regex/`.
    fn resolve_targets(&self, targets: &[String]) -> Result<Vec<String>, String> {
        if targets.is_empty() {
            return Err("no target given: name an app, `all`, or `/regex/`".into());
        }
        let names: Vec<&String> = self.apps.apps.keys().collect();
        let mut out = Vec::new();
        for t in targets {
            if t == "all" {
                out.extend(names.iter().map(|n| n.to_string()));
            } else if let Some(re) = t.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                let re = Regex::new(re).map_err(|e| format!("invalid regex {t}: {e}"))?;
                let hits: Vec<String> = names.iter().filter(|n| re.is_match(n)).map(|n| n.to_string()).collect();
                if hits.is_empty() {
                    return Err(format!("no app matches {t}"));
                }
                out.extend(hits);
            } else if self.apps.apps.contains_key(t) {
                out.push(t.clone());
            } else {
                return Err(format!("no app named `{t}`"));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn watched(&self, names: &[String]) -> Vec<Watched> {
        names
            .iter()
            .filter_map(|n| self.apps.apps.get(n).map(|a| (n, a)))
            .flat_map(|(n, a)| a.instances.iter().map(move |(i, h)| (format!("{n}:{i}"), h.view.clone())))
            .collect()
    }

    fn operate(&mut self, targets: &[String], op: Op) -> Reply {
        let names = match self.resolve_targets(targets) {
            Ok(n) => n,
            Err(e) => return error(e),
        };
        let since = Instant::now();
        let mut changed = false;
        for name in &names {
            changed |= match op {
                Op::Stop => self.operator.stopped.insert(name.clone()),
                Op::Start | Op::Restart => self.operator.stopped.remove(name),
            };
        }
        if changed && let Err(e) = self.save_operator_state() {
            // The operation still happens; only its persistence failed.
            tracing::error!("{e}");
        }
        let (msg, goal): (fn() -> Control, Goal) = match op {
            Op::Start => (|| Control::Start, Goal::Online { since, settle: Duration::ZERO, fresh: false }),
            Op::Stop => (|| Control::Stop, Goal::Stopped),
            Op::Restart => (
                || Control::Restart(RestartReason::Operator),
                Goal::Online { since, settle: Duration::ZERO, fresh: true },
            ),
        };
        self.apps.send_all(&names, msg);
        let views = self.watched(&names);
        let verb = op.verb();
        Reply::Later(Box::pin(async move {
            let failed = wait_for(views, goal, OPERATION_TIMEOUT).await;
            if failed.is_empty() {
                Response::Done { message: format!("{verb} {}", names.join(", ")) }
            } else {
                Response::Error { message: format!("{verb} did not complete: {}", failed.join("; ")) }
            }
        }))
    }

    /// `procd reload`: a rolling replacement of each app that listens, a
    /// restart of the others; replies once every rollout ended.
    fn reload(&mut self, targets: &[String]) -> Reply {
        let names = match self.resolve_targets(targets) {
            Ok(n) => n,
            Err(e) => return error(e),
        };
        let (rolling, plain): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| self.apps.sockets.contains_key(n));
        let mut waits = Vec::new();
        for name in &rolling {
            if self.operator.stopped.contains(name) {
                return error(format!("`{name}` is stopped: start it instead"));
            }
            let indices: Vec<u32> =
                self.apps.apps.get(name).map(|a| a.instances.keys().copied().collect()).unwrap_or_default();
            match self.start_rollout(name, indices) {
                Ok(rx) => waits.push((name.clone(), rx)),
                Err(e) => return error(e),
            }
        }
        let restart = if plain.is_empty() { None } else { Some(self.operate(&plain, Op::Restart)) };
        Reply::Later(Box::pin(async move {
            let mut failures = Vec::new();
            for (name, rx) in waits {
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                    Err(_) => failures.push(format!("{name}: the daemon stopped")),
                }
            }
            if let Some(Reply::Later(restarted)) = restart
                && let Response::Error { message } = restarted.await
            {
                failures.push(message);
            }
            if failures.is_empty() {
                Response::Done { message: "reloaded".into() }
            } else {
                Response::Error { message: failures.join("; ") }
            }
        }))
    }

    fn env(&self, app: &str, index: u32) -> Reply {
        let Some(spec) = self.desired.iter().find(|s| s.name == app) else {
            return error(format!("no app named `{app}`"));
        };
        let count = spec.instances.resolve(self.apps.cpus);
        if index >= count {
            return error(format!("app `{app}` has {count} instance(s); index {index} does not exist"));
        }
        let sockets = self.apps.sockets.get(&spec.name).cloned();
        let notify = self.apps.notify_socket.as_deref();
        let ctx = super::AppLaunch::new(&self.apps.base_env, None, spec, sockets, notify).instance(index);
        Reply::Now(Response::Env { vars: ctx.env.as_ref().clone() })
    }

    fn reconcile(&mut self, dry_run: bool, wait: bool, timeout_ms: u64) -> Reply {
        if dry_run {
            let loaded = self.loader.clone().load(&self.dirs);
            let actions = self.apps.plan(&loaded.apps);
            return Reply::Now(Response::Plan { actions, errors: loaded.errors, applied: false, failed: vec![] });
        }
        let (actions, started) = self.rescan();
        let errors = self.errors.clone();
        if !wait {
            return Reply::Now(Response::Plan { actions, errors, applied: true, failed: vec![] });
        }
        let views: Vec<Watched> = started
            .iter()
            .filter_map(|(app, i)| {
                let h = self.apps.apps.get(app)?.instances.get(i)?;
                Some((format!("{app}:{i}"), h.view.clone()))
            })
            .collect();
        let settle = started
            .iter()
            .filter_map(|(app, _)| self.apps.apps.get(app))
            .map(|a| a.spec.template.restart.min_uptime)
            .max()
            .unwrap_or_default();
        let goal = Goal::Online { since: Instant::now(), settle, fresh: true };
        let timeout = Duration::from_millis(timeout_ms);
        Reply::Later(Box::pin(async move {
            let failed = wait_for(views, goal, timeout).await;
            Response::Plan { actions, errors, applied: true, failed }
        }))
    }

    fn create(&mut self, name: &str, kdl: &str) -> Reply {
        if let Some(existing) = self.desired.iter().find(|s| s.name == name) {
            return error(format!(
                "an app named `{name}` already exists (declared in {}); choose another --name",
                existing.source.file.display()
            ));
        }
        let path = self.opts.paths.cli_apps_dir().join(format!("{name}.kdl"));
        let opts = self.loader.options().clone();
        match decode_file(&path, kdl, &opts, true) {
            Ok(apps) if apps.len() == 1 && apps[0].name == name => {}
            Ok(_) => return error("the generated spec does not declare exactly this app"),
            Err(errors) => {
                let msgs: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                return error(msgs.join("\n"));
            }
        }
        if let Err(e) = crate::state::write_atomic(&path, kdl.as_bytes()) {
            return error(e.to_string());
        }
        self.rescan();
        let views = self.watched(&[name.to_string()]);
        let goal = Goal::Online { since: Instant::now(), settle: Duration::ZERO, fresh: false };
        let message = format!("created app `{name}` ({})", path.display());
        Reply::Later(Box::pin(async move {
            let failed = wait_for(views, goal, OPERATION_TIMEOUT).await;
            if failed.is_empty() {
                Response::Done { message }
            } else {
                Response::Error { message: format!("{message}, but it did not start: {}", failed.join("; ")) }
            }
        }))
    }

    fn delete(&mut self, name: &str) -> Reply {
        let Some(spec) = self.desired.iter().find(|s| s.name == name) else {
            return error(format!("no app named `{name}`"));
        };
        if !spec.source.cli_created {
            return error(format!(
                "app `{name}` is declared in {}:{}; remove it from that file to delete it",
                spec.source.file.display(),
                spec.source.line
            ));
        }
        let file = spec.source.file.clone();
        if let Err(e) = std::fs::remove_file(&file) {
            return error(format!("cannot remove {}: {e}", file.display()));
        }
        let views = self.watched(&[name.to_string()]);
        self.rescan();
        if self.operator.stopped.remove(name) {
            let _ = self.save_operator_state();
        }
        let message = format!("deleted app `{name}`");
        Reply::Later(Box::pin(async move {
            let _ = wait_for(views, Goal::Gone, OPERATION_TIMEOUT).await;
            Response::Done { message }
        }))
    }
}

#[derive(Clone, Copy)]
enum Op {
    Start,
    Stop,
    Restart,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Start => "started",
            Op::Stop => "stopped",
            Op::Restart => "restarted",
        }
    }
}
