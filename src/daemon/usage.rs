//! Sampling every running instance's memory and CPU, for `status`, and
//! enforcing `max-memory`: an instance whose process tree's resident memory
//! passes its app's limit is restarted, with the figure as its reason.
//!
//! Only procd's own instance leaders and their trees are read (from /proc),
//! never the whole process table, so the cost grows with procd's instances,
//! not with the host's processes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::monitor::{Monitor, Usage, process_tree};
use crate::spec::MemoryLimit;
use crate::supervisor::RestartReason;
use crate::supervisor::task::{Control, ExitRouter};

/// Usage figures per leader pid, read by `status`.
pub type UsageMap = Arc<Mutex<HashMap<i32, Usage>>>;

/// `max-memory` per app, kept current by the daemon on every rescan.
pub type MemoryLimits = Arc<Mutex<HashMap<String, MemoryLimit>>>;

/// Runs forever: samples at the shortest of `every` and the apps' own
/// `max-memory every=`, publishes usage, and restarts instances over their
/// limit.
pub async fn sample_usage(router: ExitRouter, usage: UsageMap, limits: MemoryLimits, every: Duration) {
    let mut monitor = Monitor::new();
    let mut last_check: HashMap<String, Instant> = HashMap::new();
    // A leader already told to restart is not told again while it stops.
    let mut restarting: HashSet<i32> = HashSet::new();
    loop {
        let tick = {
            let limits = limits.lock().unwrap();
            limits.values().filter_map(|l| l.every).fold(every, Duration::min)
        };
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let routes = router.routes();
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
        let sample = monitor.sample_sets(&sets, now);
        restarting.retain(|pid| sample.contains_key(pid));
        let limits = limits.lock().unwrap().clone();
        for (pid, route) in &routes {
            let Some(limit) = limits.get(route.app.as_ref()) else { continue };
            let due = last_check.get(route.app.as_ref()).is_none_or(|t| now >= *t + limit.every.unwrap_or(every));
            if !due {
                continue;
            }
            let Some(u) = sample.get(pid) else { continue };
            if u.rss_bytes > limit.bytes && restarting.insert(*pid) {
                let reason = RestartReason::MemoryLimit { rss_bytes: u.rss_bytes, limit_bytes: limit.bytes };
                tracing::warn!(app = %route.app, pid, "{reason}: restarting");
                route.send(Control::RestartIfRunning(reason));
            }
        }
        for name in limits.keys() {
            let due = last_check.get(name).is_none_or(|t| now >= *t + limits[name].every.unwrap_or(every));
            if due {
                last_check.insert(name.clone(), now);
            }
        }
        last_check.retain(|name, _| limits.contains_key(name));
        *usage.lock().unwrap() = sample;
    }
}
