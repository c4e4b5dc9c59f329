//! Signalling and cleaning up a run: its process group, and its cgroup
//! where it has one (which also holds descendants that left the group).

use std::time::Duration;

use crate::process::{self, InstanceCgroup};

/// Sends `signal` once to every process of a run: through its cgroup when
/// it has one (which holds the whole group and whatever left it), else to
/// its process group. Never both: an app would see its stop signal twice,
/// and a shutdown handler that is not idempotent would run twice.
pub(super) fn signal_run(pgid: Option<i32>, cgroup: Option<&InstanceCgroup>, signal: i32) {
    match cgroup {
        Some(cg) if cg.populated() => cg.signal_all(signal),
        _ => {
            if let Some(pgid) = pgid {
                let _ = process::signal_group(pgid, signal);
            }
        }
    }
}

pub(super) fn kill_run(pgid: Option<i32>, cgroup: Option<&InstanceCgroup>) {
    if let Some(pgid) = pgid {
        let _ = process::kill_group(pgid);
    }
    if let Some(cg) = cgroup {
        cg.kill_all();
    }
}

/// The leader of a run died on its own; whatever it left (in its group or
/// its cgroup) gets the stop signal now and SIGKILL after the timeout,
/// without holding up the restart, which then runs in a fresh cgroup.
/// Nothing the app forked outlives its run. Returns the cgroup when nothing
/// was left in it, for the next run to reuse.
pub(super) fn clean_up_run(
    pgid: Option<i32>,
    cgroup: Option<InstanceCgroup>,
    signal: i32,
    timeout: Duration,
) -> Option<InstanceCgroup> {
    let alive = move |pgid: Option<i32>, cg: &Option<InstanceCgroup>| {
        pgid.is_some_and(process::group_alive) || cg.as_ref().is_some_and(InstanceCgroup::populated)
    };
    if !alive(pgid, &cgroup) {
        return cgroup;
    }
    signal_run(pgid, cgroup.as_ref(), signal);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline && alive(pgid, &cgroup) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(pgid, &cgroup) {
            kill_run(pgid, cgroup.as_ref());
        }
        while alive(pgid, &cgroup) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(cg) = cgroup {
            let _ = cg.remove();
        }
    });
    None
}
