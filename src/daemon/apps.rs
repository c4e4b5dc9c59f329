//! The daemon's running apps and how a reconcile plan is carried out on
//! them: which instance actors exist, with which spec, and what each
//! [`Action`] does to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::OwnedFd;

use crate::listen::{ListenSet, SocketOwner};
use crate::logs::LogHub;
use crate::process::{self, CgroupRoot};
use crate::reconcile::{Action, DesiredApp, ObservedApp};
use crate::spec::{AppSpec, InstanceSpec, StopSpec};
use crate::supervisor::task::Control;
use crate::supervisor::{AdoptedRun, InstanceContext, InstanceHandle, InstanceRecord, Inventory, KeeperClient};

/// One app as the daemon runs it.
pub struct AppRuntime {
    /// The spec its instances run (the desired one, once a plan is applied).
    pub spec: AppSpec,
    pub instances: BTreeMap<u32, InstanceHandle>,
}

/// All apps, plus what instances need to start.
pub struct Apps {
    pub apps: BTreeMap<String, AppRuntime>,
    /// Instances being stopped after their app or index went away; kept
    /// until their task ends so shutdown can wait for them.
    pub draining: Vec<InstanceHandle>,
    pub logs: LogHub,
    /// Spawns every instance and reports their exits.
    pub keeper: KeeperClient,
    /// Runs a previous daemon started, waiting for the declared instance
    /// they belong to (claimed by the first plan, the rest stopped).
    pub adoptable: HashMap<(String, u32), AdoptedRun>,
    /// Adopted runs that lost to a newer run of the same instance.
    pub surplus: Vec<AdoptedRun>,
    /// Counters and `errored` statuses a previous daemon left.
    pub records: HashMap<(String, u32), InstanceRecord>,
    /// Each app's listening sockets, bound before its first instance and
    /// kept (also by the keeper) for as long as its `listen` entries are.
    pub sockets: HashMap<String, Arc<ListenSet>>,
    /// Sockets a previous daemon bound, by app, waiting to be claimed.
    pub held_sockets: HashMap<String, Vec<(String, OwnedFd)>>,
    /// Why an app's sockets could not be bound (port in use...): the app
    /// does not start, and `status` shows this until a rescan succeeds.
    pub listen_errors: BTreeMap<String, String>,
    /// Rolling reloads a plan asked for (spec changes of apps that
    /// listen): (app, indices), started by the daemon after `apply`.
    pub rollouts: Vec<(String, Vec<u32>)>,
    /// The notify socket (`ready "notify"` apps get it as NOTIFY_SOCKET).
    pub notify_socket: Option<std::path::PathBuf>,
    /// The daemon's own environment, the base of every instance's.
    pub base_env: Vec<(String, String)>,
    /// The daemon's cgroup subtree, when the host has a writable cgroup v2.
    pub cgroups: Option<Arc<CgroupRoot>>,
    pub cpus: u32,
}

impl Apps {
    /// The plan that would make the running apps match `desired`.
    pub fn plan(&self, desired: &[AppSpec]) -> Vec<Action> {
        let want: Vec<DesiredApp<'_>> = desired
            .iter()
            .map(|s| DesiredApp {
                name: &s.name,
                hash: &s.hash,
                template: &s.template,
                count: s.instances.resolve(self.cpus),
            })
            .collect();
        let have: Vec<ObservedApp<'_>> = self
            .apps
            .values()
            .map(|a| ObservedApp {
                name: &a.spec.name,
                hash: &a.spec.hash,
                template: &a.spec.template,
                indices: a.instances.keys().copied().collect(),
            })
            .collect();
        crate::reconcile::plan(&want, &have)
    }

    /// Carries out `actions`. Apps in `stopped` get their new spec and
    /// instances but are not started. Returns the (app, index) pairs that
    /// were started or restarted, for `--wait`.
    pub fn apply(
        &mut self,
        actions: &[Action],
        desired: &[AppSpec],
        stopped: &std::collections::BTreeSet<String>,
    ) -> Vec<(String, u32)> {
        let by_name: BTreeMap<&str, &AppSpec> = desired.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut started = Vec::new();
        for action in actions {
            let name = action.app();
            let runs = !stopped.contains(name);
            match action {
                Action::Stop { .. } => {
                    if let Some(app) = self.apps.remove(name) {
                        for (_, handle) in app.instances {
                            handle.send(Control::Remove);
                            self.draining.push(handle);
                        }
                    }
                }
                Action::ScaleDown { indices, .. } => {
                    if let Some(app) = self.apps.get_mut(name) {
                        for i in indices {
                            if let Some(handle) = app.instances.remove(i) {
                                handle.send(Control::Remove);
                                self.draining.push(handle);
                            }
                        }
                    }
                }
                Action::Start { indices, .. } | Action::ScaleUp { indices, .. } => {
                    let Some(spec) = by_name.get(name) else { continue };
                    let sockets = match self.sockets_for(spec) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(app = name, "{e}");
                            self.listen_errors.insert(name.to_string(), e);
                            // Runs a previous daemon started keep the sockets
                            // they have; only what is new cannot start.
                            match self.held_sockets.remove(name) {
                                Some(held) => {
                                    let set = Arc::new(ListenSet::from_held(held));
                                    self.sockets.insert(name.to_string(), set.clone());
                                    Some(set)
                                }
                                None => continue,
                            }
                        }
                    };
                    let app = self
                        .apps
                        .entry(name.to_string())
                        .or_insert_with(|| AppRuntime { spec: (*spec).clone(), instances: BTreeMap::new() });
                    app.spec = (*spec).clone();
                    let launch = AppLaunch::new(
                        &self.base_env,
                        self.cgroups.clone(),
                        spec,
                        sockets,
                        self.notify_socket.as_deref(),
                    );
                    for &i in indices {
                        let ctx = launch.instance(i);
                        let key = (name.to_string(), i);
                        let record = self.records.remove(&key);
                        let handle = match self.adoptable.remove(&key) {
                            Some(run) => {
                                let changed = run.tag.hash != spec.hash;
                                let handle =
                                    InstanceHandle::adopt(ctx, self.logs.clone(), self.keeper.clone(), run, record);
                                if !runs {
                                    // Stopped by an operator while no daemon ran.
                                    handle.send(Control::Stop);
                                } else if changed && launch.sockets.is_some() {
                                    // The spec changed while no daemon ran:
                                    // an app that listens rolls over.
                                    self.rollouts.push((name.to_string(), vec![i]));
                                    started.push(key);
                                } else if changed {
                                    let ctx = Box::new(launch.instance(i));
                                    handle.send(Control::Replace { ctx, restart: true });
                                    started.push(key);
                                }
                                handle
                            }
                            None => {
                                let errored =
                                    record.as_ref().is_some_and(|r| r.status == crate::supervisor::Status::Errored);
                                let handle = InstanceHandle::spawn(ctx, self.logs.clone(), self.keeper.clone(), record);
                                if runs && !errored {
                                    handle.send(Control::Start);
                                    started.push(key);
                                }
                                handle
                            }
                        };
                        app.instances.insert(i, handle);
                    }
                }
                Action::Restart { indices, .. } => {
                    let Some(spec) = by_name.get(name) else { continue };
                    let sockets = match self.sockets_for(spec) {
                        Ok(s) => s,
                        Err(e) => {
                            // The old instances keep their sockets and run on.
                            tracing::error!(app = name, "{e}");
                            self.listen_errors.insert(name.to_string(), e);
                            continue;
                        }
                    };
                    let Some(app) = self.apps.get_mut(name) else { continue };
                    app.spec = (*spec).clone();
                    if runs && sockets.is_some() {
                        // An app that listens is replaced instance by instance.
                        self.rollouts.push((name.to_string(), indices.clone()));
                        started.extend(indices.iter().map(|i| (name.to_string(), *i)));
                        continue;
                    }
                    let launch = AppLaunch::new(
                        &self.base_env,
                        self.cgroups.clone(),
                        spec,
                        sockets,
                        self.notify_socket.as_deref(),
                    );
                    for i in indices {
                        if let Some(handle) = app.instances.get(i) {
                            let ctx = Box::new(launch.instance(*i));
                            handle.send(Control::Replace { ctx, restart: runs });
                            if runs {
                                started.push((name.to_string(), *i));
                            }
                        }
                    }
                }
            }
        }
        // What changed outside the hash (source file, policies such as
        // max-memory and watch) applies without touching any instance; new
        // `listen` addresses are bound and the instances rolled over to them,
        // a new `ready` check applies from each instance's next start.
        for (name, spec) in by_name {
            let Some(app) = self.apps.get(name) else { continue };
            if app.spec.hash != spec.hash || app.spec == *spec {
                continue;
            }
            let (listen_changed, ready_changed) = (app.spec.listen != spec.listen, app.spec.ready != spec.ready);
            let indices: Vec<u32> = app.instances.keys().copied().collect();
            let sockets = match self.sockets_for(spec) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(app = name, "{e}");
                    self.listen_errors.insert(name.to_string(), e);
                    continue;
                }
            };
            let launch =
                AppLaunch::new(&self.base_env, self.cgroups.clone(), spec, sockets, self.notify_socket.as_deref());
            let app = self.apps.get_mut(name).expect("checked above");
            app.spec = spec.clone();
            if listen_changed || ready_changed {
                for (i, handle) in &app.instances {
                    handle.send(Control::Replace { ctx: Box::new(launch.instance(*i)), restart: false });
                }
            }
            if listen_changed && !stopped.contains(name) {
                self.rollouts.push((name.to_string(), indices));
            }
        }
        self.draining.retain(|h| !h.join.is_finished());
        started
    }

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

    /// The app's listening sockets, bound now if needed: the ones it has
    /// (or a previous daemon had) are kept, new addresses bound, removed ones
    /// closed. The keeper holds a copy for the next daemon.
    fn sockets_for(&mut self, spec: &AppSpec) -> Result<Option<Arc<ListenSet>>, String> {
        let key = format!("{LISTEN_KEY}{}", spec.name);
        if spec.listen.is_empty() {
            if self.sockets.remove(&spec.name).is_some() {
                self.keeper.release(key.clone());
                self.keeper.store(key, None::<&Vec<String>>);
            }
            return Ok(None);
        }
        if let Some(set) = self.sockets.get(&spec.name)
            && set.matches(&spec.listen)
        {
            return Ok(Some(set.clone()));
        }
        let held = self.held_sockets.remove(&spec.name);
        let from_held = held.is_some();
        let base = match (held, self.sockets.get(&spec.name)) {
            (Some(held), _) => held,
            (None, Some(current)) => current.duplicate().map_err(|e| format!("cannot keep the sockets: {e}"))?,
            (None, None) => Vec::new(),
        };
        let mut set = ListenSet::from_held(base);
        if let Err(e) = set.update(&spec.listen, socket_owner(spec)) {
            // The set is unchanged: adopted runs may still use what was held.
            if from_held {
                self.held_sockets.insert(spec.name.clone(), set.into_held());
            }
            return Err(format!("app `{}`: {e}", spec.name));
        }
        self.listen_errors.remove(&spec.name);
        let keys: Vec<String> = set.sockets().iter().map(|s| s.key.clone()).collect();
        self.keeper.hold(key.clone(), &set.fds());
        self.keeper.store(key, Some(&keys));
        let set = Arc::new(set);
        self.sockets.insert(spec.name.clone(), set.clone());
        Ok(Some(set))
    }

    /// Closes the sockets of apps no longer declared.
    pub fn drop_sockets(&mut self, declared: &[AppSpec]) {
        let gone: Vec<String> =
            self.sockets.keys().filter(|n| !declared.iter().any(|s| &s.name == *n)).cloned().collect();
        for name in gone {
            self.sockets.remove(&name);
            let key = format!("{LISTEN_KEY}{name}");
            self.keeper.release(key.clone());
            self.keeper.store(key, None::<&Vec<String>>);
        }
        // Sockets a previous daemon held for apps not declared any more:
        // closed in the keeper too, or the port stays bound for nobody.
        for name in std::mem::take(&mut self.held_sockets).into_keys() {
            let key = format!("{LISTEN_KEY}{name}");
            self.keeper.release(key.clone());
            self.keeper.store(key, None::<&Vec<String>>);
        }
        self.listen_errors.retain(|n, _| declared.iter().any(|s| &s.name == n));
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

    /// Sends `msg()` to every instance of the named apps.
    pub fn send_all(&self, names: &[String], msg: impl Fn() -> Control) {
        for name in names {
            if let Some(app) = self.apps.get(name) {
                for handle in app.instances.values() {
                    handle.send(msg());
                }
            }
        }
    }

    /// Every instance's handle, for shutdown.
    pub fn all_handles(&mut self) -> Vec<InstanceHandle> {
        let mut all: Vec<InstanceHandle> = std::mem::take(&mut self.draining);
        for (_, app) in std::mem::take(&mut self.apps) {
            all.extend(app.instances.into_values());
        }
        all
    }
}

/// Keeper key prefix of an app's listening sockets (fds) and their
/// addresses (record).
const LISTEN_KEY: &str = "listen/";

/// Whether the program is Node (by the name of `argv[0]`).
fn runs_node(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "node" || n == "nodejs" || n.starts_with("node-") || n.starts_with("node2"))
}

/// Who owns an app's Unix sockets: its user, when it has one.
fn socket_owner(spec: &AppSpec) -> Option<SocketOwner> {
    let t = &spec.template;
    let creds = process::resolve_credentials(t.user.as_deref(), t.group.as_deref(), &t.groups).ok()??;
    Some(SocketOwner { uid: creds.uid, gid: creds.gid })
}

/// What every instance of one app starts with, worked out once per app
/// (the user lookup reads the passwd and group databases) and shared by its
/// instances. The same type serves `procd env`, so what it prints is what
/// runs.
pub struct AppLaunch {
    app: String,
    spec: Arc<crate::spec::InstanceSpec>,
    hash: crate::spec::SpecHash,
    /// The daemon's environment with the spec's on top.
    env: BTreeMap<String, String>,
    credentials: Option<process::Credentials>,
    credential_error: Option<String>,
    cgroups: Option<Arc<CgroupRoot>>,
    sockets: Option<Arc<ListenSet>>,
    ready: crate::spec::ReadySpec,
    node_ipc: bool,
}

impl AppLaunch {
    pub fn new(
        base_env: &[(String, String)],
        cgroups: Option<Arc<CgroupRoot>>,
        spec: &AppSpec,
        sockets: Option<Arc<ListenSet>>,
        notify_socket: Option<&std::path::Path>,
    ) -> AppLaunch {
        let (credentials, credential_error) = match process::resolve_credentials(
            spec.template.user.as_deref(),
            spec.template.group.as_deref(),
            &spec.template.groups,
        ) {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut env: BTreeMap<String, String> = base_env.iter().cloned().collect();
        env.extend(spec.template.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert("PROCD_APP".into(), spec.name.clone());
        if let Some(set) = &sockets {
            env.extend(set.env());
        }
        if let (crate::spec::ReadyCheck::Notify { .. }, Some(path)) = (&spec.ready.check, notify_socket) {
            env.insert("NOTIFY_SOCKET".into(), path.display().to_string());
        }
        // PM2's `wait_ready`: a Node app calls process.send('ready') on the
        // IPC channel Node opens from NODE_CHANNEL_FD, the fd after the sockets.
        let node_ipc =
            matches!(spec.ready.check, crate::spec::ReadyCheck::Notify { .. }) && runs_node(&spec.template.argv);
        if node_ipc {
            let fd = 3 + sockets.as_ref().map_or(0, |s| s.len()) as i32;
            env.extend(crate::ready::node_channel_env(fd));
        }
        AppLaunch {
            app: spec.name.clone(),
            spec: Arc::new(spec.template.clone()),
            hash: spec.hash.clone(),
            env,
            credentials,
            credential_error,
            cgroups,
            sockets,
            ready: spec.ready.clone(),
            node_ipc,
        }
    }

    /// The context of instance `index`: the app's, plus its index in
    /// `PROCD_INSTANCE` and `NODE_APP_INSTANCE`.
    pub fn instance(&self, index: u32) -> InstanceContext {
        let mut env = self.env.clone();
        env.insert("PROCD_INSTANCE".into(), index.to_string());
        env.insert("NODE_APP_INSTANCE".into(), index.to_string());
        InstanceContext {
            app: self.app.clone(),
            index,
            spec: self.spec.clone(),
            hash: self.hash.clone(),
            env: Arc::new(env.into_iter().collect()),
            credentials: self.credentials.clone(),
            credential_error: self.credential_error.clone(),
            cgroups: self.cgroups.clone(),
            sockets: self.sockets.clone(),
            ready: self.ready.clone(),
            node_ipc: self.node_ipc,
        }
    }
}
