//! Signalling a whole process group, and the names of signals as written in
//! specs (`stop_signal "SIGINT"`) and shown in `status` ("killed by SIGKILL").
//!
//! Signals are plain `i32`s (not `nix::sys::signal::Signal`) so that real-time
//! signals, which apps use for custom reload protocols, pass through.

use std::io;

/// Names of the classic signals with their numbers on this architecture.
const NAMES: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGSTKFLT", libc::SIGSTKFLT),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
    ("SIGURG", libc::SIGURG),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGIO", libc::SIGIO),
    ("SIGPWR", libc::SIGPWR),
    ("SIGSYS", libc::SIGSYS),
];

/// Other spellings accepted by [`parse_signal`], never produced by [`signal_name`].
const ALIASES: &[(&str, i32)] = &[("SIGIOT", libc::SIGABRT), ("SIGPOLL", libc::SIGIO), ("SIGCLD", libc::SIGCHLD)];

/// Sends `signal` to every process of the group `pgid` (`kill(-pgid, sig)`).
///
/// A group that no longer exists (`ESRCH`) is not an error: the stop it was
/// meant for has already happened. `pgid` must be above 1, because
/// `kill(0)` and `kill(-1)` would hit the daemon's own group or every
/// process on the machine.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal process group {pgid}")));
    }
    // SAFETY: kill takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(err),
    }
}

/// SIGKILL to every process of the group `pgid`: the end of every stop.
pub fn kill_group(pgid: i32) -> io::Result<()> {
    signal_group(pgid, libc::SIGKILL)
}

/// Whether any process of the group `pgid` still exists (`kill(-pgid, 0)`).
///
/// A process we may not signal (`EPERM`) exists. Zombies count as alive
/// until reaped, so a stop waits for the [`Reaper`](super::Reaper) too.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: as in signal_group; signal 0 only checks existence.
    if unsafe { libc::kill(-pgid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Parses a signal as written in a spec: `SIGTERM`, `TERM`, `sigterm`, `15`,
/// `SIGRTMIN+2`, `SIGRTMAX-1`. Returns `None` for anything else, 0 included.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return valid(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = name.parse::<i32>() {
        return valid(n);
    }
    if let Some(&(_, n)) = NAMES.iter().chain(ALIASES).find(|(full, _)| &full[3..] == name) {
        return Some(n);
    }
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str, sign: char| -> Option<i32> {
        match rest {
            "" => Some(0),
            _ => rest.strip_prefix(sign)?.parse::<i32>().ok(),
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return valid(rtmin + offset(rest, '+')?).filter(|&n| n >= rtmin);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return valid(rtmax - offset(rest, '-')?).filter(|&n| n >= rtmin);
    }
    None
}

/// The conventional name of a signal: `SIGKILL`, `SIGRTMIN+3`; `SIG99` for a
/// number with no name. [`parse_signal`] reads every result back.
pub fn signal_name(sig: i32) -> String {
    if let Some((name, _)) = NAMES.iter().find(|(_, n)| *n == sig) {
        return (*name).to_owned();
    }
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match sig {
        n if n == rtmin => "SIGRTMIN".to_owned(),
        n if n == rtmax => "SIGRTMAX".to_owned(),
        n if n > rtmin && n < rtmax => format!("SIGRTMIN+{}", n - rtmin),
        n => format!("SIG{n}"),
    }
}

/// `n` if it is a signal number this kernel knows.
fn valid(n: i32) -> Option<i32> {
    (1..=libc::SIGRTMAX()).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        let cases = [
            ("SIGTERM", libc::SIGTERM),
            ("SIGKILL", 9),
            ("SIGINT", 2),
            ("SIGHUP", 1),
            ("SIGUSR1", libc::SIGUSR1),
            ("SIGQUIT", 3),
            ("SIGWINCH", libc::SIGWINCH),
        ];
        for (name, n) in cases {
            assert_eq!(parse_signal(name), Some(n), "{name}");
            assert_eq!(signal_name(n), name);
        }
        for n in 1..=libc::SIGRTMAX() {
            assert_eq!(parse_signal(&signal_name(n)), Some(n), "{}", signal_name(n));
        }
    }

    #[test]
    fn spellings_accepted() {
        for s in ["TERM", "sigterm", "term", " SIGTERM ", "15", "SIG15"] {
            assert_eq!(parse_signal(s), Some(libc::SIGTERM), "{s:?}");
        }
        assert_eq!(parse_signal("SIGIOT"), Some(libc::SIGABRT));
        assert_eq!(parse_signal("SIGRTMIN"), Some(libc::SIGRTMIN()));
        assert_eq!(parse_signal("SIGRTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(parse_signal("RTMAX-1"), Some(libc::SIGRTMAX() - 1));
    }

    #[test]
    fn nonsense_rejected() {
        for s in ["", "0", "-9", "SIG", "SIGFOO", "65", "1000", "SIGRTMIN+99", "SIGRTMIN-1", "KILL9"] {
            assert_eq!(parse_signal(s), None, "{s:?}");
        }
    }

    #[test]
    fn refuses_to_signal_everyone() {
        assert!(signal_group(0, 0).is_err());
        assert!(signal_group(-1, 0).is_err());
        assert!(signal_group(1, 0).is_err());
        assert!(!group_alive(0));
    }
}
