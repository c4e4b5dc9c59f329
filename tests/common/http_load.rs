//! A small HTTP/1.1 load client over std `TcpStream`, for the tests and
//! benchmarks of zero-downtime reload: K keep-alive connections sharing N
//! requests, plus a client opening a fresh connection every few
//! milliseconds (the clients PM2's reload still fails), every failure
//! counted by kind.
//!
//! A request on a *reused* keep-alive connection that fails before any byte
//! of the answer is retried once on a new connection, as HTTP clients do
//! for idempotent requests (RFC 9112 §9.3.1): the server may close an idle
//! connection just as the client sends. Such retries are counted apart
//! (`retried`), so a report shows them; they are not failures.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub addr: SocketAddr,
    /// Requests in total over the keep-alive connections.
    pub requests: usize,
    /// Keep-alive connections (threads) sharing `requests`.
    pub connections: usize,
    /// The fresh-connection client opens one connection per request at this
    /// interval while the keep-alive clients run; `None` for no such client.
    pub fresh_every: Option<Duration>,
    /// Per-operation timeout (connect, read, write).
    pub timeout: Duration,
    /// A pause after each keep-alive request, to spread a run over time;
    /// `None` runs flat out.
    pub pace: Option<Duration>,
}

impl LoadPlan {
    pub fn new(addr: SocketAddr) -> LoadPlan {
        LoadPlan {
            addr,
            requests: 500,
            connections: 4,
            fresh_every: Some(Duration::from_millis(5)),
            timeout: Duration::from_secs(5),
            pace: None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    Connect,
    Read,
    Write,
    Timeout,
    /// An answer that is not 2xx, or not HTTP.
    Status,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: usize,
    /// Of `ok`, the requests made on fresh connections.
    pub fresh_ok: usize,
    pub failures: BTreeMap<FailureKind, usize>,
    /// Requests retried on a new connection after a reused one was closed.
    pub retried: usize,
    /// The first few failures, described.
    pub samples: Vec<String>,
    /// Answers per server (the `pid N` in the body), to see who served.
    pub by_server: BTreeMap<String, usize>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    fn fail(&mut self, kind: FailureKind, what: String) {
        *self.failures.entry(kind).or_default() += 1;
        if self.samples.len() < 10 {
            self.samples.push(what);
        }
    }

    /// Adds `other`'s counts to these (not its `elapsed`: merged reports
    /// may have run side by side).
    pub fn merge(&mut self, other: LoadReport) {
        self.ok += other.ok;
        self.fresh_ok += other.fresh_ok;
        self.retried += other.retried;
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        for sample in other.samples {
            if self.samples.len() < 10 {
                self.samples.push(sample);
            }
        }
        for (server, n) in other.by_server {
            *self.by_server.entry(server).or_default() += n;
        }
    }
}

/// A load running in the background.
pub struct Load {
    /// Requests finished so far (ok or not), to act at a point of the run.
    pub done: Arc<AtomicUsize>,
    started: Instant,
    keep_alive: Vec<JoinHandle<LoadReport>>,
    fresh: Option<JoinHandle<LoadReport>>,
    stop_fresh: Arc<AtomicBool>,
}

impl Load {
    pub fn start(plan: LoadPlan) -> Load {
        let done = Arc::new(AtomicUsize::new(0));
        let stop_fresh = Arc::new(AtomicBool::new(false));
        let next = Arc::new(Mutex::new(plan.requests));
        let keep_alive = (0..plan.connections.max(1))
            .map(|_| {
                let (plan, done, next) = (plan.clone(), done.clone(), next.clone());
                std::thread::spawn(move || keep_alive_client(&plan, &next, &done))
            })
            .collect();
        let fresh = plan.fresh_every.map(|every| {
            let (plan, done, stop) = (plan.clone(), done.clone(), stop_fresh.clone());
            std::thread::spawn(move || fresh_client(&plan, every, &stop, &done))
        });
        Load { done, started: Instant::now(), keep_alive, fresh, stop_fresh }
    }

    /// Waits until `n` requests are done or `within` has passed.
    pub fn wait_done(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.done.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Waits for the keep-alive clients, then stops the fresh one.
    pub fn join(self) -> LoadReport {
        let mut report = LoadReport::default();
        for handle in self.keep_alive {
            report.merge(handle.join().expect("load thread"));
        }
        self.stop_fresh.store(true, Ordering::Relaxed);
        if let Some(handle) = self.fresh {
            report.merge(handle.join().expect("fresh thread"));
        }
        report.elapsed = self.started.elapsed();
        report
    }
}

/// Runs `plan` to the end.
pub fn run(plan: LoadPlan) -> LoadReport {
    Load::start(plan).join()
}

fn take_one(next: &Mutex<usize>) -> bool {
    let mut left = next.lock().expect("counter");
    if *left == 0 {
        return false;
    }
    *left -= 1;
    true
}

fn keep_alive_client(plan: &LoadPlan, next: &Mutex<usize>, done: &AtomicUsize) -> LoadReport {
    let mut report = LoadReport::default();
    let mut conn: Option<TcpStream> = None;
    while take_one(next) {
        let reused = conn.is_some();
        let mut result = request(plan, &mut conn, false);
        if let Err((FailureKind::Read | FailureKind::Write, _, false)) = &result
            && reused
        {
            // Closed by the server before it answered: retry once, fresh.
            report.retried += 1;
            conn = None;
            result = request(plan, &mut conn, false);
        }
        record(&mut report, result, false);
        done.fetch_add(1, Ordering::Relaxed);
        if let Some(pace) = plan.pace {
            std::thread::sleep(pace);
        }
    }
    report
}

fn fresh_client(plan: &LoadPlan, every: Duration, stop: &AtomicBool, done: &AtomicUsize) -> LoadReport {
    let mut report = LoadReport::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = request(plan, &mut None, true);
        record(&mut report, result, true);
        done.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
    report
}

/// A failure: its kind, a description, and whether any byte of the answer
/// had arrived (then a retry would not be safe to hide).
type Failure = (FailureKind, String, bool);

fn record(report: &mut LoadReport, result: Result<String, Failure>, fresh: bool) {
    match result {
        Ok(server) => {
            report.ok += 1;
            if fresh {
                report.fresh_ok += 1;
            }
            *report.by_server.entry(server).or_default() += 1;
        }
        Err((kind, what, _)) => report.fail(kind, what),
    }
}

fn io_kind(e: &io::Error, otherwise: FailureKind) -> FailureKind {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FailureKind::Timeout,
        _ => otherwise,
    }
}

/// One GET on `conn` (connecting first if needed); leaves `conn` open for
/// the next request unless the server said `Connection: close`. Returns
/// the answering server (the body's `pid N`).
fn request(plan: &LoadPlan, conn: &mut Option<TcpStream>, close: bool) -> Result<String, Failure> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&plan.addr, plan.timeout)
            .map_err(|e| (io_kind(&e, FailureKind::Connect), format!("connect: {e}"), false))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(plan.timeout));
        let _ = stream.set_write_timeout(Some(plan.timeout));
        *conn = Some(stream);
    }
    let Some(stream) = conn.as_mut() else { unreachable!("connected above") };
    let result = exchange(stream, close);
    match &result {
        Ok((_, keep)) if *keep && !close => {}
        _ => *conn = None,
    }
    result.map(|(server, _)| server)
}

/// Writes the request and reads one answer: (server, keep-alive?).
fn exchange(stream: &mut TcpStream, close: bool) -> Result<(String, bool), Failure> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| (io_kind(&e, FailureKind::Write), format!("write: {e}"), false))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).map_err(|e| {
            (io_kind(&e, FailureKind::Read), format!("read after {} bytes: {e}", buf.len()), !buf.is_empty())
        })?;
        if n == 0 {
            return Err((FailureKind::Read, format!("EOF after {} bytes of the answer", buf.len()), !buf.is_empty()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let keep = !head.lines().any(|l| l.starts_with("connection:") && l.contains("close"));
    while buf.len() < header_end + length {
        let n =
            stream.read(&mut chunk).map_err(|e| (io_kind(&e, FailureKind::Read), format!("read body: {e}"), true))?;
        if n == 0 {
            return Err((FailureKind::Read, "EOF in the body".into(), true));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !(200..300).contains(&status) {
        return Err((FailureKind::Status, format!("status {status}"), true));
    }
    let body = String::from_utf8_lossy(&buf[header_end..header_end + length]).into_owned();
    let server = body.split("(pid ").nth(1).and_then(|s| s.split([',', ')']).next()).unwrap_or("?").to_string();
    Ok((server, keep))
}
