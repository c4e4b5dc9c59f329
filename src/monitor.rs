//! Per-instance memory and CPU usage, read straight from `/proc` (about five
//! times cheaper than `sysinfo` for 1,000 processes), summed over each
//! instance's process tree so that a shell wrapper or a forking server shows
//! what it really costs.
//!
//! Processes come and go while we read: a file that vanishes mid-read means
//! the process is gone and is skipped, never an error.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::Instant;

use crate::process::{clock_ticks_per_second, page_size};

/// Usage of one instance: its root process and all its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Resident memory, summed over the tree (shared pages counted in each
    /// process, as `ps` and PM2 do).
    pub rss_bytes: u64,
    /// CPU time since the previous sample of this root, in percent of one
    /// CPU (200.0 = two CPUs busy); 0 on the first sample.
    pub cpu_percent: f32,
}

/// Samples usage, remembering each root's CPU time between calls.
#[derive(Debug)]
pub struct Monitor {
    /// Per root pid: its tree's total CPU ticks and when they were read.
    previous: HashMap<i32, (u64, Instant)>,
    /// Bytes per page, the unit of `statm`.
    page_size: u64,
    /// Ticks per second, the unit of the times in `stat`.
    ticks_per_second: u64,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A monitor with no history: every root's first sample shows 0% CPU.
    pub fn new() -> Self {
        Monitor { previous: HashMap::new(), page_size: page_size(), ticks_per_second: clock_ticks_per_second() }
    }

    /// Usage of each root's tree at `now`. Roots whose process is gone are
    /// left out; roots not passed in are forgotten (a reused pid starts over).
    pub fn sample(&mut self, roots: &[i32], now: Instant) -> HashMap<i32, Usage> {
        let sets: Vec<(i32, Vec<i32>)> = roots.iter().map(|&r| (r, process_tree(r))).collect();
        self.sample_sets(&sets, now)
    }

    /// Usage of explicit process sets, keyed by their root: what a cgroup
    /// lists, which includes descendants that left the tree (double-forked
    /// daemons).
    pub fn sample_sets(&mut self, sets: &[(i32, Vec<i32>)], now: Instant) -> HashMap<i32, Usage> {
        let mut usage = HashMap::with_capacity(sets.len());
        let mut previous = HashMap::with_capacity(sets.len());
        for (root, members) in sets {
            let root = *root;
            let mut rss_pages = 0;
            let mut ticks = 0;
            let mut alive = false;
            for &pid in members {
                let Some(stat) = read_stat(pid) else { continue };
                let pages = stat.rss_pages;
                alive = true;
                rss_pages += pages;
                ticks += stat.cpu_ticks;
            }
            if !alive {
                continue;
            }
            let cpu_percent = match self.previous.get(&root) {
                Some(&(before, then)) => {
                    let secs = now.saturating_duration_since(then).as_secs_f64();
                    // Exited descendants take their ticks with them: clamp.
                    let used = ticks.saturating_sub(before) as f64 / self.ticks_per_second as f64;
                    if secs > 0.0 { (used / secs * 100.0) as f32 } else { 0.0 }
                }
                None => 0.0,
            };
            previous.insert(root, (ticks, now));
            usage.insert(root, Usage { rss_bytes: rss_pages * self.page_size, cpu_percent });
        }
        self.previous = previous;
        usage
    }
}

/// `root` and all its descendants, parents before children; empty if `root`
/// is gone. Walks `/proc/PID/task/TID/children` (never all of `/proc`).
pub fn process_tree(root: i32) -> Vec<i32> {
    if root <= 0 || fs::metadata(format!("/proc/{root}")).is_err() {
        return Vec::new();
    }
    let mut tree = vec![root];
    let mut seen: HashSet<i32> = HashSet::from([root]);
    let mut next = 0;
    while next < tree.len() {
        let pid = tree[next];
        next += 1;
        for child in children(pid) {
            // A reused pid could make a cycle; visit each pid once.
            if seen.insert(child) {
                tree.push(child);
            }
        }
    }
    tree
}

/// The direct children of `pid`, over all its threads (a child belongs to
/// the thread that forked it).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("children");
        if let Ok(list) = fs::read_to_string(&path) {
            out.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// The pid-reuse guard: when `pid` started, in clock ticks since boot
/// (field 22 of `/proc/PID/stat`). Same pid and same start time means the
/// same process.
pub fn start_time_ticks(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
pub fn parent_pid(pid: i32) -> Option<i32> {
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    line[line.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// The fields of `/proc/PID/stat` procd uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// utime + stime + cutime + cstime: the process's own CPU time plus that
    /// of children it has reaped, so a short-lived child's work is not lost
    /// from the tree's total when it exits.
    cpu_ticks: u64,
    /// Field 22, starttime.
    start_time: u64,
    /// Field 24, resident pages.
    rss_pages: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `stat` line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from after the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // rest starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    // Field 24 is the same resident page count `statm` gives: one read per
    // process instead of two.
    Some(Stat { cpu_ticks, start_time: field(22)?, rss_pages: field(24)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_last_paren() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 123456 1000 \
                    200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(line), Some(Stat { cpu_ticks: 13, start_time: 123456, rss_pages: 200 }));
        assert_eq!(parse_stat("42 (truncated"), None);
        assert_eq!(parse_stat("42 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_sampled() {
        let me = std::process::id() as i32;
        assert!(start_time_ticks(me).is_some());
        assert_eq!(process_tree(me).first(), Some(&me));
        let mut monitor = Monitor::new();
        let first = monitor.sample(&[me], Instant::now());
        assert!(first[&me].rss_bytes > 0);
        assert_eq!(first[&me].cpu_percent, 0.0);
    }

    #[test]
    fn vanished_or_invalid_roots_are_skipped() {
        let mut monitor = Monitor::new();
        assert!(monitor.sample(&[0, -5, i32::MAX], Instant::now()).is_empty());
        assert!(process_tree(i32::MAX).is_empty());
        assert_eq!(start_time_ticks(i32::MAX), None);
    }

    #[test]
    fn forgotten_roots_start_over() {
        let me = std::process::id() as i32;
        let mut monitor = Monitor::new();
        monitor.sample(&[me], Instant::now());
        monitor.sample(&[], Instant::now());
        assert!(monitor.previous.is_empty());
    }
}
