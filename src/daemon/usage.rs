//! Sampling instances' memory and CPU, for `status`, and enforcing
//! `max-memory`: an instance whose process tree's resident memory passes
//! its app's limit is restarted, with the figure as its reason.
//!
//! Only procd's own instance leaders and their trees (or cgroups) are read
//! from /proc, never the whole process table. And only when someone looks:
//! every instance is sampled each tick while `status` was asked for in the
//! last [`DEMAND_WINDOW`]; otherwise only the apps with a `max-memory` are,
//! so an idle daemon with no limits reads nothing at all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::monitor::{Monitor, Usage, process_tree};
use crate::spec::MemoryLimit;
use crate::supervisor::RestartReason;
use crate::supervisor::task::Control;
use crate::supervisor::{ExitRouter, Route};

/// After a `status` request, keep sampling every instance this long, so
/// the next `status` (or `monit`) finds fresh figures without waiting.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(60);

/// The sampler's state, shared between its task and `status`.
pub struct Sampler {
    monitor: Monitor,
    router: ExitRouter,
    /// The latest figures per leader pid.
    usage: HashMap<i32, Usage>,
    /// When every instance was last sampled.
    sampled_all: Option<Instant>,
    /// When `status` last asked.
    demanded: Option<Instant>,
    /// `max-memory` per app, kept current by the daemon on every rescan.
    pub limits: HashMap<String, MemoryLimit>,
    /// Apps with listening sockets: an instance over its limit is replaced
    /// by a rolling reload (through the daemon loop), not restarted.
    pub listening: HashSet<String>,
    /// Where such reloads are asked for.
    pub to_loop: Option<tokio::sync::mpsc::UnboundedSender<super::rollout::LoopMsg>>,
}

pub type SharedSampler = Arc<Mutex<Sampler>>;

impl Sampler {
    pub fn new(router: ExitRouter) -> SharedSampler {
        Arc::new(Mutex::new(Sampler {
            monitor: Monitor::new(),
            router,
            usage: HashMap::new(),
            sampled_all: None,
            demanded: None,
            limits: HashMap::new(),
            listening: HashSet::new(),
            to_loop: None,
        }))
    }

    /// The figures for `status`: sampled now if they are older than
    /// `max_age` (the first request after an idle period pays one round).
    pub fn usage_for_status(&mut self, max_age: Duration) -> HashMap<i32, Usage> {
        let now = Instant::now();
        self.demanded = Some(now);
        if self.sampled_all.is_none_or(|t| now.duration_since(t) > max_age) {
            self.sample(now, true);
        }
        self.usage.clone()
    }

    /// Samples every instance (`all`) or only those of apps with a limit;
    /// returns the routes sampled.
    fn sample(&mut self, now: Instant, all: bool) -> Vec<(i32, Route)> {
        let routes: Vec<(i32, Route)> =
            self.router.routes().into_iter().filter(|(_, r)| all || self.limits.contains_key(r.app.as_ref())).collect();
        let sets: Vec<(i32, Vec<i32>)> = routes
            .iter()
            .map(|(pid, route)| {
                let members = match &route.cgroup {
                    Some(cg) => cg.pids(),
                    None => process_tree(*pid),
                };
                (*pid, members)
            })
            .collect();
        let sample = self.monitor.sample_sets(&sets, now);
        if all {
            self.usage = sample;
            self.sampled_all = Some(now);
        } else {
            self.usage.retain(|pid, _| routes.iter().any(|(p, _)| p == pid));
            self.usage.extend(sample);
        }
        routes
    }
}

/// Runs forever: each tick (the shortest of `every` and the apps' own
/// `max-memory every=`), samples what is needed and restarts instances over
/// their limit.
pub async fn sample_usage(sampler: SharedSampler, every: Duration) {
    let mut last_check: HashMap<String, Instant> = HashMap::new();
    // A leader already told to restart is not told again while it stops.
    let mut restarting: HashSet<i32> = HashSet::new();
    loop {
        let tick = {
            let s = sampler.lock().unwrap();
            s.limits.values().filter_map(|l| l.every).fold(every, Duration::min)
        };
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let mut s = sampler.lock().unwrap();
        let all = s.demanded.is_some_and(|t| now.duration_since(t) < DEMAND_WINDOW);
        if !all && s.limits.is_empty() {
            continue;
        }
        let routes = s.sample(now, all);
        restarting.retain(|pid| s.usage.contains_key(pid));
        for (pid, route) in &routes {
            let Some(limit) = s.limits.get(route.app.as_ref()) else { continue };
            let due = last_check.get(route.app.as_ref()).is_none_or(|t| now >= *t + limit.every.unwrap_or(every));
            let Some(u) = s.usage.get(pid) else { continue };
            if due && u.rss_bytes > limit.bytes && restarting.insert(*pid) {
                let reason = RestartReason::MemoryLimit { rss_bytes: u.rss_bytes, limit_bytes: limit.bytes };
                match &s.to_loop {
                    Some(to_loop) if s.listening.contains(route.app.as_ref()) => {
                        tracing::warn!(app = %route.app, pid, "{reason}: rolling it over");
                        let msg = super::rollout::LoopMsg::ReloadInstance { app: route.app.to_string(), pid: *pid };
                        let _ = to_loop.send(msg);
                    }
                    _ => {
                        tracing::warn!(app = %route.app, pid, "{reason}: restarting");
                        route.send(Control::RestartIfRunning(reason));
                    }
                }
            }
        }
        for (name, limit) in &s.limits {
            if last_check.get(name).is_none_or(|t| now >= *t + limit.every.unwrap_or(every)) {
                last_check.insert(name.clone(), now);
            }
        }
        last_check.retain(|name, _| s.limits.contains_key(name));
    }
}
