//! The cost of watching 1,000 instances (issue #3): one app of 1,000
//! `sleep` instances with a `max-memory` limit, so every instance's tree is
//! sampled and compared every second. Prints the daemon's CPU time over
//! 10 idle seconds. Run with `cargo bench --bench sampling`.

use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, spawn_daemon};
use procd::Client;
use procd::control::protocol::{Request, Response};

const INSTANCES: usize = 1000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("many.kdl"),
        format!(
            "app \"many\" {{\n    run \"sleep\" \"100000\"\n    instances {INSTANCES}\n    max-memory \"100M\"\n}}\n"
        ),
    )
    .unwrap();
    let home = dir.path().join("home");
    let daemon = spawn_daemon(&conf, &home);
    let client = Client::new(home.join("procd.sock"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Response::Status(r)) = client.call(Request::Status { app: None, detail: false })
            && r.apps
                .first()
                .is_some_and(|a| a.instances.len() == INSTANCES && a.instances.iter().all(|i| i.status == "online"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "instances did not come online");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let c0 = cpu_seconds(daemon.pid());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds(daemon.pid()) - c0;
    println!(
        "{INSTANCES} instances sampled every second with a max-memory check: daemon CPU {:.1} ms per second ({:.2}% of one CPU)",
        used * 100.0,
        used * 10.0
    );
}
