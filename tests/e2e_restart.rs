//! Issue #3: restart policies with PM2's exact semantics, max-restarts and
//! errored, the memory threshold, with real processes and short durations.

mod common;

use std::time::Duration;

use common::{Daemon, script};

/// Start times (ms since the epoch) an app records on each run.
fn starts(path: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn backoff_delays_follow_pm2s_sequence() {
    let d = Daemon::start();
    let log = d.dir.path().join("starts");
    // sh and date start in a millisecond or two, so the gaps are the delays.
    d.write(
        "c.kdl",
        &format!(
            "app \"c\" {{\n    run \"sh\" \"-c\" \"date +%s%3N >> {}; exit 1\"\n    restart {{\n        backoff initial=\"100ms\" factor=1.5 max=\"15s\"\n        max-restarts 100\n    }}\n}}\n",
            log.display()
        ),
    );
    d.wait_until("7 runs", Duration::from_secs(20), || starts(&log).len() >= 7);
    let t = starts(&log);
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the delay plus the python run and the respawn; the delay
    // part must match exactly, the rest is bounded.
    let want = [100.0, 150.0, 225.0, 337.0, 505.0, 757.0];
    for (i, (gap, want)) in gaps.iter().zip(want).enumerate() {
        assert!(*gap >= want && *gap < want + 60.0, "gap {i}: {gap:.0} ms, want {want} ms (+run time); all: {gaps:?}");
    }
    let app = d.app("c").unwrap();
    let inst = &app["instances"][0];
    assert_eq!(inst["last_restart_reason"], "exit code 1");
    if inst["status"] == "waiting-restart" {
        assert!(inst["restart_in_ms"].as_u64().is_some(), "{inst}");
    }
}

#[test]
fn max_restarts_within_min_uptime_ends_errored_until_started_or_reset() {
    let d = Daemon::start();
    d.write(
        "e.kdl",
        "app \"e\" {\n    run \"sh\" \"-c\" \"exit 2\"\n    restart { max-restarts 3 min-uptime=\"1s\"; }\n}\n",
    );
    d.wait_until("errored", Duration::from_secs(10), || {
        d.app("e").is_some_and(|a| a["instances"][0]["status"] == "errored")
    });
    let app = d.app("e").unwrap();
    assert_eq!(app["state"], "errored");
    assert_eq!(app["instances"][0]["restarts"], 2);
    assert_eq!(app["instances"][0]["last_exit"]["code"], 2);
    // Left alone: still errored a moment later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.app("e").unwrap()["instances"][0]["status"], "errored");
    d.ok(&["reset", "e"]);
    assert_eq!(d.app("e").unwrap()["instances"][0]["restarts"], 0);
    // An operator start runs it again (and it errors again).
    let _ = d.procd(&["start", "e"]);
    d.wait_until("restarted by the operator", Duration::from_secs(10), || {
        d.app("e").is_some_and(|a| a["instances"][0]["restarts"].as_u64() >= Some(1))
    });
}

#[test]
fn waiting_restart_says_when() {
    let d = Daemon::start_with(
        &[("w.kdl", "app \"w\" {\n    run \"sh\" \"-c\" \"exit 1\"\n    restart { delay \"5s\"; }\n}\n")],
        &[],
    );
    d.wait_until("waiting", Duration::from_secs(10), || {
        d.app("w").is_some_and(|a| a["instances"][0]["status"] == "waiting-restart")
    });
    let inst = d.app("w").unwrap()["instances"][0].clone();
    let left = inst["restart_in_ms"].as_u64().unwrap();
    assert!(left > 3000 && left <= 5000, "{inst}");
    assert!(d.ok(&["status"]).contains("waiting-restart ("));
    // A stop cancels the pending restart.
    d.ok(&["stop", "w"]);
    assert_eq!(d.app("w").unwrap()["instances"][0]["status"], "stopped");
}

#[test]
fn a_memory_hog_is_restarted_soon_after_crossing_its_limit() {
    let d = Daemon::start();
    let crossed = d.dir.path().join("crossed");
    let hog = script(
        d.dir.path(),
        "hog.py",
        &format!(
            // It records when its own resident memory (what procd measures)
            // first passes the limit.
            "import os, time\nchunks = []\nwhile True:\n    chunks.append(bytearray(4 * 1024 * 1024))\n    rss = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n    if rss > 64 * 1024 * 1024:\n        open('{}', 'a').write('%f\\n' % (time.time() * 1000))\n    time.sleep(0.05)\n",
            crossed.display()
        ),
    );
    d.write(
        "hog.kdl",
        &format!("app \"hog\" {{\n    run \"python3\" \"{}\"\n    max-memory \"64M\"\n}}\n", hog.display()),
    );
    let first = d.wait_online("hog", 1)[0];
    d.wait_until("hog restarted", Duration::from_secs(15), || {
        d.app("hog").is_some_and(|a| a["instances"][0]["pid"].as_i64().is_some_and(|p| p != first))
    });
    let restarted_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
    let crossed_at = starts(&crossed)[0];
    assert!(restarted_at - crossed_at < 2000.0, "restart {:.0} ms after crossing", restarted_at - crossed_at);
    let reason = d.app("hog").unwrap()["instances"][0]["last_restart_reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("memory ") && reason.ends_with("over the 64.0M limit"), "{reason}");
}

#[test]
fn a_memory_check_never_starts_a_stopped_app() {
    let d = Daemon::start_with(
        &[("m.kdl", "app \"m\" {\n    run \"sleep\" \"1000\"\n    max-memory \"1K\" every=\"100ms\"\n}\n")],
        &[],
    );
    d.wait_until("restarted for memory", Duration::from_secs(10), || {
        d.app("m").is_some_and(|a| a["instances"][0]["restarts"].as_u64() >= Some(1))
    });
    d.ok(&["stop", "m"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.app("m").unwrap()["instances"][0]["status"], "stopped");
}
