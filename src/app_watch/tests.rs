//! The watcher against real directories: inotify and poll, ignores,
//! directories created later, symlinks, drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

use super::*;

const DEBOUNCE: Duration = Duration::from_millis(100);
/// Generous: poll mode needs a full interval before it sees anything.
const EVENT_DEADLINE: Duration = Duration::from_secs(5);

fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    (dir, root)
}

fn spec(paths: &[&Path]) -> WatchSpec {
    WatchSpec {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        ignore: Vec::new(),
        debounce: DEBOUNCE,
        poll: false,
        follow_symlinks: false,
    }
}

fn start(spec: &WatchSpec, own_files: Vec<PathBuf>) -> (AppWatcher, UnboundedReceiver<WatchEvent>) {
    let (tx, rx) = unbounded_channel();
    let watcher = AppWatcher::start("web", spec, own_files, tx).unwrap();
    (watcher, rx)
}

/// The next event's path, failing the test after a deadline.
async fn next_path(rx: &mut UnboundedReceiver<WatchEvent>) -> PathBuf {
    let event = timeout(EVENT_DEADLINE, rx.recv()).await.expect("no watch event before the deadline");
    let event = event.expect("the watcher's channel closed");
    assert_eq!(event.app, "web");
    event.path
}

/// No event within three debounce times (a closed channel counts as none).
async fn assert_quiet(rx: &mut UnboundedReceiver<WatchEvent>) {
    if let Ok(Some(event)) = timeout(3 * DEBOUNCE, rx.recv()).await {
        panic!("unexpected watch event: {event:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_change_in_the_root_or_a_nested_dir_yields_one_event_naming_it() {
    let (_dir, root) = temp_root();
    fs::create_dir_all(root.join("src/lib")).unwrap();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());

    fs::write(root.join("a.js"), "1").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("a.js"));
    assert_quiet(&mut rx).await;

    fs::write(root.join("src/lib/b.js"), "1").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("src/lib/b.js"));
    assert_quiet(&mut rx).await;
}

#[tokio::test(flavor = "current_thread")]
async fn five_quick_writes_collapse_into_one_event_naming_the_first() {
    let (_dir, root) = temp_root();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());
    for i in 0..5 {
        fs::write(root.join(format!("f{i}.js")), "x").unwrap();
    }
    assert_eq!(next_path(&mut rx).await, root.join("f0.js"));
    assert_quiet(&mut rx).await;
}

#[tokio::test(flavor = "current_thread")]
async fn ignored_paths_own_logs_and_reads_yield_no_event() {
    let (_dir, root) = temp_root();
    for dir in [".git", "node_modules/pkg", "dist", "logs", "src/dist"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("index.js"), "x").unwrap();
    let mut spec = spec(&[&root]);
    spec.ignore = vec!["dist".into(), "*.tmp".into()];
    let (_watcher, mut rx) = start(&spec, vec![root.join("logs/out.log")]);

    fs::write(root.join(".git/index"), "x").unwrap();
    fs::write(root.join("node_modules/pkg/a.js"), "x").unwrap();
    fs::create_dir(root.join("node_modules/new")).unwrap();
    fs::write(root.join("dist/a.js"), "x").unwrap();
    fs::write(root.join("src/dist/a.js"), "x").unwrap();
    fs::write(root.join("scratch.tmp"), "x").unwrap();
    fs::write(root.join("logs/out.log"), "a line").unwrap();
    fs::rename(root.join("logs/out.log"), root.join("logs/out.log.1")).unwrap();
    fs::read(root.join("index.js")).unwrap();
    assert_quiet(&mut rx).await;

    // The watcher is alive: a file next to the ignored ones still counts.
    fs::write(root.join("logs/app.conf"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("logs/app.conf"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_directory_created_after_start_is_watched() {
    let (_dir, root) = temp_root();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());

    fs::create_dir_all(root.join("new/deep")).unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("new"));

    fs::write(root.join("new/deep/c.js"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("new/deep/c.js"));

    // Removed and created again (a build's `rm -rf out && mkdir out`): a new inode, watched anew.
    fs::remove_dir_all(root.join("new")).unwrap();
    assert!(next_path(&mut rx).await.starts_with(root.join("new")));
    fs::create_dir_all(root.join("new/deep")).unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("new"));
    fs::write(root.join("new/deep/d.js"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("new/deep/d.js"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_root_directory_replaced_after_start_is_watched_again() {
    let (_dir, parent) = temp_root();
    let root = parent.join("dist");
    fs::create_dir(&root).unwrap();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());

    fs::write(parent.join("beside.js"), "x").unwrap();
    assert_quiet(&mut rx).await;

    fs::remove_dir(&root).unwrap();
    fs::create_dir(&root).unwrap();
    assert_eq!(next_path(&mut rx).await, root);
    fs::write(root.join("a.js"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("a.js"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_symlinked_root_is_followed_across_a_swap() {
    let (_dir, parent) = temp_root();
    for generation in ["g1", "g2"] {
        fs::create_dir(parent.join(generation)).unwrap();
    }
    let root = parent.join("current");
    std::os::unix::fs::symlink(parent.join("g1"), &root).unwrap();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());

    // `ln -sfn g2 current`: a temp link renamed over the root.
    std::os::unix::fs::symlink(parent.join("g2"), parent.join("current.tmp")).unwrap();
    fs::rename(parent.join("current.tmp"), &root).unwrap();
    assert_eq!(next_path(&mut rx).await, root);
    fs::write(parent.join("g1/old.js"), "x").unwrap();
    assert_quiet(&mut rx).await;
    fs::write(parent.join("g2/a.js"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("a.js"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_constantly_written_tree_still_restarts() {
    let (_dir, root) = temp_root();
    let (_watcher, mut rx) = start(&spec(&[&root]), Vec::new());
    let started = tokio::time::Instant::now();
    let mut writes = tokio::time::interval(DEBOUNCE / 4);
    let path = loop {
        tokio::select! {
            event = rx.recv() => break event.expect("the watcher's channel closed").path,
            _ = writes.tick() => {
                assert!(started.elapsed() < EVENT_DEADLINE, "no event while the tree kept changing");
                fs::write(root.join(format!("f{}.js", started.elapsed().as_millis())), "x").unwrap();
            }
        }
    };
    assert!(path.starts_with(&root), "{path:?}");
    // Cut at ten quiet times after the first write, not at the end of the writes.
    assert!(started.elapsed() < 15 * DEBOUNCE, "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_file_is_watched_across_an_editor_rename() {
    let (_dir, root) = temp_root();
    let file = root.join("app.js");
    fs::write(&file, "1").unwrap();
    let (_watcher, mut rx) = start(&spec(&[&file]), Vec::new());

    fs::write(root.join("sibling.js"), "x").unwrap();
    assert_quiet(&mut rx).await;

    for version in ["2", "3"] {
        fs::write(root.join(".app.js.swp"), version).unwrap();
        fs::rename(root.join(".app.js.swp"), &file).unwrap();
        assert_eq!(next_path(&mut rx).await, file);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn poll_mode_sees_a_change() {
    let (_dir, root) = temp_root();
    fs::create_dir(root.join("node_modules")).unwrap();
    let mut spec = spec(&[&root]);
    spec.poll = true;
    let (_watcher, mut rx) = start(&spec, Vec::new());

    fs::write(root.join("node_modules/ignored.js"), "x").unwrap();
    fs::write(root.join("a.js"), "x").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("a.js"));
}

#[tokio::test(flavor = "current_thread")]
async fn symlinked_dirs_are_followed_only_when_asked() {
    let (_dir, root) = temp_root();
    let (_outside_dir, outside) = temp_root();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

    let (watcher, mut rx) = start(&spec(&[&root]), Vec::new());
    fs::write(outside.join("x.js"), "1").unwrap();
    assert_quiet(&mut rx).await;
    // The link itself is an entry of the watched root: changing it counts.
    fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("link"));
    drop(watcher);

    let mut spec = spec(&[&root]);
    spec.follow_symlinks = true;
    let (_watcher, mut rx) = start(&spec, Vec::new());
    fs::write(outside.join("x.js"), "2").unwrap();
    assert_eq!(next_path(&mut rx).await, root.join("link/x.js"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_path_is_an_error_naming_it() {
    let (_dir, root) = temp_root();
    let missing = root.join("nope");
    let (tx, _rx) = unbounded_channel();
    let err = AppWatcher::start("web", &spec(&[&root, &missing]), Vec::new(), tx).err().expect("an error");
    assert!(matches!(&err, AppWatchError::Missing { path } if *path == missing), "{err:?}");
    assert!(err.to_string().contains(&*missing.to_string_lossy()), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_watcher_stops_events() {
    let (_dir, root) = temp_root();
    let (watcher, mut rx) = start(&spec(&[&root]), Vec::new());
    fs::write(root.join("a.js"), "x").unwrap();
    // Dropped with a burst pending: that burst is not sent either.
    tokio::time::sleep(DEBOUNCE / 4).await;
    drop(watcher);
    fs::write(root.join("b.js"), "x").unwrap();
    assert_quiet(&mut rx).await;
}
