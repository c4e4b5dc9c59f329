//! Table tests of the instance lifecycle: valid transitions with their
//! effects, invalid ones leaving the state untouched, and the restart
//! policies driven by an injected clock.

use super::*;
use crate::spec::BackoffSpec;

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn in_state(status: Status) -> Lifecycle {
    Lifecycle { status, ..Lifecycle::default() }
}

fn exit(code: i32) -> Event {
    Event::Exited(ExitStatus::Code(code))
}

#[test]
fn valid_transitions() {
    use Effect::*;
    use Status::*;
    let reason = || RestartReason::Operator;
    let cases: Vec<(Status, Event, Status, Vec<Effect>)> = vec![
        (Stopped, Event::Start, Starting, vec![Spawn]),
        (Errored, Event::Start, Starting, vec![Spawn]),
        (WaitingRestart, Event::Start, Starting, vec![CancelRestartTimer, Spawn]),
        (Online, Event::Start, Online, vec![]),
        (Starting, Event::Spawned, Online, vec![]),
        (Online, Event::Stop, Stopping, vec![SignalStop, AwaitGroupGone]),
        (Stopping, Event::KillTimeout, Stopping, vec![KillGroup]),
        (Stopping, exit(0), Stopping, vec![]),
        (Stopping, Event::GroupGone, Stopped, vec![]),
        (WaitingRestart, Event::Stop, Stopped, vec![CancelRestartTimer]),
        (Errored, Event::Stop, Stopped, vec![]),
        (Stopped, Event::Stop, Stopped, vec![]),
        (Online, Event::Restart(reason()), Stopping, vec![SignalStop, AwaitGroupGone]),
        (Stopped, Event::Restart(reason()), Starting, vec![Spawn]),
        (WaitingRestart, Event::DelayElapsed, Starting, vec![Spawn]),
        (Online, exit(1), Starting, vec![CleanUpGroup, Spawn]),
        // A run waiting for its `ready` check: an exit is a failed start,
        // a missed deadline stops it to start again.
        (Starting, exit(1), Starting, vec![CleanUpGroup, Spawn]),
        (Starting, Event::ReadyTimeout { timeout_ms: 3000 }, Stopping, vec![SignalStop, AwaitGroupGone]),
        (
            Online,
            Event::Restart(RestartReason::Watchdog { timeout_ms: 300 }),
            Stopping,
            vec![SignalStop, AwaitGroupGone],
        ),
    ];
    let base = Instant::now();
    for (from, event, to, effects) in cases {
        let mut lc = in_state(from);
        lc.online_since = matches!(from, Online).then_some(base);
        let label = format!("{from:?} + {event:?}");
        let got = lc.step(event, at(base, 5000), &RestartSpec::default());
        assert_eq!(got, Ok(effects), "{label}");
        assert_eq!(lc.status, to, "{label}");
    }
}

#[test]
fn invalid_transitions_change_nothing() {
    use Status::*;
    let cases: Vec<(Status, Event)> = vec![
        (Stopped, exit(0)),
        (Stopped, Event::Spawned),
        (Stopped, Event::KillTimeout),
        (Stopped, Event::GroupGone),
        (Stopped, Event::DelayElapsed),
        (Online, Event::Spawned),
        (Online, Event::DelayElapsed),
        (Online, Event::GroupGone),
        (Errored, exit(1)),
        (WaitingRestart, exit(1)),
        (Online, Event::ReadyTimeout { timeout_ms: 1 }),
        (Stopping, Event::ReadyTimeout { timeout_ms: 1 }),
        (Stopping, Event::Spawned),
        (Stopping, Event::DelayElapsed),
    ];
    for (from, event) in cases {
        let mut lc = in_state(from);
        lc.restarts = 7;
        let label = format!("{from:?} + {event:?}");
        let err = lc.step(event, Instant::now(), &RestartSpec::default()).unwrap_err();
        assert_eq!(err.status, from, "{label}");
        assert_eq!(lc.status, from, "{label}");
        assert_eq!(lc.restarts, 7, "{label}");
    }
}

#[test]
fn never_ready_ends_errored_after_max_restarts() {
    let policy = RestartSpec { max_restarts: 3, ..RestartSpec::default() };
    let base = Instant::now();
    let mut lc = Lifecycle::default();
    lc.step(Event::Start, base, &policy).unwrap();
    for round in 1..=3 {
        lc.step(Event::ReadyTimeout { timeout_ms: 3000 }, base, &policy).unwrap();
        assert_eq!(lc.status, Status::Stopping);
        let fx = lc.step(Event::GroupGone, base, &policy).unwrap();
        if round < 3 {
            assert_eq!((lc.status, fx), (Status::Starting, vec![Effect::Spawn]), "round {round}");
        } else {
            assert_eq!((lc.status, fx), (Status::Errored, vec![]));
        }
    }
    assert_eq!(lc.last_reason, Some(RestartReason::NotReady { timeout_ms: 3000 }));
}

#[test]
fn adopted_and_restored_keep_counters() {
    let since = Instant::now();
    let lc = Lifecycle::adopted(since, 4, Some(ExitStatus::Code(1)), Some(RestartReason::Operator));
    assert_eq!((lc.status, lc.restarts, lc.online_since), (Status::Online, 4, Some(since)));
    let errored = Lifecycle::restored(Status::Errored, 16, None, None);
    assert_eq!((errored.status, errored.restarts), (Status::Errored, 16));
    // Anything else comes back stopped, to be started by the plan.
    for status in [Status::Online, Status::WaitingRestart, Status::Stopping, Status::Starting] {
        assert_eq!(Lifecycle::restored(status, 2, None, None).status, Status::Stopped);
    }
}

/// Runs an instance that goes online and exits after `uptime_ms`, `n` times;
/// returns the statuses after each exit.
fn crash_loop(policy: &RestartSpec, code: i32, uptime_ms: u64, n: usize) -> (Lifecycle, Vec<(Status, Vec<Effect>)>) {
    let base = Instant::now();
    let mut now = 0;
    let mut lc = Lifecycle::default();
    lc.step(Event::Start, at(base, now), policy).unwrap();
    lc.step(Event::Spawned, at(base, now), policy).unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        now += uptime_ms;
        let fx = lc.step(exit(code), at(base, now), policy).unwrap();
        seen.push((lc.status, fx.clone()));
        if lc.status == Status::WaitingRestart {
            now += lc.last_delay.unwrap().as_millis() as u64;
            lc.step(Event::DelayElapsed, at(base, now), policy).unwrap();
        }
        if lc.status == Status::Starting {
            lc.step(Event::Spawned, at(base, now), policy).unwrap();
        } else {
            break;
        }
    }
    (lc, seen)
}

#[test]
fn restart_policies() {
    let on_failure = RestartSpec { policy: RestartPolicy::OnFailure, ..RestartSpec::default() };
    let never = RestartSpec { policy: RestartPolicy::Never, ..RestartSpec::default() };
    let cases: &[(&str, &RestartSpec, i32, Status)] = &[
        ("always restarts a clean exit", &RestartSpec::default(), 0, Status::Starting),
        ("always restarts a failure", &RestartSpec::default(), 1, Status::Starting),
        ("on-failure leaves a clean exit stopped", &on_failure, 0, Status::Stopped),
        ("on-failure restarts a failure", &on_failure, 3, Status::Starting),
        ("never runs once", &never, 1, Status::Stopped),
    ];
    for (name, policy, code, want) in cases {
        let (_, seen) = crash_loop(policy, *code, 5000, 1);
        assert_eq!(seen[0].0, *want, "{name}");
    }
}

#[test]
fn max_restarts_within_min_uptime_means_errored() {
    let policy = RestartSpec { max_restarts: 3, ..RestartSpec::default() };
    let (lc, seen) = crash_loop(&policy, 1, 100, 10);
    let statuses: Vec<Status> = seen.iter().map(|s| s.0).collect();
    assert_eq!(statuses, [Status::Starting, Status::Starting, Status::Errored]);
    assert_eq!(lc.restarts, 2);
    assert!(matches!(lc.last_reason, Some(RestartReason::Exited { .. })));
}

#[test]
fn long_runs_reset_the_unstable_count() {
    let policy = RestartSpec { max_restarts: 2, ..RestartSpec::default() };
    let (lc, seen) = crash_loop(&policy, 1, 1000, 10);
    assert_eq!(seen.len(), 10, "never errored: each run reached min-uptime");
    assert_eq!(lc.unstable_exits, 0);
}

#[test]
fn backoff_delays_wait_and_record_the_time() {
    let policy = RestartSpec { backoff: Some(BackoffSpec::default()), max_restarts: 100, ..RestartSpec::default() };
    let (_, seen) = crash_loop(&policy, 1, 10, 5);
    let delays: Vec<Effect> = seen.iter().map(|(_, fx)| fx[1].clone()).collect();
    let want: Vec<Effect> =
        [100, 150, 225, 337, 505].iter().map(|ms| Effect::ArmRestartTimer(Duration::from_millis(*ms))).collect();
    assert_eq!(delays, want);
}

#[test]
fn restart_of_a_running_instance_counts_once_and_records_the_reason() {
    let policy = RestartSpec::default();
    let now = Instant::now();
    let mut lc = Lifecycle::default();
    lc.step(Event::Start, now, &policy).unwrap();
    lc.step(Event::Spawned, now, &policy).unwrap();
    lc.step(Event::Restart(RestartReason::SpecChange), now, &policy).unwrap();
    lc.step(Event::Exited(ExitStatus::Signal(2)), now, &policy).unwrap();
    assert_eq!(lc.status, Status::Stopping, "the leader's exit during a stop is not a crash");
    assert_eq!(lc.step(Event::GroupGone, now, &policy), Ok(vec![Effect::Spawn]));
    lc.step(Event::Spawned, now, &policy).unwrap();
    assert_eq!(lc.status, Status::Online);
    assert_eq!(lc.restarts, 1);
    assert_eq!(lc.last_reason, Some(RestartReason::SpecChange));
}

#[test]
fn spawn_failures_end_errored() {
    let policy = RestartSpec { max_restarts: 2, ..RestartSpec::default() };
    let now = Instant::now();
    let mut lc = Lifecycle::default();
    lc.step(Event::Start, now, &policy).unwrap();
    assert_eq!(lc.step(Event::SpawnFailed("ENOENT".into()), now, &policy), Ok(vec![Effect::Spawn]));
    assert_eq!(lc.step(Event::SpawnFailed("ENOENT".into()), now, &policy), Ok(vec![]));
    assert_eq!(lc.status, Status::Errored);
}
