//! Who owns which running pid: the single reaper hands every exit status to
//! the instance task that started the process, and the sampler finds every
//! instance leader (with its cgroup) here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::task::Control;
use crate::process::{ExitStatus, InstanceCgroup};

/// Who owns a running leader pid.
#[derive(Clone)]
pub struct Route {
    pub app: Arc<str>,
    pub tx: mpsc::UnboundedSender<Control>,
    /// The run's cgroup: its members are the instance's processes, even
    /// those that left the leader's tree.
    pub cgroup: Option<InstanceCgroup>,
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
    pub(super) fn register(&self, pid: i32, route: Route) {
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
