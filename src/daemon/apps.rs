//! The daemon's running apps and how a reconcile plan is carried out on
//! them: which instance actors exist, with which spec, and what each
//! [`Action`] does to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::os::fd::OwnedFd;

use crate::listen::ListenSet;
use crate::logs::LogHub;
use crate::process::{self, CgroupRoot};
use crate::reconcile::{Action, DesiredApp, ObservedApp};
use crate::spec::AppSpec;
use crate::supervisor::task::Control;
use crate::supervisor::{AdoptedRun, InstanceContext, InstanceHandle, InstanceRecord, KeeperClient};

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
                    let Ok(sockets) = self.sockets_for(spec) else { continue };
                    let launch = self.launch_for(spec, sockets);
                    let app = self
                        .apps
                        .entry(name.to_string())
                        .or_insert_with(|| AppRuntime { spec: (*spec).clone(), instances: BTreeMap::new() });
                    app.spec = (*spec).clone();
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
                    // On an error the old instances keep their sockets and run on.
                    let Ok(sockets) = self.sockets_for(spec) else { continue };
                    if runs && sockets.is_some() {
                        // An app that listens is replaced instance by instance.
                        if let Some(app) = self.apps.get_mut(name) {
                            app.spec = (*spec).clone();
                            self.rollouts.push((name.to_string(), indices.clone()));
                            started.extend(indices.iter().map(|i| (name.to_string(), *i)));
                        }
                        continue;
                    }
                    let launch = self.launch_for(spec, sockets);
                    let Some(app) = self.apps.get_mut(name) else { continue };
                    app.spec = (*spec).clone();
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
            let Ok(sockets) = self.sockets_for(spec) else { continue };
            let launch = self.launch_for(spec, sockets);
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

    /// What the instances of `spec` start with, with these sockets.
    pub fn launch_for(&self, spec: &AppSpec, sockets: Option<Arc<ListenSet>>) -> AppLaunch {
        AppLaunch::new(&self.base_env, self.cgroups.clone(), spec, sockets, self.notify_socket.as_deref())
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

/// Whether the program is Node (by the name of `argv[0]`).
fn runs_node(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "node" || n == "nodejs" || n.starts_with("node-") || n.starts_with("node2"))
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
