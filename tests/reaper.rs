//! The `Reaper`, alone in its test binary: its `waitpid(-1)` takes every
//! child of the process, so no other test may run beside it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use procd::process::{ExitStatus, LaunchSpec, Launched, Reaper, become_subreaper, launch, signal_group};
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::pipe::Receiver;

const DEADLINE: Duration = Duration::from_secs(10);

fn sh(script: &str) -> Launched {
    let argv: Vec<String> = ["sh", "-c", script].map(String::from).into();
    let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    let spec = LaunchSpec { argv: &argv, cwd: Path::new("/"), env: &env, credentials: None, cgroup: None };
    launch(&spec).unwrap()
}

/// Collects statuses until every pid of `want` has one.
async fn collect(reaper: &mut Reaper, want: &[i32]) -> HashMap<i32, ExitStatus> {
    let mut got = HashMap::new();
    tokio::time::timeout(DEADLINE, async {
        while !want.iter().all(|pid| got.contains_key(pid)) {
            got.extend(reaper.reaped().await);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only reaped {got:?} of {want:?}"));
    got
}

#[tokio::test]
async fn reaper_collects_codes_signals_and_orphans() {
    become_subreaper().unwrap();
    // A child that exits before the Reaper exists is found by the first pass.
    let early = sh("exit 7");
    let mut reaper = Reaper::new().unwrap();

    let exits = sh("exit 3");
    let killed = sh("sleep 100");
    signal_group(killed.pid, libc::SIGKILL).unwrap();
    // The grandchild outlives its parent and is re-parented to us.
    // (It waits a moment: exiting before its parent, it would be its parent's
    // to reap, not ours; a background job's stdin is /dev/null, so `read`
    // would not wait.)
    let orphaner = sh("sh -c 'sleep 0.2; exit 5' & echo $!");
    let mut line = tokio::io::BufReader::new(Receiver::from_owned_fd(orphaner.stdout).unwrap());
    let mut orphan = String::new();
    line.read_line(&mut orphan).await.unwrap();
    let orphan: i32 = orphan.trim().parse().unwrap();

    let pids = [early.pid, exits.pid, killed.pid, orphaner.pid, orphan];
    let got = collect(&mut reaper, &pids).await;
    assert_eq!(got[&early.pid], ExitStatus::Code(7));
    assert_eq!(got[&exits.pid], ExitStatus::Code(3));
    assert_eq!(got[&killed.pid], ExitStatus::Signal(9));
    assert_eq!(got[&orphaner.pid], ExitStatus::Code(0));
    assert_eq!(got[&orphan], ExitStatus::Code(5));

    // Respawn path: from a death being reaped to the next instance running.
    let mut latencies = Vec::new();
    let mut pid = sh("exit 0").pid;
    for _ in 0..50 {
        collect(&mut reaper, &[pid]).await;
        let t = Instant::now();
        pid = sh("exit 0").pid;
        latencies.push(t.elapsed());
    }
    collect(&mut reaper, &[pid]).await;
    latencies.sort();
    eprintln!("launch after reap: median {:?}, worst {:?}", latencies[25], latencies[49]);
    assert!(latencies[25] < Duration::from_millis(50), "{latencies:?}");
}
