//! Log capture with real writer processes (python3), no daemon: each test
//! spawns a writer, hands its pipes to `LogHub::attach` on a current-thread
//! runtime and checks the files. Waits poll with deadlines; writers are
//! killed on drop.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procd::logs::rotate::{gz_path, rotated_path};
use procd::logs::{LogHub, tail};
use procd::spec::model::{LogFormat, LogSpec, RotateSpec};

/// Kills and reaps the writer if a test fails half-way.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Writer {
    fn spawn(script: &str) -> (Writer, OwnedFd, OwnedFd) {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = child.stdout.take().unwrap().into();
        let err = child.stderr.take().unwrap().into();
        (Writer(child), out, err)
    }

    /// Waits (polling, with a deadline) for the writer to exit successfully.
    fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "writer failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "writer did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Polls `cond` every 20 ms until it holds, failing after 20 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `script` to completion with its output attached to `hub`.
fn run(hub: &LogHub, app: &str, index: u32, spec: &LogSpec, script: &str) {
    let (writer, out, err) = Writer::spawn(script);
    runtime().block_on(async {
        let pumps = hub.attach(app, index, spec, out, err);
        tokio::time::timeout(Duration::from_secs(60), pumps).await.expect("pumps hung").unwrap();
    });
    writer.finish();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The content of `path` and its plain rotated generations, oldest first.
fn all_generations(path: &Path) -> String {
    let mut text = String::new();
    for n in (1..=1000).rev() {
        text.push_str(&read(&rotated_path(path, n)));
    }
    text + &read(path)
}

/// Writes `N` numbered lines to both streams in odd-sized chunks, so lines
/// are split across writes.
fn numbered_script(n: u32) -> String {
    format!(
        r#"
import os
def put(fd, data):
    while data:
        data = data[os.write(fd, data):]
out = "".join(f"out {{i}}\n" for i in range({n})).encode()
err = "".join(f"err {{i}}\n" for i in range({n})).encode()
o = e = 0
while o < len(out) or e < len(err):
    put(1, out[o:o+7777]); o += 7777
    put(2, err[e:e+5555]); e += 5555
"#
    )
}

fn numbers(text: &str, prefix: &str) -> Vec<u32> {
    text.lines().map(|l| l.strip_prefix(prefix).and_then(|n| n.parse().ok()).expect(l)).collect()
}

fn rotating(size: u64, keep: u32, compress: bool) -> LogSpec {
    LogSpec { rotate: Some(RotateSpec { size, keep, compress }), ..LogSpec::default() }
}

#[test]
fn every_line_kept_once_in_order_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let spec = rotating(256 * 1024, 100, false);
    run(&hub, "num", 0, &spec, &numbered_script(200_000));
    let paths = hub.paths("num", 0, &spec);
    for (path, prefix) in [(paths.out.unwrap(), "out "), (paths.err.unwrap(), "err ")] {
        assert!(rotated_path(&path, 5).exists(), "rotation happened");
        for n in 1..=5 {
            assert!(fs::metadata(rotated_path(&path, n)).unwrap().len() <= 256 * 1024);
        }
        assert_eq!(numbers(&all_generations(&path), prefix), (0..200_000).collect::<Vec<_>>());
    }
}

#[test]
fn keep_drops_the_oldest_generations() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let spec = rotating(64 * 1024, 2, false);
    run(&hub, "keep", 0, &spec, &numbered_script(50_000));
    let out = hub.paths("keep", 0, &spec).out.unwrap();
    assert!(rotated_path(&out, 2).exists());
    assert!(!rotated_path(&out, 3).exists());
    let kept = numbers(&all_generations(&out), "out ");
    assert_eq!(*kept.last().unwrap(), 49_999);
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "a contiguous suffix");
    assert!(kept[0] > 0);
}

#[test]
fn compressed_generations_hold_every_line_and_tail_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let spec = rotating(64 * 1024, 1000, true);
    run(&hub, "gz", 0, &spec, &numbered_script(50_000));
    let out = hub.paths("gz", 0, &spec).out.unwrap();
    runtime().block_on(until("compression of every generation", || {
        !rotated_path(&out, 1).exists()
            && gz_path(&rotated_path(&out, 1)).exists()
            && (1..100).all(|n| !rotated_path(&out, n).exists())
    }));
    let files = [("gz".to_string(), out.clone())];
    let lines = tail::last_lines(&files, 100_000).unwrap();
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert_eq!(numbers(&text, "out "), (0..50_000).collect::<Vec<_>>());
}

#[test]
fn split_partial_and_overlong_lines_are_written_whole_or_cut_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let script = r#"
import sys, time
sys.stdout.write("hello wo"); sys.stdout.flush(); time.sleep(0.2)
sys.stdout.write("rld\n"); sys.stdout.flush()
sys.stdout.write("x" * 200000 + "\n")
sys.stdout.write("no newline at the end"); sys.stdout.flush()
"#;
    run(&hub, "split", 0, &LogSpec::default(), script);
    let text = read(&dir.path().join("split-out.log"));
    let lines: Vec<&str> = text.lines().collect();
    let max = procd::logs::lines::MAX_LINE;
    assert_eq!(lines[0], "hello world");
    let xs: Vec<usize> = lines[1..lines.len() - 1].iter().map(|l| l.len()).collect();
    assert_eq!(xs, [max, max, max, 200_000 - 3 * max]);
    assert_eq!(lines.last().unwrap(), &"no newline at the end");
    assert!(text.ends_with('\n'));
}

#[test]
fn json_lines_parse_and_carry_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let spec = LogSpec { format: LogFormat::Json, ..LogSpec::default() };
    let script = r#"import sys; print("to \"out\""); print("to err", file=sys.stderr)"#;
    run(&hub, "js", 1, &spec, script);
    let out: serde_json::Value = serde_json::from_str(read(&dir.path().join("js-out-1.log")).trim()).unwrap();
    assert_eq!(out["message"], "to \"out\"");
    assert_eq!(out["type"], "out");
    assert_eq!((out["app"].as_str(), out["app_name"].as_str()), (Some("js"), Some("js")));
    assert_eq!((out["instance"].as_u64(), out["process_id"].as_u64()), (Some(1), Some(1)));
    assert!(chrono::DateTime::parse_from_rfc3339(out["timestamp"].as_str().unwrap()).is_ok());
    let err: serde_json::Value = serde_json::from_str(read(&dir.path().join("js-err-1.log")).trim()).unwrap();
    assert_eq!((err["type"].as_str(), err["message"].as_str()), (Some("err"), Some("to err")));
}

#[test]
fn timestamp_prefixes_plain_lines_and_combined_gets_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_owned());
    let spec = LogSpec {
        timestamp: Some("%Y-%m-%d %H:%M:%S%.3f".into()),
        combined: Some("both.log".into()),
        ..LogSpec::default()
    };
    run(&hub, "ts", 0, &spec, r#"import sys; print("a"); print("b", file=sys.stderr)"#);
    let line = read(&dir.path().join("ts-out.log"));
    let (stamp, rest) = line.trim_end().split_at(23);
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f").is_ok(), "{line}");
    assert_eq!(rest, " a");
    let both = read(&dir.path().join("both.log"));
    assert!(both.lines().any(|l| l.ends_with(" a")) && both.lines().any(|l| l.ends_with(" b")), "{both}");
}

/// A writer that prints `before`, waits for file `go`, prints `after`.
fn two_phase_script(go: &Path) -> String {
    format!(
        r#"
import os, sys, time
print("before", flush=True)
while not os.path.exists({go:?}): time.sleep(0.01)
print("after", flush=True)
"#,
        go = go.to_str().unwrap()
    )
}

#[test]
fn reopen_after_external_rename_writes_a_fresh_file_and_flush_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().join("logs"));
    let go = dir.path().join("go");
    let (writer, out_fd, err_fd) = Writer::spawn(&two_phase_script(&go));
    let out = dir.path().join("logs/re-out.log");
    let moved = dir.path().join("logs/re-out.log.old");
    runtime().block_on(async {
        let pumps = hub.attach("re", 0, &LogSpec::default(), out_fd, err_fd);
        until("the first line", || read(&out) == "before\n").await;
        fs::rename(&out, &moved).unwrap();
        hub.reopen();
        fs::write(&go, "").unwrap();
        tokio::time::timeout(Duration::from_secs(20), pumps).await.unwrap().unwrap();
    });
    writer.finish();
    assert_eq!(read(&moved), "before\n");
    assert_eq!(read(&out), "after\n");
    let flushed = hub.flush(Some("re")).unwrap();
    assert!(flushed.contains(&out));
    assert_eq!(fs::metadata(&out).unwrap().len(), 0);
    assert_eq!(read(&moved), "before\n", "flush leaves foreign files alone");
}

#[test]
fn unwritable_log_dir_is_reported_the_app_is_not_blocked_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the log dir should be: fails even for root.
    let blocker = dir.path().join("logs");
    fs::write(&blocker, "not a dir").unwrap();
    let hub = LogHub::new(blocker.clone());
    let (phase1, go, stop) = (dir.path().join("phase1"), dir.path().join("go"), dir.path().join("stop"));
    let script = format!(
        r#"
import os, sys, time
for i in range(100000): sys.stdout.write(f"lost {{i}}\n")
sys.stdout.flush(); open({phase1:?}, "w").close()
while not os.path.exists({go:?}): time.sleep(0.01)
while not os.path.exists({stop:?}):
    print("resumed", flush=True); time.sleep(0.05)
"#,
        phase1 = phase1.to_str().unwrap(),
        go = go.to_str().unwrap(),
        stop = stop.to_str().unwrap()
    );
    let (writer, out_fd, err_fd) = Writer::spawn(&script);
    let out = blocker.join("bad-out.log");
    runtime().block_on(async {
        let pumps = hub.attach("bad", 0, &LogSpec::default(), out_fd, err_fd);
        until("the writer to get past 100,000 lines", || phase1.exists()).await;
        until("every line counted as lost", || hub.stats("bad", 0).lines_lost == 100_000).await;
        let stats = hub.stats("bad", 0);
        assert!(stats.last_error.as_deref().unwrap().contains("bad-out.log"), "{stats:?}");
        fs::remove_file(&blocker).unwrap();
        fs::create_dir(&blocker).unwrap();
        fs::write(&go, "").unwrap();
        until("writing to resume", || read(&out).starts_with("resumed\n")).await;
        fs::write(&stop, "").unwrap();
        tokio::time::timeout(Duration::from_secs(20), pumps).await.unwrap().unwrap();
    });
    writer.finish();
    assert!(!read(&out).contains("lost"));
}

#[test]
fn last_lines_reach_into_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    fs::write(rotated_path(&path, 1), "1\n2\n3\n4\n5\n").unwrap();
    fs::write(&path, "6\n7\n").unwrap();
    let files = [("a".to_string(), path.clone())];
    let got: Vec<String> = tail::last_lines(&files, 4).unwrap().into_iter().map(|(_, l)| l).collect();
    assert_eq!(got, ["4", "5", "6", "7"]);
    // A big file is read backwards: only its end is needed.
    let big: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    fs::write(&path, big).unwrap();
    let got = tail::last_lines(&files, 2).unwrap();
    assert_eq!(got, [("a".into(), "line 299998".into()), ("a".into(), "line 299999".into())]);
}

/// A `Write` the test can read while `follow` runs on another thread.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn append(path: &PathBuf, text: &str) {
    fs::OpenOptions::new().append(true).create(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

#[test]
fn follow_sees_appends_and_continues_after_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.log");
    append(&path, "old, not shown\n");
    let (sink, stop, started) = (Shared::default(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let follower = {
        let (mut sink, stop, started) = (sink.clone(), stop.clone(), started.clone());
        let files = vec![("f".to_string(), path.clone())];
        // `stop` is first asked once follow has opened the files.
        let stop = move || {
            started.store(true, Ordering::Relaxed);
            stop.load(Ordering::Relaxed)
        };
        std::thread::spawn(move || tail::follow(&files, &mut sink, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "follow did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let wait = |what: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while sink.text() != want {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: got {:?}", sink.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    append(&path, "one\n");
    wait("an appended line", "f | one\n");
    append(&path, "two\n");
    fs::rename(&path, rotated_path(&path, 1)).unwrap();
    append(&path, "three\n");
    wait("lines across a rotation", "f | one\nf | two\nf | three\n");
    fs::write(&path, "").unwrap();
    append(&path, "four\n");
    wait("a line after truncation", "f | one\nf | two\nf | three\nf | four\n");
    stop.store(true, Ordering::Relaxed);
    follower.join().unwrap().unwrap();
}

#[test]
fn daemon_log_rotates_by_size() {
    use tracing_subscriber::fmt::MakeWriter;
    let dir = tempfile::tempdir().unwrap();
    let log = procd::logs::daemon_log::DaemonLog::with_rotation(dir.path(), 1000, 2);
    for i in 0..100 {
        writeln!(log.make_writer(), "event {i} with some padding to fill the file").unwrap();
    }
    let path = dir.path().join("procd.log");
    assert!(rotated_path(&path, 2).exists() && !rotated_path(&path, 3).exists());
    assert!(read(&path).ends_with("event 99 with some padding to fill the file\n"));
}
