//! Issue #4 through the daemon: every line kept across rotations, JSON
//! lines, `procd logs` with --lines and --follow, reload-logs after an
//! external rename, and an unwritable log file that never blocks the app.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, script};

/// Every line of `base` and its rotated generations (`base.N`), oldest first.
fn all_lines(base: &Path) -> Vec<String> {
    let mut gens: Vec<(u32, PathBuf)> = Vec::new();
    let dir = base.parent().unwrap();
    let name = base.file_name().unwrap().to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if let Some(k) = n.strip_prefix(&format!("{name}.")).and_then(|k| k.parse().ok()) {
            gens.push((k, entry.path()));
        }
    }
    gens.sort_by_key(|g| std::cmp::Reverse(g.0));
    gens.push((0, base.to_path_buf()));
    gens.iter()
        .flat_map(|(_, p)| std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>())
        .collect()
}

#[test]
fn every_numbered_line_is_kept_once_in_order_across_rotations() {
    let d = Daemon::start();
    let logs = d.dir.path().join("applogs");
    let writer = script(
        d.dir.path(),
        "numbers.py",
        "import sys\nfor i in range(200000):\n    sys.stdout.write('out %d\\n' % i)\n    sys.stderr.write('err %d\\n' % i)\n",
    );
    d.write(
        "n.kdl",
        &format!(
            "app \"n\" {{\n    run \"python3\" \"{}\"\n    restart \"never\"\n    logs {{\n        out \"{o}/n.out\"\n        err \"{o}/n.err\"\n        rotate size=\"256K\" keep=100\n    }}\n}}\n",
            writer.display(),
            o = logs.display()
        ),
    );
    d.wait_until("all lines on disk", Duration::from_secs(60), || {
        all_lines(&logs.join("n.out")).len() == 200_000 && all_lines(&logs.join("n.err")).len() == 200_000
    });
    for stream in ["out", "err"] {
        let lines = all_lines(&logs.join(format!("n.{stream}")));
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line, &format!("{stream} {i}"), "line {i} of {stream}");
        }
    }
    let rotated = std::fs::read_dir(&logs).unwrap().count();
    assert!(rotated > 4, "rotation happened ({rotated} files)");
}

#[test]
fn json_lines_carry_their_fields_and_logs_reads_and_follows() {
    let d = Daemon::start();
    let ticker = script(
        d.dir.path(),
        "tick.sh",
        "#!/bin/sh\ni=0\nwhile true; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done\n",
    );
    d.write("j.kdl", &format!("app \"j\" {{\n    run \"{}\"\n    logs {{ format \"json\"; }}\n}}\n", ticker.display()));
    d.wait_online("j", 1);
    d.wait_until("ten lines", Duration::from_secs(10), || d.ok(&["logs", "j", "--lines", "10"]).lines().count() == 10);
    // Both streams: each line is labelled with its app and stream.
    assert!(d.ok(&["logs", "j", "--lines", "1"]).starts_with("j out | "));
    let last = d.ok(&["logs", "j", "--out", "--lines", "3"]);
    let lines: Vec<&str> = last.lines().collect();
    assert_eq!(lines.len(), 3, "{last}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["app"], "j");
        assert_eq!(v["instance"], 0);
        assert_eq!(v["type"], "out");
        assert!(v["message"].as_str().unwrap().starts_with("tick "));
        assert!(v["timestamp"].as_str().unwrap().contains('T'));
    }

    // --follow prints lines written after it started.
    let mut follow = Command::new(common::BIN)
        .arg("--home")
        .arg(&d.home)
        .args(["logs", "j", "--lines", "0", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("tick "), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn reload_logs_after_an_external_rename_writes_a_fresh_file() {
    let d = Daemon::start();
    d.write("t.kdl", "app \"t\" {\n    run \"sh\" \"-c\" \"while true; do echo line; sleep 0.02; done\"\n}\n");
    d.wait_online("t", 1);
    let out = d.home.join("logs/t-out.log");
    d.wait_until("log written", Duration::from_secs(10), || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0));
    let moved = d.home.join("logs/t-out.log.old");
    std::fs::rename(&out, &moved).unwrap();
    d.ok(&["reload-logs"]);
    d.wait_until("fresh file", Duration::from_secs(10), || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0));
    let frozen = std::fs::metadata(&moved).unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), frozen, "nothing more goes to the moved file");
    d.ok(&["flush", "t"]);
    assert!(std::fs::metadata(&out).unwrap().len() < 200, "flush truncated");
}

#[test]
fn an_unwritable_log_file_is_reported_and_never_blocks_the_app() {
    let d = Daemon::start();
    // A regular file where a directory should be: no write can succeed,
    // even as root.
    let blocker = d.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let done = d.dir.path().join("done");
    d.write(
        "u.kdl",
        &format!(
            "app \"u\" {{\n    run \"sh\" \"-c\" \"i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; touch {}; sleep 1000\"\n    logs {{ out \"{}/out.log\"; }}\n}}\n",
            done.display(),
            blocker.display()
        ),
    );
    d.wait_until("the app finished writing", Duration::from_secs(10), || done.exists());
    d.wait_until("loss counted", Duration::from_secs(10), || {
        d.app("u").is_some_and(|a| a["instances"][0]["log_lines_lost"].as_u64() == Some(5000))
    });
    let inst = d.app("u").unwrap()["instances"][0].clone();
    assert_eq!(inst["status"], "online");
    assert!(inst["log_error"].as_str().is_some_and(|e| e.contains("not-a-dir")), "{inst}");
    assert!(d.ok(&["status"]).contains("lost 5000 log line(s)"));
}
