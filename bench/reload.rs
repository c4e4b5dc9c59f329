//! Issue #5's figures: the example Node and Python servers, two instances
//! each on a socket procd holds, under `wrk -t1 -c16 -d10s` while `procd
//! reload` runs three times, with a client opening a fresh connection every
//! 5 ms beside wrk: failed requests by kind (target 0 everywhere). Then the
//! requests per second of one instance on procd's passed socket against the
//! same app binding its own port (target: no measurable loss), the median
//! of three alternating 5 s runs each.
//! Run with `cargo bench --bench reload`; needs `wrk` (Debian's package),
//! and `node` for the Node half. Prints figures, asserts nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{BIN, DaemonGuard, median, spawn_daemon};
use procd::Client;
use procd::control::protocol::{Request, Response};

/// One of the example servers in examples/apps.
struct Example {
    program: &'static str,
    script: &'static str,
}

const EXAMPLES: [Example; 2] =
    [Example { program: "node", script: "cluster.js" }, Example { program: "python3", script: "cluster.py" }];

/// Alternating runs of each side of the socket-passing comparison, so a
/// drift of the machine does not favour one side.
const COMPARE_ROUNDS: usize = 3;

/// When `procd reload` starts, from the start of wrk's 10 s.
const RELOADS_AT: [Duration; 3] = [Duration::from_secs(2), Duration::from_secs(5), Duration::from_secs(8)];

fn example_path(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/apps").join(script)
}

/// True when `program` can be started (wrk's `--version` exits 1).
fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A daemon running one app of `instances` copies of `example` on a socket
/// procd binds on `port`.
struct Cluster {
    /// Stopped (with its apps) on drop, before the dir goes.
    _daemon: DaemonGuard,
    conf: PathBuf,
    home: PathBuf,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(example: &Example, port: u16, instances: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&conf).unwrap();
        let spec = format!(
            "app \"bench\" {{\n    run {:?} {:?}\n    instances {instances}\n    \
             listen \"tcp://127.0.0.1:{port}\" name=\"http\"\n    ready \"notify\" timeout=\"3s\"\n    \
             stop signal=\"SIGINT\" timeout=\"5s\"\n    env {{\n        PYTHONUNBUFFERED \"1\"\n    }}\n}}\n",
            example.program,
            example_path(example.script).display().to_string()
        );
        std::fs::write(conf.join("bench.kdl"), spec).unwrap();
        let client = Client::new(home.join("procd.sock"));
        let daemon = spawn_daemon(&conf, &home);
        let cluster = Cluster { _daemon: daemon, conf, home, client, _dir: dir };
        cluster.wait_online(instances);
        cluster
    }

    /// The instances' pids once `n` are online.
    fn wait_online(&self, n: usize) -> Vec<i32> {
        poll(&format!("{n} instance(s) online"), Duration::from_secs(20), || {
            let Ok(Response::Status(report)) = self.client.call(Request::Status { app: None, detail: false }) else {
                return None;
            };
            let inst = &report.apps.first()?.instances;
            (inst.len() == n && inst.iter().all(|i| i.status == "online"))
                .then(|| inst.iter().filter_map(|i| i.pid).collect())
        })
    }

    /// `procd reload bench`: (how long it took, exit code, stderr).
    fn reload(&self) -> (Duration, Option<i32>, String) {
        let t0 = Instant::now();
        let out = Command::new(BIN)
            .args(["reload", "bench", "--home"])
            .arg(&self.home)
            .arg("--config-dir")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .output()
            .expect("run procd reload");
        (t0.elapsed(), out.status.code(), String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    common::poll(what, timeout, Duration::from_millis(10), f)
}

/// What wrk printed.
#[derive(Debug, Default)]
struct WrkFigures {
    requests: u64,
    per_second: f64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    /// wrk's "Non-2xx or 3xx responses" (it counts statuses above 399).
    non_2xx: u64,
}

impl WrkFigures {
    fn parse(out: &str) -> WrkFigures {
        let mut f = WrkFigures::default();
        for line in out.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("Socket errors:") {
                for part in rest.split(',') {
                    let mut words = part.split_whitespace();
                    let (Some(kind), Some(n)) = (words.next(), words.next().and_then(|n| n.parse().ok())) else {
                        continue;
                    };
                    match kind {
                        "connect" => f.connect = n,
                        "read" => f.read = n,
                        "write" => f.write = n,
                        "timeout" => f.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                f.non_2xx = rest.trim().parse().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
                f.per_second = rest.trim().parse().unwrap_or(0.0);
            } else if line.contains(" requests in ") {
                f.requests = line.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
        f
    }

    fn failed(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.non_2xx
    }
}

/// Starts `wrk -t1 -c16 -dSECS` on `port`.
fn start_wrk(port: u16, secs: u64) -> Child {
    Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{secs}s"), &format!("http://127.0.0.1:{port}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wrk")
}

fn finish_wrk(wrk: Child) -> WrkFigures {
    let out = wrk.wait_with_output().expect("wait for wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let figures = WrkFigures::parse(&text);
    if figures.requests == 0 {
        eprintln!("wrk said:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    figures
}

/// Failures of the fresh-connection client, by kind.
#[derive(Debug, Default)]
struct FreshFigures {
    ok: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    non_2xx: u64,
}

impl FreshFigures {
    fn failed(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.non_2xx
    }
}

/// A client opening a new connection every 5 ms for one request, until
/// stopped: the clients a reload that closes the socket for a moment fails.
struct FreshClient {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<FreshFigures>,
}

impl FreshClient {
    fn start(port: u16) -> FreshClient {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let thread = std::thread::spawn(move || {
            let mut figures = FreshFigures::default();
            while !stop2.load(Ordering::Relaxed) {
                let started = Instant::now();
                fresh_request(addr, &mut figures);
                std::thread::sleep(Duration::from_millis(5).saturating_sub(started.elapsed()));
            }
            figures
        });
        FreshClient { stop, thread }
    }

    fn finish(self) -> FreshFigures {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("fresh client")
    }
}

fn fresh_request(addr: SocketAddr, figures: &mut FreshFigures) {
    let timeout = Duration::from_secs(2);
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if timed_out(&e) => return figures.timeout += 1,
        Err(_) => return figures.connect += 1,
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    match stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") {
        Err(e) if timed_out(&e) => return figures.timeout += 1,
        Err(_) => return figures.write += 1,
        Ok(()) => {}
    }
    // The server closes after answering (`Connection: close`).
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Err(e) if timed_out(&e) => figures.timeout += 1,
        Err(_) => figures.read += 1,
        Ok(_) if answer.is_empty() => figures.read += 1,
        Ok(_) if answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2") => figures.ok += 1,
        Ok(_) => figures.non_2xx += 1,
    }
}

/// Two instances under wrk for 10 s while `procd reload` runs three times.
fn reload_under_wrk(example: &Example) {
    let port = free_port();
    let cluster = Cluster::start(example, port, 2);
    let first = cluster.wait_online(2);
    let fresh = FreshClient::start(port);
    let wrk = start_wrk(port, 10);
    let t0 = Instant::now();
    let mut reloads = Vec::new();
    for at in RELOADS_AT {
        std::thread::sleep(at.saturating_sub(t0.elapsed()));
        reloads.push(cluster.reload());
    }
    let figures = finish_wrk(wrk);
    let fresh = fresh.finish();
    let last = cluster.wait_online(2);

    println!("{} ({}), 2 instances, wrk -t1 -c16 -d10s, procd reload x3:", example.script, example.program);
    println!(
        "  wrk: {} requests, {:.0} requests/s; failed {}: connect {}, read {}, write {}, timeout {}, non-2xx {}",
        figures.requests,
        figures.per_second,
        figures.failed(),
        figures.connect,
        figures.read,
        figures.write,
        figures.timeout,
        figures.non_2xx
    );
    println!(
        "  fresh connection every 5 ms: {} ok, failed {}: connect {}, read {}, write {}, timeout {}, non-2xx {}",
        fresh.ok,
        fresh.failed(),
        fresh.connect,
        fresh.read,
        fresh.write,
        fresh.timeout,
        fresh.non_2xx
    );
    for (i, (took, code, stderr)) in reloads.iter().enumerate() {
        let code = code.map_or("killed".to_string(), |c| c.to_string());
        let said = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
        println!("  reload {}: exit {code} in {:.0} ms{said}", i + 1, took.as_secs_f64() * 1000.0);
    }
    println!("  pids before {first:?}, after {last:?}");
    drop(cluster);
}

/// Requests per second of one instance on procd's passed socket.
fn one_instance_via_procd(example: &Example) -> f64 {
    let port = free_port();
    let cluster = Cluster::start(example, port, 1);
    let figures = finish_wrk(start_wrk(port, 5));
    drop(cluster);
    figures.per_second
}

/// Requests per second of the example run directly, binding PORT itself.
fn one_instance_self_bound(example: &Example, dir: &Path) -> f64 {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{}.log", example.script))).unwrap();
    let mut child = Command::new(example.program)
        .arg(example_path(example.script))
        .env("PORT", port.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the example");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    poll("the example to listen", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    let figures = finish_wrk(start_wrk(port, 5));
    // SIGINT, the examples' graceful stop; SIGKILL if it does not come.
    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    figures.per_second
}

fn main() {
    if !installed("wrk") {
        println!("reload bench: `wrk` is not installed (apt-get install wrk); nothing to measure");
        return;
    }
    let examples: Vec<&Example> = EXAMPLES
        .iter()
        .filter(|e| {
            let there = installed(e.program);
            if !there {
                println!("reload bench: `{}` is not installed; skipping {}", e.program, e.script);
            }
            there
        })
        .collect();
    for example in &examples {
        reload_under_wrk(example);
    }
    let dir = tempfile::tempdir().unwrap();
    println!(
        "one instance, wrk -t1 -c16 -d5s, socket passed by procd vs bound by the app itself \
         (median of {COMPARE_ROUNDS} alternating runs):"
    );
    for example in &examples {
        let (mut passed, mut own) = (Vec::new(), Vec::new());
        for _ in 0..COMPARE_ROUNDS {
            passed.push(one_instance_via_procd(example));
            own.push(one_instance_self_bound(example, dir.path()));
        }
        let runs = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
        let (runs_passed, runs_own) = (runs(&passed), runs(&own));
        let (passed, own) = (median(passed), median(own));
        println!(
            "  {}: {passed:.0} requests/s on procd's socket ({runs_passed}), {own:.0} on its own ({runs_own}): {:+.1}%",
            example.script,
            (passed / own - 1.0) * 100.0
        );
    }
}
