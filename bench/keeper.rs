//! Issue #6's figures, with 100 running instances: `procd update` until the
//! new daemon answers `status` (and how many apps restarted: target 0); a
//! SIGKILLed daemon restarted until all 100 instances are adopted (target
//! ≤ 200 ms); the keeper's memory (target ≤ 1 MiB PSS).
//! Run with `cargo bench --bench keeper`.

use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{DaemonGuard, median, memory_kib, spawn_daemon};
use procd::Client;
use procd::control::protocol::{Request, Response, StatusReport};

const APPS: usize = 100;
const ROUNDS: usize = 5;

fn status(client: &Client) -> Option<StatusReport> {
    match client.call(Request::Status { app: None, detail: false }) {
        Ok(Response::Status(r)) => Some(r),
        _ => None,
    }
}

/// Every instance's (pid, restarts) once all 100 are online.
fn all_online(client: &Client) -> Option<Vec<(i32, u32)>> {
    let r = status(client)?;
    let inst: Vec<_> = r.apps.iter().flat_map(|a| a.instances.iter()).collect();
    (inst.len() == APPS && inst.iter().all(|i| i.status == "online"))
        .then(|| inst.iter().map(|i| (i.pid.unwrap_or(0), i.restarts)).collect())
}

fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::poll(what, timeout, Duration::from_micros(200), f)
}

fn started_ms(client: &Client) -> Option<u64> {
    match client.call(Request::Ping) {
        Ok(Response::Pong { started_ms, .. }) => Some(started_ms),
        _ => None,
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    for i in 0..APPS {
        std::fs::write(conf.join(format!("a{i}.kdl")), format!("app \"a{i}\" {{\n    run \"sleep\" \"100000\"\n}}\n"))
            .unwrap();
    }
    let home = dir.path().join("home");
    let client = Client::new(home.join("procd.sock"));
    let mut daemon = spawn_daemon(&conf, &home);
    let first = poll("100 instances online", Duration::from_secs(30), || all_online(&client));
    let keeper: u32 = std::fs::read_to_string(home.join("state/keeper.pid")).unwrap().trim().parse().unwrap();

    // Memory right after the burst of 100 spawns, and once the keeper has
    // been quiet for its trim delay (1 s).
    let (_, k_busy) = memory_kib(keeper);
    std::thread::sleep(Duration::from_millis(1500));
    let (k_rss, k_pss) = memory_kib(keeper);
    let (d_rss, d_pss) = memory_kib(daemon.pid());

    let mut updates = Vec::new();
    for _ in 0..ROUNDS {
        let before = started_ms(&client).unwrap();
        let t0 = Instant::now();
        assert!(matches!(client.call(Request::Update), Ok(Response::Done { .. })));
        poll("the updated daemon", Duration::from_secs(10), || {
            (started_ms(&client)? != before).then_some(())?;
            status(&client)
        });
        updates.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let after_update = poll("100 online after update", Duration::from_secs(10), || all_online(&client));

    let mut adoptions = Vec::new();
    for _ in 0..ROUNDS {
        daemon.kill9();
        let t0 = Instant::now();
        daemon = spawn_daemon(&conf, &home);
        poll("100 instances adopted", Duration::from_secs(10), || all_online(&client));
        adoptions.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let after_kills = poll("100 online after kills", Duration::from_secs(10), || all_online(&client));
    let restarts = |now: &[(i32, u32)]| now.iter().zip(&first).filter(|(n, f)| n.0 != f.0 || n.1 != f.1).count();

    println!("keeper bench: {APPS} instances, {ROUNDS} rounds each");
    println!(
        "procd update -> new daemon answers status: median {:.1} ms, worst {:.1} ms; instances restarted: {}",
        median(updates.clone()),
        updates.iter().cloned().fold(0.0, f64::max),
        restarts(&after_update)
    );
    println!(
        "SIGKILLed daemon restarted -> all {APPS} adopted and online: median {:.1} ms, worst {:.1} ms; \
         instances restarted: {}",
        median(adoptions.clone()),
        adoptions.iter().cloned().fold(0.0, f64::max),
        restarts(&after_kills)
    );
    println!(
        "keeper memory with {APPS} instances: PSS {:.2} MiB right after the spawns; idle: RSS {:.2} MiB, \
         PSS {:.2} MiB (daemon: RSS {:.2} MiB, PSS {:.2} MiB)",
        k_busy as f64 / 1024.0,
        k_rss as f64 / 1024.0,
        k_pss as f64 / 1024.0,
        d_rss as f64 / 1024.0,
        d_pss as f64 / 1024.0
    );
    drop::<DaemonGuard>(daemon);
}
