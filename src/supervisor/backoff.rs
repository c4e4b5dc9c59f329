//! Restart delays: PM2's fixed `restart_delay` and its exponential backoff,
//! as a pure function of the previous delay and the last run's uptime.
//!
//! When a spec gives both a fixed `delay` and a `backoff`, the backoff wins,
//! as in PM2 (`exp_backoff_restart_delay` takes precedence over
//! `restart_delay`): a backoff is the stronger statement of intent, and a
//! fixed delay beside it is most likely a leftover.

use std::time::Duration;

use crate::spec::RestartSpec;

/// The delay before the next start of an instance that just exited.
///
/// `previous` is the delay used before the run that just ended (`None` when
/// that run was the first, or the backoff was reset). `last_uptime` is how long
/// that run was online: a run that lasted `reset-after` or longer resets the
/// backoff to its initial value. Evaluating the reset at exit time is exact:
/// the delay depends only on whether the run reached `reset-after`, so no
/// polling tick (PM2 checks every 30 s) can make it late.
pub fn next_delay(spec: &RestartSpec, previous: Option<Duration>, last_uptime: Duration) -> Duration {
    let Some(backoff) = &spec.backoff else {
        return spec.delay;
    };
    match previous {
        Some(prev) if last_uptime < backoff.reset_after => {
            // next = floor(min(max, previous × factor)), in whole milliseconds.
            let grown = prev.as_millis() as f64 * backoff.factor;
            let capped = grown.min(backoff.max.as_millis() as f64);
            Duration::from_millis(capped.floor() as u64)
        }
        _ => backoff.initial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BackoffSpec;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn with_backoff() -> RestartSpec {
        RestartSpec { backoff: Some(BackoffSpec::default()), ..RestartSpec::default() }
    }

    #[test]
    fn pm2_default_sequence_is_exact() {
        let spec = with_backoff();
        let mut prev = None;
        let mut seen = Vec::new();
        for _ in 0..16 {
            let d = next_delay(&spec, prev, ms(10));
            seen.push(d.as_millis() as u64);
            prev = Some(d);
        }
        assert_eq!(
            seen,
            [100, 150, 225, 337, 505, 757, 1135, 1702, 2553, 3829, 5743, 8614, 12921, 15000, 15000, 15000]
        );
    }

    #[test]
    fn table() {
        let fixed = RestartSpec { delay: ms(250), ..RestartSpec::default() };
        let both = RestartSpec { delay: ms(250), ..with_backoff() };
        let cases: &[(&str, &RestartSpec, Option<u64>, u64, u64)] = &[
            ("no delay configured", &RestartSpec::default(), None, 0, 0),
            ("fixed delay, first", &fixed, None, 0, 250),
            ("fixed delay ignores history", &fixed, Some(9000), 0, 250),
            ("backoff starts at initial", &with_backoff(), None, 0, 100),
            ("backoff grows", &with_backoff(), Some(100), 50, 150),
            ("backoff floors", &with_backoff(), Some(225), 50, 337),
            ("backoff caps", &with_backoff(), Some(12921), 50, 15000),
            ("reset exactly at reset-after", &with_backoff(), Some(5743), 30_000, 100),
            ("no reset just before", &with_backoff(), Some(5743), 29_999, 8614),
            ("backoff wins over fixed", &both, None, 0, 100),
        ];
        for (name, spec, prev, uptime, want) in cases {
            let got = next_delay(spec, prev.map(ms), ms(*uptime));
            assert_eq!(got, ms(*want), "{name}");
        }
    }
}
