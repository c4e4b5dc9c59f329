//! Respawn latency (issue #3): `kill -9` of an instance with no restart
//! delay, until the new instance is online in `procd status`. Prints the
//! median and the worst of 20. Run with `cargo bench --bench respawn`.

use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::spawn_daemon;
use procd::Client;
use procd::control::protocol::{Request, Response};

const ROUNDS: usize = 20;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    // Twenty kills within a second each would otherwise make the app
    // "errored" after PM2's 16 unstable restarts, as they should.
    std::fs::write(
        conf.join("r.kdl"),
        "app \"r\" {\n    run \"sleep\" \"100000\"\n    restart { max-restarts 1000; }\n}\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let _daemon = spawn_daemon(&conf, &home);
    let client = Client::new(home.join("procd.sock"));
    let online_pid = || -> Option<i32> {
        match client.call(Request::Status { app: None, detail: false }) {
            Ok(Response::Status(r)) => {
                let i = r.apps.first()?.instances.first()?;
                (i.status == "online").then_some(i.pid).flatten()
            }
            _ => None,
        }
    };
    let until = |f: &dyn Fn() -> Option<i32>| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = f() {
                return p;
            }
            assert!(Instant::now() < deadline, "no online instance");
            // A pause between polls leaves the CPUs to the daemon and the
            // new process (two cores here); it bounds the resolution.
            std::thread::sleep(Duration::from_micros(50));
        }
    };
    let mut pid = until(&online_pid);
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        if std::env::var_os("PROCD_BENCH_LOG").is_some() {
            eprintln!("kill at {:?}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap());
        }
        nix_kill(pid);
        let old = pid;
        pid = until(&|| online_pid().filter(|p| *p != old));
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        if std::env::var_os("PROCD_BENCH_LOG").is_some() {
            eprintln!("seen at {:?}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap());
        }
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "respawn after kill -9, no delay, {ROUNDS} rounds: median {:.2} ms, worst {:.2} ms (includes up to one status poll: ~0.15 ms)",
        samples[ROUNDS / 2],
        samples[ROUNDS - 1]
    );
}

/// SIGKILL by pid (nix's safe wrapper of kill(2); spawning kill(1) would
/// add a millisecond to every sample).
fn nix_kill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}
