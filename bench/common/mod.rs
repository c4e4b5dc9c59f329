//! What the benchmarks share: starting the release `procd daemon` on a
//! config dir (stopped by pid however the benchmark ends), a process's CPU
//! time, medians.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_procd");

/// A running daemon; SIGTERM and wait on drop.
pub struct DaemonGuard(pub Child);

impl DaemonGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL and collect the daemon; its apps stay with the keeper.
    pub fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Nothing left to stop: the drop would signal a reaped pid.
        std::mem::forget(self);
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Starts `procd daemon` on `conf` with its home in `home`. Extra daemon
/// flags come from `PROCD_BENCH_FLAGS` (e.g. `--no-cgroups`); the daemon's
/// log goes to the file named by `PROCD_BENCH_LOG`, if set.
pub fn spawn_daemon(conf: &Path, home: &Path) -> DaemonGuard {
    let stderr = match std::env::var_os("PROCD_BENCH_LOG") {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("PROCD_BENCH_LOG")),
        None => Stdio::null(),
    };
    let child = Command::new(BIN)
        .args(["daemon", "--config-dir"])
        .arg(conf)
        .arg("--home")
        .arg(home)
        .args(std::env::var("PROCD_BENCH_FLAGS").unwrap_or_default().split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start procd daemon");
    DaemonGuard(child)
}

/// (RSS, PSS) in KiB from smaps_rollup.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// CPU seconds of every thread of `pid`, from schedstat (nanoseconds).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .sum::<f64>()
        / 1e9
}

/// Calls `f` every `pause` until it gives a value; panics naming `what`
/// after `timeout` (a benchmark that cannot finish must not hang).
pub fn poll<T>(
    what: &str,
    timeout: std::time::Duration,
    pause: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
