//! Facts about the machine and the daemon that other modules need as plain
//! numbers: who the daemon runs as, how many CPUs it may use, and the units
//! of `/proc` (page size, clock ticks) for [`crate::monitor`].

use nix::unistd::{SysconfVar, Uid, sysconf};

/// The daemon's effective uid: the identity the kernel checks, and the one
/// the control socket compares its peers with.
pub fn current_uid() -> u32 {
    Uid::effective().as_raw()
}

/// CPUs the daemon may run on (`sched_getaffinity`), at least 1.
///
/// This is what a container or `taskset` grants, unlike the machine's count;
/// `instances "max"` uses it.
pub fn cpu_count() -> u32 {
    // SAFETY: cpu_set_t is plain bits, valid when zeroed; the kernel writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: set is a valid, writable cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } == 0 {
        // SAFETY: set is an initialized cpu_set_t.
        let n = unsafe { libc::CPU_COUNT(&set) };
        if n > 0 {
            return n as u32;
        }
    }
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => n as u32,
        _ => 1,
    }
}

/// Bytes per page, the unit of `/proc/PID/statm`.
pub fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of CPU times in
/// `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 100,
    }
}

/// Gives freed heap memory back to the kernel. A rescan parses every spec
/// file and frees it all again; without this the freed pages stay resident
/// in the daemon for good.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own allocator state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft limit on open files to the hard limit: every instance
/// holds two pipes and up to three log files open in the daemon, so the
/// usual soft limit of 1,024 would cap procd near 250 instances.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Takes an exclusive `flock` on `path` (created if missing) without
/// waiting; `WouldBlock` when another process holds it. The lock lasts as
/// long as the returned file (close-on-exec, so also until an `exec`).
pub fn lock_exclusive(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    // SAFETY: flock on an fd we own, no pointers.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Drops the pages of this program's code from the process's resident set; they stay in the page cache and
/// the next access maps them again. For the keeper, which lives as long as
/// the apps and is idle nearly all the time: the code of its last burst of
/// work (spawning, serializing) would otherwise stay mapped, in 64 KiB
/// fault-around blocks (1.6 MiB of it after 100 spawns).
pub fn trim_code_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else { return };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let path = fields.nth(3).unwrap_or("");
        // Code only: never written. Read-only data is not safe to drop, as
        // the loader wrote relocations (RELRO, the GOT) before protecting it.
        if path != exe.as_os_str() || perms != "r-xp" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
        // SAFETY: a whole mapping of our own binary's code, which nothing
        // writes: dropping its pages loses nothing (they are read back from
        // the file on the next access).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_values() {
        assert!(cpu_count() >= 1);
        assert!(page_size().is_power_of_two());
        assert!(clock_ticks_per_second() >= 1);
    }
}
