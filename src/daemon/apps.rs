//! The daemon's running apps and how a reconcile plan is carried out on
//! them: which instance actors exist, with which spec, and what each
//! [`Action`] does to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

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
    /// Counters and `errored` statuses a previous daemon left.
    pub records: HashMap<(String, u32), InstanceRecord>,
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
                    let app = self
                        .apps
                        .entry(name.to_string())
                        .or_insert_with(|| AppRuntime { spec: (*spec).clone(), instances: BTreeMap::new() });
                    app.spec = (*spec).clone();
                    let launch = AppLaunch::new(&self.base_env, self.cgroups.clone(), spec);
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
                                } else if changed {
                                    // The spec changed while no daemon ran.
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
                    let Some(app) = self.apps.get_mut(name) else { continue };
                    app.spec = (*spec).clone();
                    let launch = AppLaunch::new(&self.base_env, self.cgroups.clone(), spec);
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
        // max-memory and watch) applies without touching any instance.
        for (name, spec) in by_name {
            if let Some(app) = self.apps.get_mut(name)
                && app.spec.hash == spec.hash
            {
                app.spec = spec.clone();
            }
        }
        self.draining.retain(|h| !h.join.is_finished());
        started
    }

    /// Takes what the keeper handed over, for the first plan to claim.
    pub fn take_inventory(&mut self, inventory: Inventory) {
        for run in inventory.runs {
            self.adoptable.insert((run.tag.app.clone(), run.tag.index), run);
        }
        self.records = inventory.records.into_iter().collect();
    }

    /// Stops the adopted runs no declared instance claimed (their app was
    /// removed or scaled down while no daemon ran), draining their output
    /// to the app's default log files until they are gone.
    pub fn stop_unclaimed(&mut self) {
        for ((app, index), run) in std::mem::take(&mut self.adoptable) {
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
            };
            let handle = InstanceHandle::adopt(ctx, self.logs.clone(), self.keeper.clone(), run, None);
            handle.send(Control::Remove);
            self.draining.push(handle);
        }
        for (app, index) in std::mem::take(&mut self.records).into_keys() {
            self.keeper.store(InstanceRecord::key(&app, index), None);
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
}

impl AppLaunch {
    pub fn new(base_env: &[(String, String)], cgroups: Option<Arc<CgroupRoot>>, spec: &AppSpec) -> AppLaunch {
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
        AppLaunch {
            app: spec.name.clone(),
            spec: Arc::new(spec.template.clone()),
            hash: spec.hash.clone(),
            env,
            credentials,
            credential_error,
            cgroups,
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
        }
    }
}
