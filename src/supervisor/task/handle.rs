//! [`InstanceHandle`]: the daemon's side of an instance, and the ways an
//! instance's task comes to be (fresh, restored from a record, a rollout's
//! provisional replacement, adopted from the keeper).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Control, InstanceContext, InstanceTask, InstanceView, unix_ms_now};
use crate::logs::LogHub;
use crate::process::InstanceCgroup;
use crate::supervisor::keeper::{AdoptedRun, InstanceRecord, KeeperClient};
use crate::supervisor::state::{Lifecycle, Status};

/// The daemon's side of an instance.
pub struct InstanceHandle {
    tx: mpsc::UnboundedSender<Control>,
    pub view: Arc<Mutex<InstanceView>>,
    pub join: JoinHandle<()>,
}

impl InstanceHandle {
    /// Creates the instance's task, initially stopped (or as `record` left
    /// it: an instance a previous daemon gave up on stays `errored`).
    pub fn spawn(
        ctx: InstanceContext,
        logs: LogHub,
        keeper: KeeperClient,
        record: Option<InstanceRecord>,
    ) -> InstanceHandle {
        let lc = match record {
            Some(r) => Lifecycle::restored(r.status, r.restarts, r.last_exit, r.last_reason),
            None => Lifecycle::default(),
        };
        Self::with(ctx, logs, keeper, lc, |_| {})
    }

    /// [`spawn`](Self::spawn) of a rollout's replacement instance: it owns
    /// no keeper record until [`Control::Promote`] (the old instance at its
    /// index still does).
    pub fn provisional(
        ctx: InstanceContext,
        logs: LogHub,
        keeper: KeeperClient,
        record: InstanceRecord,
    ) -> InstanceHandle {
        let lc = Lifecycle::restored(record.status, record.restarts, record.last_exit, record.last_reason);
        Self::with(ctx, logs, keeper, lc, |task| task.retired = true)
    }

    /// Creates the task of an instance whose process a previous daemon
    /// started: online with that process, its pipes drained again, its exit
    /// (if it came while no daemon ran) handled at once.
    pub fn adopt(
        ctx: InstanceContext,
        logs: LogHub,
        keeper: KeeperClient,
        run: AdoptedRun,
        record: Option<InstanceRecord>,
    ) -> InstanceHandle {
        let since = instant_of_unix_ms(run.tag.started_ms);
        let (restarts, last_exit, last_reason) = match record {
            Some(r) => (r.restarts, r.last_exit, r.last_reason),
            None => (0, None, None),
        };
        let lc = Lifecycle::adopted(since, restarts, last_exit, last_reason);
        logs.attach(&ctx.app, ctx.index, &ctx.spec.logs, run.stdout, run.stderr);
        Self::with(ctx, logs, keeper, lc, |task| {
            task.pid = Some(run.pid);
            task.runs = run.tag.runs;
            task.run_cgroup = run.tag.cgroup.clone().map(InstanceCgroup::existing);
            let route = task.route();
            match run.exit {
                Some(status) => {
                    task.keeper.forget(run.pid);
                    let _ = task.tx.send(Control::Exited { pid: run.pid, status });
                }
                None => task.keeper.router().register(run.pid, route),
            }
        })
    }

    fn with(
        ctx: InstanceContext,
        logs: LogHub,
        keeper: KeeperClient,
        lc: Lifecycle,
        setup: impl FnOnce(&mut InstanceTask),
    ) -> InstanceHandle {
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
        let mut task = InstanceTask {
            ctx,
            logs,
            keeper,
            tx: tx.clone(),
            rx,
            view: view.clone(),
            lc,
            pid: None,
            run_cgroup: None,
            runs: 0,
            restart_deadline: None,
            kill_deadline: None,
            ready_deadline: None,
            watchdog_deadline: None,
            awaiting_group: false,
            removing: false,
            recorded: None,
            retired: false,
            node_hold: None,
        };
        setup(&mut task);
        task.publish();
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

/// The monotonic instant of a wall-clock time in the past (the start of an
/// adopted process), clamped to now.
fn instant_of_unix_ms(ms: u64) -> Instant {
    let ago = Duration::from_millis(unix_ms_now().saturating_sub(ms));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}
