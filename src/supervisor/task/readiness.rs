//! Readiness of a started run: its `ready` check (a probe, the notify
//! protocol, or Node's `process.send('ready')` on an IPC channel), and the
//! notify watchdog once it is online.

use std::time::Duration;

use super::{Control, InstanceTask};
use crate::spec::{ReadyCheck, ReadySpec};
use crate::supervisor::state::{Event, Status};

impl InstanceTask {
    /// Reads the run's Node IPC channel for `process.send('ready')` (and
    /// drains it, so the app never fills it); the keeper holds a copy of our
    /// end so a daemon restart does not close it under the app.
    pub(super) fn read_node_channel(&mut self, pid: i32, mut channel: crate::ready::NodeChannel) {
        // Per run: during a rollout two runs of one index have channels.
        let key = format!("node/{}/{}/{pid}", self.ctx.app, self.ctx.index);
        self.keeper.hold(key.clone(), &[channel.fd()]);
        self.node_hold = Some(key);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = channel.recv().await {
                if crate::ready::is_ready(&message) {
                    let _ = tx.send(Control::Ready { pid });
                }
            }
        });
    }

    pub(super) fn release_node_channel(&mut self) {
        if let Some(key) = self.node_hold.take() {
            self.keeper.release(key);
        }
    }

    /// Online at once without a `ready` check; otherwise arm the deadline
    /// and start the probe (notify waits for the app's own message).
    pub(super) fn await_ready(&mut self, pid: i32) -> Option<Event> {
        let timeout = self.ctx.ready.timeout;
        let probe: Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>> =
            match &self.ctx.ready.check {
                ReadyCheck::None => return self.became_ready(pid),
                ReadyCheck::Notify { .. } => None,
                ReadyCheck::Tcp { address } => {
                    let address = address.clone();
                    Some(Box::pin(async move { crate::ready::tcp(&address, timeout).await.is_ok() }))
                }
                ReadyCheck::Http { url } => {
                    let url = url.clone();
                    Some(Box::pin(async move { crate::ready::http(&url, timeout).await.is_ok() }))
                }
                ReadyCheck::Exec { argv } => {
                    let (argv, env) = (argv.clone(), self.ctx.env.clone());
                    let cwd = self.ctx.spec.cwd.clone().unwrap_or_else(|| "/".into());
                    Some(Box::pin(async move { crate::ready::exec(&argv, &env, &cwd, timeout).await.is_ok() }))
                }
            };
        self.ready_deadline = Some(tokio::time::Instant::now() + timeout);
        if let Some(probe) = probe {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                if probe.await {
                    let _ = tx.send(Control::Ready { pid });
                }
            });
        }
        None
    }

    /// The run `pid` is ready: online (once), and its watchdog armed.
    pub(super) fn became_ready(&mut self, pid: i32) -> Option<Event> {
        if self.pid != Some(pid) || self.lc.status != Status::Starting {
            return None;
        }
        self.ready_deadline = None;
        if watchdog_of(&self.ctx.ready).is_some() {
            self.arm_watchdog();
        }
        Some(Event::Spawned)
    }

    pub(super) fn arm_watchdog(&mut self) {
        if let Some(d) = watchdog_of(&self.ctx.ready) {
            self.watchdog_deadline = Some(tokio::time::Instant::now() + d);
        }
    }
}

/// The watchdog period of a `ready "notify" watchdog=` spec.
pub(super) fn watchdog_of(ready: &ReadySpec) -> Option<Duration> {
    match ready.check {
        ReadyCheck::Notify { watchdog } => watchdog,
        _ => None,
    }
}
