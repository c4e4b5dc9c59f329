//! Taking over from a previous daemon: the keeper's inventory becomes
//! instances the first plan claims; what nobody claims is stopped, and
//! processes no keeper knows of (a lost keeper's) are swept by cgroup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::apps::Apps;
use super::sockets::LISTEN_KEY;
use crate::spec::{InstanceSpec, StopSpec};
use crate::supervisor::task::Control;
use crate::supervisor::{InstanceContext, InstanceHandle, InstanceRecord, Inventory};

impl Apps {
    /// Takes what the keeper handed over, for the first plan to claim.
    pub fn take_inventory(&mut self, inventory: Inventory) {
        let mut surplus = Vec::new();
        for run in inventory.runs {
            let key = (run.tag.app.clone(), run.tag.index);
            // Two runs of one instance: a rollout was cut short. The one it
            // promoted (a record written at the swap) is the instance, else
            // the one that was serving before it: a replacement that never
            // proved ready must not win. The other is stopped.
            let Some(other) = self.adoptable.remove(&key) else {
                self.adoptable.insert(key, run);
                continue;
            };
            let promoted: Option<i32> = inventory
                .other
                .get(&format!("promoted/{}/{}", key.0, key.1))
                .and_then(|v| serde_json::from_str::<Option<i32>>(v).ok().flatten());
            let run_first = match promoted {
                Some(pid) => run.pid == pid,
                None => {
                    (run.exit.is_none(), std::cmp::Reverse(run.tag.started_ms))
                        > (other.exit.is_none(), std::cmp::Reverse(other.tag.started_ms))
                }
            };
            let (keep, drop) = if run_first { (run, other) } else { (other, run) };
            self.adoptable.insert(key, keep);
            surplus.push(drop);
        }
        for key in inventory.other.keys().filter(|k| k.starts_with("promoted/")) {
            self.keeper.store(key.clone(), None::<&i32>);
        }
        self.surplus = surplus;
        self.records = inventory.records.into_iter().collect();
        for (key, fds) in inventory.held {
            let Some(app) = key.strip_prefix(LISTEN_KEY) else { continue };
            let keys: Vec<String> =
                inventory.other.get(&key).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
            if keys.len() == fds.len() {
                self.held_sockets.insert(app.to_owned(), keys.into_iter().zip(fds).collect());
            }
        }
    }

    /// Clears run cgroups no adopted run owns: processes of a keeper that
    /// was lost (its runs cannot be adopted) are stopped, so no instance
    /// runs twice, and empty leftovers are removed. Call before the first
    /// plan.
    pub fn sweep_stray_cgroups(&self) {
        let Some(root) = &self.cgroups else { return };
        let owned: std::collections::HashSet<&std::path::Path> =
            self.adoptable.values().chain(&self.surplus).filter_map(|r| r.tag.cgroup.as_deref()).collect();
        for cg in root.instances() {
            if owned.contains(cg.path()) {
                continue;
            }
            if !cg.populated() {
                let _ = cg.remove();
                continue;
            }
            tracing::warn!(cgroup = %cg.path().display(), "processes no keeper knows of (a lost keeper's): stopping them");
            cg.signal_all(libc::SIGTERM);
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while cg.populated() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cg.kill_all();
                while cg.populated() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = cg.remove();
            });
        }
    }

    /// Stops the adopted runs no declared instance claimed (their app was
    /// removed or scaled down while no daemon ran), draining their output
    /// to the app's default log files until they are gone.
    pub fn stop_unclaimed(&mut self) {
        let unclaimed = std::mem::take(&mut self.adoptable).into_values().chain(std::mem::take(&mut self.surplus));
        for run in unclaimed {
            let (app, index) = (run.tag.app.clone(), run.tag.index);
            tracing::info!(app, index, pid = run.pid, "stopping an instance no longer declared");
            let stop =
                StopSpec { signal: run.tag.stop_signal, timeout: Duration::from_millis(run.tag.stop_timeout_ms) };
            let spec = InstanceSpec {
                argv: Vec::new(),
                cwd: None,
                env: BTreeMap::new(),
                user: None,
                group: None,
                groups: Vec::new(),
                stop,
                restart: Default::default(),
                logs: Default::default(),
            };
            let ctx = InstanceContext {
                app: app.clone(),
                index,
                spec: Arc::new(spec),
                hash: run.tag.hash.clone(),
                env: Arc::default(),
                credentials: None,
                credential_error: None,
                cgroups: self.cgroups.clone(),
                sockets: None,
                ready: Default::default(),
                node_ipc: false,
            };
            let handle = InstanceHandle::adopt(ctx, self.logs.clone(), self.keeper.clone(), run, None);
            handle.send(Control::Retire);
            self.draining.push(handle);
        }
        for (app, index) in std::mem::take(&mut self.records).into_keys() {
            self.keeper.store(InstanceRecord::key(&app, index), None::<&InstanceRecord>);
        }
    }
}
