//! Nothing is lost when the daemon dies or is replaced: the keeper keeps
//! every app, pipe and record, and the next daemon adopts them (issue #6).

mod common;

use std::time::Duration;

use common::{Daemon, alive, script, signal};

/// An app printing 1, 2, 3... one line per millisecond.
fn counter(d: &Daemon) -> String {
    let path = script(
        d.dir.path(),
        "counter.py",
        "import sys, time\ni = 0\nwhile True:\n    i += 1\n    sys.stdout.write(f'{i}\\n')\n    sys.stdout.flush()\n    time.sleep(0.001)\n",
    );
    format!(
        "app \"counter\" {{\n    run \"python3\" \"{}\"\n    logs {{\n        out \"{}\"\n    }}\n}}\n",
        path.display(),
        d.dir.path().join("counter.log").display()
    )
}

fn log_numbers(d: &Daemon) -> Vec<u64> {
    let text = std::fs::read_to_string(d.dir.path().join("counter.log")).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Waits until the log holds at least `n` numbers.
fn wait_logged(d: &Daemon, n: usize) {
    d.wait_until(&format!("{n} lines logged"), Duration::from_secs(20), || log_numbers(d).len() >= n);
}

/// Every number from 1 to the last one, once each, in order.
fn assert_contiguous(numbers: &[u64]) {
    assert!(!numbers.is_empty());
    for (i, n) in numbers.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "line {} holds {n}: a line was lost or written twice", i + 1);
    }
}

fn instance(d: &Daemon, app: &str) -> serde_json::Value {
    d.app(app).unwrap()["instances"][0].clone()
}

#[test]
fn kill_9_of_the_daemon_keeps_the_app_and_every_log_line() {
    let mut d = Daemon::start();
    d.write("counter.kdl", &counter(&d));
    let pid = d.wait_online("counter", 1)[0];
    let keeper = d.keeper_pid().expect("keeper pid recorded");
    // Two kills in a row, each while the app writes.
    for round in 1..=2 {
        let before = log_numbers(&d).len();
        wait_logged(&d, before + 100);
        d.kill9();
        assert!(alive(pid), "round {round}: the app died with the daemon");
        let logged = log_numbers(&d).len();
        // The app keeps writing into the pipe the keeper holds open; give
        // it time to write lines no daemon reads yet.
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(pid));
        d.spawn(&[]);
        assert_eq!(d.wait_online("counter", 1), vec![pid], "round {round}: the app was started again");
        assert_eq!(d.keeper_pid(), Some(keeper));
        // What the app wrote while no daemon ran reaches the file.
        wait_logged(&d, logged + 300);
        let inst = instance(&d, "counter");
        assert_eq!(inst["restarts"], 0);
        assert!(inst["uptime_ms"].as_u64().unwrap() >= 300, "uptime is the process's: {inst}");
    }
    d.ok(&["stop", "counter"]);
    d.wait_until("counter stopped", Duration::from_secs(10), || !alive(pid));
    assert_contiguous(&log_numbers(&d));
}

#[test]
fn update_replaces_daemon_and_keeper_without_restarting_apps() {
    let d = Daemon::start();
    d.write("counter.kdl", &counter(&d));
    d.write("sleeper.kdl", &common::sleeper("sleeper", "instances 2"));
    let pid = d.wait_online("counter", 1)[0];
    let sleepers = d.wait_online("sleeper", 2);
    let keeper = d.keeper_pid().unwrap();
    let daemon = d.daemon_pid();
    for _ in 0..2 {
        let before = log_numbers(&d).len();
        wait_logged(&d, before + 100);
        let out = d.ok(&["update"]);
        assert!(out.contains("answers after"), "{out}");
        assert_eq!(d.daemon_pid(), daemon);
        assert_eq!(d.keeper_pid(), Some(keeper), "the keeper re-executes in place");
        assert_eq!(d.wait_online("counter", 1), vec![pid]);
        assert_eq!(d.wait_online("sleeper", 2), sleepers);
        assert!(std::fs::read_link(format!("/proc/{keeper}/exe")).is_ok());
    }
    let logged = log_numbers(&d).len();
    wait_logged(&d, logged + 100);
    d.ok(&["stop", "counter"]);
    d.wait_until("counter stopped", Duration::from_secs(10), || !alive(pid));
    assert_contiguous(&log_numbers(&d));
    assert_eq!(instance(&d, "sleeper")["restarts"], 0);
}

#[test]
fn a_crash_while_no_daemon_runs_is_handled_when_it_returns() {
    let mut d = Daemon::start_with(&[("s.kdl", &common::sleeper("s", ""))], &[]);
    let pid = d.wait_online("s", 1)[0];
    d.kill9();
    signal(pid as i32, "KILL");
    // The keeper reaps it and keeps the status for the next daemon.
    d.wait_until("app gone", Duration::from_secs(5), || !alive(pid));
    d.spawn(&[]);
    let new = d.wait_online("s", 1)[0];
    assert_ne!(new, pid);
    let inst = instance(&d, "s");
    assert_eq!(inst["restarts"], 1, "{inst}");
    assert_eq!(inst["last_exit"]["signal"], "SIGKILL", "{inst}");
}

#[test]
fn errored_and_stopped_states_survive_a_daemon_kill() {
    let failing = "app \"bad\" {\n    run \"false\"\n    restart \"always\" {\n        max-restarts 2 min-uptime=\"5s\"\n    }\n}\n";
    let mut d = Daemon::start_with(&[("bad.kdl", failing), ("s.kdl", &common::sleeper("s", ""))], &[]);
    d.wait_until("bad errored", Duration::from_secs(10), || instance(&d, "bad")["status"] == "errored");
    let restarts = instance(&d, "bad")["restarts"].clone();
    let pid = d.wait_online("s", 1)[0];
    d.ok(&["stop", "s"]);
    d.wait_until("s stopped", Duration::from_secs(10), || !alive(pid));
    d.kill9();
    d.spawn(&[]);
    let bad = instance(&d, "bad");
    assert_eq!(bad["status"], "errored", "{bad}");
    assert_eq!(bad["restarts"], restarts);
    assert_eq!(instance(&d, "s")["status"], "stopped");
}

#[test]
fn an_app_removed_while_no_daemon_runs_is_stopped_on_return() {
    let mut d = Daemon::start_with(&[("s.kdl", &common::sleeper("s", "")), ("t.kdl", &common::sleeper("t", ""))], &[]);
    let s = d.wait_online("s", 1)[0];
    let t = d.wait_online("t", 1)[0];
    d.kill9();
    d.remove("s.kdl");
    d.spawn(&[]);
    d.wait_until("removed app stopped", Duration::from_secs(10), || !alive(s));
    assert!(d.app("s").is_none());
    assert_eq!(d.wait_online("t", 1), vec![t]);
}

#[test]
fn keep_apps_leaves_them_running_for_the_next_daemon() {
    let mut d = Daemon::start_with(&[("s.kdl", &common::sleeper("s", ""))], &["--keep-apps"]);
    let pid = d.wait_online("s", 1)[0];
    let status = d.terminate();
    assert!(status.success());
    assert!(alive(pid), "--keep-apps: SIGTERM ends the daemon only");
    d.spawn(&[]);
    assert_eq!(d.wait_online("s", 1), vec![pid]);
    // Without --keep-apps, SIGTERM stops apps and the keeper exits.
    let keeper = d.keeper_pid().unwrap();
    assert!(d.terminate().success());
    d.wait_until("keeper exits", Duration::from_secs(10), || !alive(keeper as i64));
    assert!(!alive(pid));
}

#[test]
fn under_systemd_the_daemon_notifies_ready_and_pings_the_watchdog() {
    let mut d = Daemon::prepare(&[("s.kdl", &common::sleeper("s", ""))]);
    let socket_path = d.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path = socket_path.to_str().unwrap().to_owned();
    d.spawn_env(&[], &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")]);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !(got.iter().any(|m| m == "READY=1") && got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2) {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // Ready only once the first reconcile ran: the app is already there.
    assert!(d.app("s").is_some());
    // The apps do not see the daemon's notify socket.
    let env = d.ok(&["env", "s"]);
    assert!(!env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_USEC"), "{env}");
    d.terminate();
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING=1 before the daemon exits");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
}

#[test]
fn a_lost_keeper_is_replaced_and_its_apps_started_once_again() {
    let d = Daemon::start_with(&[("s.kdl", &common::sleeper("s", "instances 2"))], &[]);
    let old = d.wait_online("s", 2);
    let keeper = d.keeper_pid().unwrap();
    signal(keeper, "KILL");
    // The daemon re-executes, starts a new keeper, stops what the lost one
    // ran (by cgroup) and starts the instances once.
    d.wait_until("a new keeper", Duration::from_secs(10), || d.keeper_pid().is_some_and(|k| k != keeper));
    d.wait_until("old instances stopped", Duration::from_secs(10), || old.iter().all(|p| !alive(*p)));
    let new = d.wait_online("s", 2);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} -> {new:?}");
    assert!(d.daemon_log().contains("lost the keeper"));
}

#[test]
fn an_unreadable_state_file_still_starts_every_declared_app() {
    // As after a bad reboot: the operator state is garbage; conf.d is the
    // source of truth, so every declared app starts and the error is logged.
    let mut d = Daemon::prepare(&[("s.kdl", &common::sleeper("s", "")), ("t.kdl", &common::sleeper("t", ""))]);
    std::fs::create_dir_all(d.home.join("state")).unwrap();
    std::fs::write(d.home.join("state/state.json"), "{\"version\":1,\"stopped\":[\"s\"").unwrap();
    d.spawn(&[]);
    d.wait_online("s", 1);
    d.wait_online("t", 1);
    assert!(d.daemon_log().contains("state.json"), "{}", d.daemon_log());
}

#[test]
fn a_listen_address_taken_while_no_daemon_runs_does_not_stop_the_adopted_instances() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spec = |extra: &str| {
        format!("app \"web\" {{\n    run \"sleep\" \"1000\"\n    listen \"tcp://127.0.0.1:{port}\"\n{extra}}}\n")
    };
    let mut d = Daemon::start_with(&[("web.kdl", &spec(""))], &[]);
    let pid = d.wait_online("web", 1)[0];
    d.kill9();
    // A second address, already in use, is added while no daemon runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!("    listen \"tcp://127.0.0.1:{}\"\n", taken.local_addr().unwrap().port());
    d.write("web.kdl", &spec(&extra));
    d.spawn(&[]);
    assert_eq!(d.wait_online("web", 1), vec![pid], "the adopted instance keeps running");
    let errors = d.status()["errors"].to_string();
    assert!(errors.contains("in use"), "{errors}");
    drop(taken);
}

#[test]
fn a_line_written_in_part_across_an_update_is_split_not_lost() {
    let d = Daemon::start();
    let gate = d.dir.path().join("gate");
    let log = d.dir.path().join("partial.log");
    d.write(
        "p.kdl",
        &format!(
            "app \"p\" {{\n    run \"sh\" \"-c\" \"printf 'ready\\\\npartial'; while [ ! -f {} ]; do sleep 0.01; done; printf ' rest\\\\n'; exec sleep 1000\"\n    logs {{\n        out \"{}\"\n    }}\n}}\n",
            gate.display(),
            log.display()
        ),
    );
    let pid = d.wait_online("p", 1)[0];
    // "ready" and "partial" came in one read: once "ready" is in the file,
    // "partial" waits in the daemon's buffer.
    d.wait_until("first line logged", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ready\n"))
    });
    d.ok(&["update"]);
    std::fs::write(&gate, "").unwrap();
    d.wait_until("the rest logged", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" rest"))
    });
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ready\npartial\n rest\n");
    assert_eq!(d.wait_online("p", 1), vec![pid]);
}
