//! Issue #5, end to end: `procd reload` and spec changes replace the
//! instances of an app that has `listen` one at a time, under HTTP load,
//! without a failed request; a new version that exits at once stops the
//! rollout with the old instances still serving; a notify app that stops
//! sending WATCHDOG=1 is restarted.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::http_load::{self, LoadPlan, LoadReport};
use common::{Daemon, alive, script};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/apps").join(name)
}

/// A port free a moment ago on 127.0.0.1, for procd to bind.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn has(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A cluster app: `instances` copies of `run` sharing a socket on `port`,
/// ready on notify, drained by SIGINT; `generation` lands in the
/// environment, so changing it is a spec change.
fn cluster_spec(name: &str, run: &[&str], port: u16, instances: u32, generation: u32) -> String {
    let run: Vec<String> = run.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "app {name:?} {{\n    run {}\n    instances {instances}\n    listen \"tcp://127.0.0.1:{port}\" name=\"http\"\n    \
         ready \"notify\" timeout=\"3s\"\n    stop signal=\"SIGINT\" timeout=\"5s\"\n    \
         env {{\n        PYTHONUNBUFFERED \"1\"\n        GENERATION \"{generation}\"\n    }}\n}}\n",
        run.join(" ")
    )
}

/// The app's `rollout` field: set only while a rollout is aborted.
fn rollout(d: &Daemon, name: &str) -> Option<String> {
    d.app(name).and_then(|a| a.get("rollout").and_then(|r| r.as_str().map(str::to_owned)))
}

/// `GENERATION` in a process's environment.
fn generation_of(pid: i64) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"GENERATION="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The load client in back-to-back rounds until stopped, so it covers
/// however long the reloads take; the rounds' reports summed. Who served
/// is published after each round, so a test can wait for a new instance
/// to have answered.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    /// Requests of the finished rounds, ok or not.
    done: Arc<AtomicUsize>,
    served: Arc<Mutex<BTreeSet<String>>>,
    thread: JoinHandle<LoadReport>,
}

impl SteadyLoad {
    fn start(port: u16) -> SteadyLoad {
        let plan = LoadPlan {
            requests: 300,
            connections: 3,
            fresh_every: Some(Duration::from_millis(4)),
            pace: Some(Duration::from_millis(2)),
            ..LoadPlan::new(([127, 0, 0, 1], port).into())
        };
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop2, done2, served2) = (stop.clone(), done.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            let mut total = LoadReport::default();
            while !stop2.load(Ordering::Relaxed) {
                let round = http_load::run(plan.clone());
                served2.lock().unwrap().extend(round.by_server.keys().cloned());
                done2.fetch_add(round.ok + round.failed(), Ordering::Relaxed);
                // Rounds run one after the other: their times add up.
                total.elapsed += round.elapsed;
                total.merge(round);
            }
            total
        });
        SteadyLoad { stop, done, served, thread }
    }

    /// True once `pid` has answered a request.
    fn served_by(&self, pid: i64) -> bool {
        self.served.lock().unwrap().contains(&pid.to_string())
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// Waits until `name` has `n` online instances, none of them in `old`.
fn wait_replaced(d: &Daemon, name: &str, n: usize, old: &[i64]) -> Vec<i64> {
    let mut pids = Vec::new();
    d.wait_until(&format!("every instance of {name} replaced"), Duration::from_secs(20), || {
        let Some(app) = d.app(name) else { return false };
        let inst = app["instances"].as_array().unwrap().clone();
        pids = inst.iter().filter_map(|i| i["pid"].as_i64()).collect();
        inst.len() == n && inst.iter().all(|i| i["status"] == "online") && pids.iter().all(|p| !old.contains(p))
    });
    pids
}

/// Waits until the old instances have exited (they drain on SIGINT).
fn wait_gone(d: &Daemon, pids: &[i64]) {
    d.wait_until(&format!("old instances {pids:?} exited"), Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p))
    });
}

/// `procd reload name` three times, each returning only when every old
/// instance was replaced and has exited; then a spec change, applied by
/// the daemon as the same rolling reload. Returns the last pids.
fn reload_three_times_then_change_spec(d: &Daemon, name: &str, file: &str, changed: &str) -> Vec<i64> {
    let mut old = d.wait_online(name, 2);
    for round in 1..=3 {
        let out = d.procd(&["reload", name]);
        assert!(
            out.status.success(),
            "reload {round} of {name} failed ({}): {}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            d.daemon_log()
        );
        // The command returns once the rollout finished: no waiting here.
        let app = d.app(name).unwrap();
        let inst = app["instances"].as_array().unwrap();
        let pids: Vec<i64> = inst.iter().filter_map(|i| i["pid"].as_i64()).collect();
        assert_eq!(inst.len(), 2, "reload {round} of {name}: {app}");
        assert!(inst.iter().all(|i| i["status"] == "online"), "reload {round} of {name}: {app}");
        assert!(pids.iter().all(|p| !old.contains(p)), "reload {round} of {name} left an old pid: {old:?} -> {pids:?}");
        assert_eq!(app.get("rollout").filter(|r| !r.is_null()), None, "reload {round} of {name}: {app}");
        wait_gone(d, &old);
        old = pids;
    }
    let hash = d.app(name).unwrap()["spec_hash"].clone();
    d.write(file, changed);
    d.wait_until(&format!("{name}'s new spec_hash"), Duration::from_secs(10), || {
        d.app(name).is_some_and(|a| a["spec_hash"] != hash)
    });
    let pids = wait_replaced(d, name, 2, &old);
    assert_eq!(rollout(d, name), None, "the spec change of {name} was aborted");
    for pid in &pids {
        assert_eq!(generation_of(*pid).as_deref(), Some("1"), "{name} pid {pid} runs the old spec");
    }
    wait_gone(d, &old);
    pids
}

/// Requests each app's load makes at least.
const MIN_REQUESTS: usize = 3000;

#[test]
fn reloads_and_a_spec_change_under_load_fail_no_request() {
    if !has("node") {
        eprintln!("skipping: `node` is not installed (the Node example runs under it)");
        return;
    }
    let (node_port, py_port) = (free_port(), free_port());
    let js = example("cluster.js");
    let py = example("cluster.py");
    let node_run = ["node", js.to_str().unwrap()];
    let py_run = ["python3", py.to_str().unwrap()];
    let d = Daemon::start_with(
        &[
            ("node.kdl", &cluster_spec("web-node", &node_run, node_port, 2, 0)),
            ("py.kdl", &cluster_spec("web-py", &py_run, py_port, 2, 0)),
        ],
        &[],
    );
    d.wait_online("web-node", 2);
    d.wait_online("web-py", 2);

    let loads = [("web-node", SteadyLoad::start(node_port)), ("web-py", SteadyLoad::start(py_port))];
    let node = reload_three_times_then_change_spec(
        &d,
        "web-node",
        "node.kdl",
        &cluster_spec("web-node", &node_run, node_port, 2, 1),
    );
    let py =
        reload_three_times_then_change_spec(&d, "web-py", "py.kdl", &cluster_spec("web-py", &py_run, py_port, 2, 1));
    // The last instances serve through the socket they were handed; the
    // load runs on until it has made a few thousand requests in all.
    for ((name, load), pids) in loads.iter().zip([&node, &py]) {
        d.wait_until(&format!("a new {name} instance answered"), Duration::from_secs(10), || {
            pids.iter().any(|p| load.served_by(*p)) && load.done() >= MIN_REQUESTS
        });
    }

    for (name, load) in loads {
        let report = load.finish();
        eprintln!(
            "{name}: {} ok ({} on fresh connections), {} failed {:?}, {} retried on a new connection, by server {:?}",
            report.ok,
            report.fresh_ok,
            report.failed(),
            report.failures,
            report.retried,
            report.by_server
        );
        assert_eq!(report.failed(), 0, "{name}: failed requests {:?}: {:?}", report.failures, report.samples);
        assert!(report.ok >= MIN_REQUESTS && report.fresh_ok >= 100, "{name}: too little load to judge: {report:?}");
        // Ten instances lived; the kernel spreads connections unevenly over
        // the processes accepting on one socket, so not all need have served.
        assert!(report.by_server.len() >= 4, "{name}: old and new instances all served: {:?}", report.by_server);
    }
}

/// A cluster.py behind a gate: with `BREAK=1` in its environment the new
/// version exits at once, before it could be ready.
fn gated_spec(gate: &std::path::Path, port: u16, broken: bool) -> String {
    format!(
        "app \"gated\" {{\n    run {:?}\n    instances 2\n    listen \"tcp://127.0.0.1:{port}\" name=\"http\"\n    \
         ready \"notify\" timeout=\"2s\"\n    stop signal=\"SIGINT\" timeout=\"5s\"\n    \
         env {{\n        PYTHONUNBUFFERED \"1\"\n        BREAK \"{}\"\n    }}\n}}\n",
        gate.display().to_string(),
        u8::from(broken)
    )
}

#[test]
fn a_new_version_that_exits_at_once_aborts_the_rollout_and_the_old_instances_serve() {
    let port = free_port();
    let mut d = Daemon::prepare(&[]);
    // `exec` keeps the shell's pid, so LISTEN_PID still names the server.
    let gate = script(
        d.dir.path(),
        "gate.sh",
        &format!(
            "#!/bin/sh\nif [ \"$BREAK\" = 1 ]; then echo 'gate: broken version, exiting' >&2; exit 1; fi\nexec python3 {}\n",
            example("cluster.py").display()
        ),
    );
    d.write("gated.kdl", &gated_spec(&gate, port, false));
    d.spawn(&[]);
    let old = d.wait_online("gated", 2);

    d.write("gated.kdl", &gated_spec(&gate, port, true));
    let mut why = None;
    d.wait_until("the rollout of the broken version aborted", Duration::from_secs(15), || {
        why = rollout(&d, "gated");
        why.is_some()
    });
    let why = why.unwrap();
    eprintln!("rollout: {why}");
    let lower = why.to_lowercase();
    assert!(lower.contains("abort"), "the rollout field says it was aborted: {why}");
    assert!(lower.contains("exit") || lower.contains("not ready"), "the rollout field names the failure: {why}");
    assert_old_instances_serve(&d, &old, port);

    let out = d.procd(&["reload", "gated"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("procd reload gated: {} {stderr}", out.status);
    assert_eq!(out.status.code(), Some(1), "a reload of the broken version fails: {stderr}");
    assert!(!stderr.trim().is_empty(), "the failed reload says why on stderr");
    assert!(rollout(&d, "gated").is_some(), "status still says the rollout was aborted");
    assert_old_instances_serve(&d, &old, port);
}

/// The old instances are still online, with the same pids, and they alone
/// answer a run of requests without a failure.
fn assert_old_instances_serve(d: &Daemon, old: &[i64], port: u16) {
    let app = d.app("gated").unwrap();
    for pid in old {
        assert!(alive(*pid), "old instance {pid} was stopped: {app}");
        let inst = app["instances"].as_array().unwrap().iter().find(|i| i["pid"] == *pid);
        assert!(inst.is_some_and(|i| i["status"] == "online"), "old instance {pid} is not online: {app}");
    }
    let report = http_load::run(LoadPlan {
        requests: 200,
        connections: 2,
        fresh_every: Some(Duration::from_millis(3)),
        ..LoadPlan::new(([127, 0, 0, 1], port).into())
    });
    assert_eq!(report.failed(), 0, "the old instances answer: {:?} {:?}", report.failures, report.samples);
    let old: BTreeSet<String> = old.iter().map(|p| p.to_string()).collect();
    assert!(report.by_server.keys().all(|s| old.contains(s)), "only old instances answer: {:?}", report.by_server);
}

#[test]
fn a_notify_app_that_stops_sending_watchdog_is_restarted() {
    let mut d = Daemon::prepare(&[]);
    let quiet = d.dir.path().join("quiet");
    std::fs::create_dir_all(&quiet).unwrap();
    // Ready, five pings 100 ms apart, then silence while still running;
    // a file named after its pid says when it went quiet.
    let app = script(
        d.dir.path(),
        "hangs.py",
        &format!(
            r#"#!/usr/bin/env python3
import os, socket, time
path = os.environ["NOTIFY_SOCKET"]
if path.startswith("@"):
    path = "\0" + path[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", path)
for _ in range(5):
    time.sleep(0.1)
    s.sendto(b"WATCHDOG=1", path)
open(os.path.join({quiet:?}, str(os.getpid())), "w").close()
while True:
    time.sleep(60)
"#,
            quiet = quiet.display().to_string()
        ),
    );
    d.write(
        "hangs.kdl",
        &format!(
            "app \"hangs\" {{\n    run \"python3\" {:?}\n    ready \"notify\" timeout=\"3s\" watchdog=\"300ms\"\n}}\n",
            app.display().to_string()
        ),
    );
    d.spawn(&[]);
    let first = d.wait_online("hangs", 1)[0];
    let mut inst = serde_json::Value::Null;
    d.wait_until("the silent instance restarted and online again", Duration::from_secs(10), || {
        let Some(app) = d.app("hangs") else { return false };
        inst = app["instances"][0].clone();
        inst["restarts"].as_u64() >= Some(1)
            && inst["pid"].as_i64().is_some_and(|p| p != first)
            && inst["status"] == "online"
    });
    let reason = inst["last_restart_reason"].as_str().unwrap_or_default();
    assert!(reason.to_lowercase().contains("watchdog"), "the restart reason names the watchdog: {inst}");
    // Restarted for its silence, not while it was still pinging.
    assert!(quiet.join(first.to_string()).exists(), "instance {first} was restarted before it went quiet");
    d.wait_until("the hung instance was killed", Duration::from_secs(10), || !alive(first));
}

#[test]
fn an_app_that_listens_over_its_memory_limit_is_rolled_over_not_restarted() {
    let mut d = Daemon::prepare(&[]);
    let port = free_port();
    let app = script(
        d.dir.path(),
        "hog.py",
        "import os, socket, time\n\
         s = socket.socket(fileno=3)\n\
         hog = bytearray(40 * 1024 * 1024)\n\
         for i in range(0, len(hog), 4096):\n    hog[i] = 1\n\
         while True:\n    time.sleep(1)\n",
    );
    d.write(
        "hog.kdl",
        &format!(
            "app \"hog\" {{\n    run \"python3\" \"{}\"\n    listen \"tcp://127.0.0.1:{port}\"\n    \
             max-memory \"20M\" every=\"200ms\"\n    stop timeout=\"1s\"\n}}\n",
            app.display()
        ),
    );
    d.spawn(&[]);
    let first = d.wait_online("hog", 1);
    d.wait_until("hog rolled over", Duration::from_secs(15), || {
        d.app("hog").is_some_and(|a| {
            let i = &a["instances"][0];
            i["pid"].as_i64().is_some_and(|p| p != first[0]) && i["last_restart_reason"] == "rolling reload"
        })
    });
    // The replacement started before the old run was retired: one instance,
    // never zero.
    assert_eq!(d.app("hog").unwrap()["instances"].as_array().unwrap().len(), 1);
    assert!(d.daemon_log().contains("rolling it over"), "{}", d.daemon_log());
}

#[test]
fn a_port_in_use_is_an_error_in_status_not_a_crash_loop() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = format!("app \"web\" {{\n    run \"sleep\" \"1000\"\n    listen \"tcp://127.0.0.1:{port}\"\n}}\n");
    let d = Daemon::start_with(&[("web.kdl", &spec)], &[]);
    let errors = d.status()["errors"].to_string();
    assert!(errors.contains("web.kdl") && errors.contains(&port.to_string()) && errors.contains("in use"), "{errors}");
    assert!(d.app("web").is_none_or(|a| a["instances"].as_array().unwrap().is_empty()), "nothing started");
    // Once the port is free, the next reconcile binds it and starts the app.
    drop(taken);
    d.ok(&["reconcile"]);
    d.wait_online("web", 1);
    assert_eq!(d.status()["errors"].as_array().unwrap().len(), 0);
}

#[test]
fn stopping_the_daemon_mid_rollout_leaves_no_process_behind() {
    let mut d = Daemon::prepare(&[]);
    let flag = d.dir.path().join("ready-flag");
    std::fs::write(&flag, "").unwrap();
    let port = free_port();
    d.write(
        "slow.kdl",
        &format!(
            "app \"slow\" {{\n    run \"sleep\" \"1000\"\n    instances 2\n    listen \"tcp://127.0.0.1:{port}\"\n    \
             ready \"exec\" \"test\" \"-f\" \"{}\" timeout=\"20s\"\n    stop timeout=\"1s\"\n}}\n",
            flag.display()
        ),
    );
    d.spawn(&[]);
    let old = d.wait_online("slow", 2);
    // New instances will never be ready: the rollout is still waiting when
    // the daemon is told to stop.
    std::fs::remove_file(&flag).unwrap();
    let reload = std::process::Command::new(common::BIN)
        .args(["reload", "slow", "--home"])
        .arg(&d.home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reload = Guard(reload);
    d.wait_until("a replacement is starting", Duration::from_secs(10), || {
        std::fs::read_to_string(d.dir.path().join("daemon.stderr")).is_ok_and(|l| l.contains("rolling reload"))
    });
    let keeper = d.keeper_pid().unwrap();
    assert!(d.terminate().success());
    d.wait_until("keeper gone", Duration::from_secs(10), || !alive(keeper as i64));
    for pid in old {
        assert!(!alive(pid));
    }
    let _ = reload.0.wait();
}

/// Kills the child at drop if the test failed before waiting for it.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn instances_get_the_socket_on_fd_3_with_the_activation_variables() {
    let port = free_port();
    let out = std::env::temp_dir().join(format!("procd-listen-{port}"));
    let spec = format!(
        "app \"sa\" {{\n    run \"sh\" \"-c\" \"echo $$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $(readlink /proc/$$/fd/3) > {}.$PROCD_INSTANCE; exec sleep 1000\"\n    \
         instances 2\n    listen \"tcp://127.0.0.1:{port}\" name=\"web\"\n}}\n",
        out.display()
    );
    let d = Daemon::start_with(&[("sa.kdl", &spec)], &[]);
    let pids = d.wait_online("sa", 2);
    let mut inodes = BTreeSet::new();
    for i in 0..2 {
        let path = format!("{}.{i}", out.display());
        d.wait_until("the app wrote its environment", Duration::from_secs(5), || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with('\n'))
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let f: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(f[0], f[1], "LISTEN_PID is the instance's own pid: {text}");
        assert!(pids.contains(&f[0].parse().unwrap()));
        assert_eq!(&f[2..4], ["1", "web"], "{text}");
        assert!(f[4].starts_with("socket:["), "fd 3 is the socket: {text}");
        inodes.insert(f[4].to_owned());
    }
    assert_eq!(inodes.len(), 1, "both instances share one socket");
}
