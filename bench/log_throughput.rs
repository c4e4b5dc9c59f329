//! Log throughput: 1,000,000 lines of 100 bytes from a python3 writer, as
//! fast as it can, through (a) `writer | cat > file` (the baseline),
//! (b) LogHub plain, (c) LogHub JSON with timestamps. Prints, per mode, the
//! median of 3 runs of the wall time from spawning the writer until the last
//! line is written to the file, and the CPU time this process (the hub, on a
//! current-thread runtime on the main thread) used meanwhile.
//!
//! Run: `cargo bench --bench log_throughput`

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procd::logs::LogHub;
use procd::spec::model::{LogFormat, LogSpec};

const LINES: u64 = 1_000_000;
const WRITER: &str = r#"
import os
block = (b"x" * 99 + b"\n") * 1000
for _ in range(1000):
    data = block
    while data:
        data = data[os.write(1, data):]
"#;

/// CPU seconds (user + system) of this process, from /proc/self/stat.
fn cpu_ticks() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after_comm.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    // Fields 14 and 15 (utime, stime); index 11 and 12 after the comm; 100 Hz.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// On-CPU nanoseconds of the main thread, from /proc/self/schedstat.
fn cpu_precise() -> f64 {
    let s = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
}

fn shell(dir: &Path, pipeline: &str) -> (Duration, f64, f64) {
    let file = dir.join("shell.log");
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("python3 -c '{WRITER}' {pipeline} {}", file.display()))
        .status()
        .expect("sh");
    let wall = t.elapsed();
    assert!(status.success());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), LINES * 100);
    (wall, f64::NAN, f64::NAN)
}

fn hub_run(dir: &Path, spec: &LogSpec, pipe_size: Option<i32>) -> (Duration, f64, f64) {
    let hub = LogHub::new(dir.to_owned());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (c0, p0, t) = (cpu_ticks(), cpu_precise(), Instant::now());
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(WRITER)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let out: OwnedFd = child.stdout.take().unwrap().into();
    let err: OwnedFd = child.stderr.take().unwrap().into();
    if let Some(size) = pipe_size {
        // What the daemon's process module does for every app.
        let _ = nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
    }
    rt.block_on(async { hub.attach("bench", 0, spec, out, err).await }).unwrap();
    let wall = t.elapsed();
    let cpu = (cpu_ticks() - c0, cpu_precise() - p0);
    assert!(child.wait().unwrap().success());
    let written = std::fs::metadata(dir.join("bench-out.log")).unwrap().len();
    assert!(written >= LINES * 100, "only {written} bytes");
    (wall, cpu.0, cpu.1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let plain = LogSpec::default();
    let json =
        LogSpec { format: LogFormat::Json, timestamp: Some("%Y-%m-%d %H:%M:%S%.3f".into()), ..LogSpec::default() };
    type Mode<'a> = (&'a str, Box<dyn Fn(&Path) -> (Duration, f64, f64) + 'a>);
    let modes: Vec<Mode> = vec![
        ("writer > file (reference)", Box::new(|d: &Path| shell(d, ">"))),
        ("cat baseline (writer | cat > file)", Box::new(|d: &Path| shell(d, "| cat >"))),
        ("LogHub plain, 1 MiB pipe", Box::new(|d: &Path| hub_run(d, &plain, Some(1 << 20)))),
        ("LogHub plain, default 64 KiB pipe", Box::new(|d: &Path| hub_run(d, &plain, None))),
        ("LogHub JSON + timestamp, 1 MiB pipe", Box::new(|d: &Path| hub_run(d, &json, Some(1 << 20)))),
    ];
    println!("{LINES} lines of 100 bytes; medians of 3 rounds, modes interleaved within each round");
    println!("{:<38} {:>9} {:>14} {:>16} {:>10}", "mode", "wall s", "hub CPU s", "hub CPU s", "MB/s");
    println!("{:<38} {:>9} {:>14} {:>16} {:>10}", "", "", "(/proc stat)", "(schedstat)", "");
    // Rounds interleave the modes so background load hits them alike.
    let mut results = vec![(Vec::new(), Vec::new(), Vec::new()); modes.len()];
    for _ in 0..3 {
        for ((_, run), (walls, cpus, precise)) in modes.iter().zip(&mut results) {
            let dir = tempfile::tempdir().unwrap();
            let (w, c, p) = run(dir.path());
            walls.push(w.as_secs_f64());
            cpus.push(c);
            precise.push(p);
        }
    }
    for ((name, _), (walls, cpus, precise)) in modes.iter().zip(results) {
        let wall = median(walls);
        let mb = (LINES * 100) as f64 / 1e6 / wall;
        println!("{name:<38} {wall:>9.3} {:>14.2} {:>16.3} {mb:>10.0}", median(cpus), median(precise));
    }
}
