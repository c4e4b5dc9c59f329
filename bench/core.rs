//! Benchmark of the declarative core (issue #2), printing figures:
//!
//! - time from writing 100 spec files to all 100 instances online;
//! - with those running, time from rewriting one app's file to its new
//!   instance online, and how many other instances were restarted;
//! - the daemon's RSS and PSS idle with 0 apps and with 100 apps;
//! - `procd status --json` wall time with 100 apps.
//!
//! Run with `cargo bench --bench core`. Medians of several runs; the
//! daemon is the release binary, driven like a user would.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{BIN, DaemonGuard, median, spawn_daemon};
use procd::Client;
use procd::control::protocol::{Request, Response, StatusReport};

const APPS: usize = 100;
const RUNS: usize = 5;

struct Daemon {
    daemon: DaemonGuard,
    dir: tempfile::TempDir,
    conf: PathBuf,
    client: Client,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&conf).unwrap();
        let daemon = spawn_daemon(&conf, &home);
        let client = Client::new(home.join("procd.sock"));
        let d = Daemon { daemon, dir, conf, client };
        d.until(Duration::from_secs(10), |_| true);
        d
    }

    fn status(&self) -> Option<StatusReport> {
        match self.client.call(Request::Status { app: None, detail: false }) {
            Ok(Response::Status(r)) => Some(r),
            _ => None,
        }
    }

    /// Polls status every 2 ms (faster polling would steal the daemon's CPU) until `f` holds; returns when it did.
    fn until(&self, timeout: Duration, f: impl Fn(&StatusReport) -> bool) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.status()
                && f(&r)
            {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "benchmark condition not reached");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.conf.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.conf.join(name)).unwrap();
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

fn spec(i: usize, version: u32) -> String {
    format!("app \"s{i:03}\" {{\n    run \"sleep\" \"100000\"\n    env {{ VERSION \"{version}\"; }}\n}}\n")
}

fn all_online(r: &StatusReport, n: usize) -> bool {
    r.apps.len() == n && r.apps.iter().all(|a| a.instances.iter().all(|i| i.status == "online"))
}

fn pids(r: &StatusReport) -> Vec<(String, Option<i32>)> {
    r.apps.iter().map(|a| (a.name.clone(), a.instances[0].pid)).collect()
}

fn memory(pid: u32) -> (u64, u64) {
    common::memory_kib(pid)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    println!("procd core benchmark: {APPS} apps of one `sleep` each, {RUNS} runs, medians");
    let mut to_online = Vec::new();
    let mut one_change = Vec::new();
    let mut others_restarted = 0usize;
    let mut idle = Vec::new();
    let mut loaded = Vec::new();
    let mut status_wall = Vec::new();
    for run in 0..RUNS {
        let d = Daemon::start();
        std::thread::sleep(Duration::from_millis(300));
        idle.push(memory(d.pid()));

        let t0 = Instant::now();
        for i in 0..APPS {
            d.write(&format!("s{i:03}.kdl"), &spec(i, 1));
        }
        let t1 = d.until(Duration::from_secs(30), |r| all_online(r, APPS));
        to_online.push(ms(t1 - t0));

        std::thread::sleep(Duration::from_millis(1200));
        loaded.push(memory(d.pid()));

        for k in 0..3 {
            let target = (run * 7 + k * 31) % APPS;
            let name = format!("s{target:03}");
            let before = pids(&d.status().unwrap());
            let old = before.iter().find(|(n, _)| *n == name).unwrap().1;
            let t0 = Instant::now();
            d.write(&format!("{name}.kdl"), &spec(target, 2 + k as u32));
            let t1 = d.until(Duration::from_secs(10), |r| {
                r.apps.iter().any(|a| {
                    a.name == name
                        && a.instances[0].status == "online"
                        && a.instances[0].pid.is_some()
                        && a.instances[0].pid != old
                })
            });
            one_change.push(ms(t1 - t0));
            let after = pids(&d.status().unwrap());
            others_restarted += before.iter().zip(&after).filter(|(b, a)| b.0 != name && b.1 != a.1).count();
        }

        let home = d.dir.path().join("home");
        for _ in 0..20 {
            let t0 = Instant::now();
            let out = Command::new(BIN).args(["status", "--json", "--home"]).arg(&home).output().unwrap();
            status_wall.push(ms(t0.elapsed()));
            assert!(out.status.success());
        }
    }
    let idle_rss = median(idle.iter().map(|m| m.0 as f64).collect());
    let idle_pss = median(idle.iter().map(|m| m.1 as f64).collect());
    let rss = median(loaded.iter().map(|m| m.0 as f64).collect());
    let pss = median(loaded.iter().map(|m| m.1 as f64).collect());
    println!(
        "100 files written -> 100 instances online: median {:.1} ms (runs: {:?})",
        median(to_online.clone()),
        round(&to_online)
    );
    println!(
        "one file rewritten -> its new instance online: median {:.1} ms over {} changes; other instances restarted: {}",
        median(one_change.clone()),
        one_change.len(),
        others_restarted
    );
    println!("daemon memory idle (0 apps): RSS {:.2} MiB, PSS {:.2} MiB", idle_rss / 1024.0, idle_pss / 1024.0);
    println!("daemon memory with 100 apps: RSS {:.2} MiB, PSS {:.2} MiB", rss / 1024.0, pss / 1024.0);
    println!(
        "`procd status --json` with 100 apps: median {:.2} ms over {} calls",
        median(status_wall.clone()),
        status_wall.len()
    );
}

fn round(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 10.0).round() / 10.0).collect()
}
