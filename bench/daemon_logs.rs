//! Log throughput through the real daemon (issue #4): one app writes
//! 1,000,000 lines of 100 bytes as fast as it can. In the same run, the
//! same writer piped through `cat` into a file (the baseline), then procd
//! in plain mode and in JSON-with-timestamp mode. Prints the wall time from
//! "go" until the last byte is on disk, and the daemon's CPU seconds.
//! Medians of 3 runs. Run with `cargo bench --bench daemon_logs`.
//!
//! Every writer is started first and waits for a `go` file, so neither
//! python's start-up nor procd's reconcile is in the figure.

use std::path::{Path, PathBuf};
#[path = "common/mod.rs"]
mod common;

use std::process::Command;

use common::{cpu_seconds, median, spawn_daemon};
use std::time::{Duration, Instant};

const BYTES: u64 = 1_000_000 * 100;
const RUNS: usize = 3;

/// Waits for `go`, signalling readiness, then writes 1M lines of 100 bytes.
const WRITER: &str = r#"
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
block = (b"x" * 99 + b"\n") * 1000
for _ in range(1000):
    data = block
    while data:
        data = data[os.write(1, data):]
"#;

fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn baseline(dir: &Path) -> f64 {
    let (ready, go, out) = (dir.join("b.ready"), dir.join("b.go"), dir.join("b.log"));
    let writer = dir.join("writer.py");
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(format!("python3 {} {} {} | cat > {}", writer.display(), ready.display(), go.display(), out.display()))
        .spawn()
        .unwrap();
    wait_for("baseline writer ready", Duration::from_secs(10), || ready.exists());
    let t0 = Instant::now();
    std::fs::write(&go, "").unwrap();
    let t1 = wait_for("baseline done", Duration::from_secs(60), || size(&out) == BYTES);
    sh.wait().unwrap();
    (t1 - t0).as_secs_f64()
}

/// (wall seconds, daemon CPU seconds) for one app with `logs` settings.
fn through_procd(dir: &Path, name: &str, logs: &str) -> (f64, f64) {
    let conf = dir.join(format!("{name}.conf.d"));
    std::fs::create_dir_all(&conf).unwrap();
    let (ready, go, out): (PathBuf, PathBuf, PathBuf) =
        (dir.join(format!("{name}.ready")), dir.join(format!("{name}.go")), dir.join(format!("{name}.log")));
    std::fs::write(
        conf.join("w.kdl"),
        format!(
            "app \"w\" {{\n    run \"python3\" \"{}\" \"{}\" \"{}\"\n    restart \"never\"\n    logs {{\n        out \"{}\"\n        {logs}\n    }}\n}}\n",
            dir.join("writer.py").display(),
            ready.display(),
            go.display(),
            out.display()
        ),
    )
    .unwrap();
    let daemon = spawn_daemon(&conf, &dir.join(format!("{name}.home")));
    wait_for("procd writer ready", Duration::from_secs(10), || ready.exists());
    let cpu0 = cpu_seconds(daemon.pid());
    let t0 = Instant::now();
    std::fs::write(&go, "").unwrap();
    // Every line has the same length (JSON lines too: a fixed timestamp
    // format and the same message), so the last line is on disk when the
    // size is 1,000,000 of the first line; reading the size is cheap.
    wait_for("first line", Duration::from_secs(60), || size(&out) > 0);
    let first = std::fs::read(&out).unwrap();
    let line = first.iter().position(|c| *c == b'\n').unwrap() as u64 + 1;
    let t1 = wait_for("procd done", Duration::from_secs(120), || size(&out) == line * 1_000_000);
    let cpu = cpu_seconds(daemon.pid()) - cpu0;
    ((t1 - t0).as_secs_f64(), cpu)
}

fn main() {
    let mut base = Vec::new();
    let (mut plain, mut plain_cpu, mut json, mut json_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("writer.py"), WRITER).unwrap();
        base.push(baseline(dir.path()));
        let (w, c) = through_procd(dir.path(), &format!("plain{run}"), "");
        plain.push(w);
        plain_cpu.push(c);
        let (w, c) = through_procd(dir.path(), &format!("json{run}"), "format \"json\"");
        json.push(w);
        json_cpu.push(c);
    }
    let b = median(base);
    println!("1,000,000 lines of 100 bytes, medians of {RUNS} runs (wall from go to the last line on disk):");
    println!("  writer | cat > file        {b:.3} s");
    println!("  procd plain                {:.3} s, daemon CPU {:.3} s", median(plain), median(plain_cpu));
    let j = median(json);
    println!(
        "  procd json + timestamp     {j:.3} s, daemon CPU {:.3} s ({:.2}x the cat baseline's throughput)",
        median(json_cpu),
        b / j
    );
}
