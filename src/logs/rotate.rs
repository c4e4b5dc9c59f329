//! Size rotation by rename: the generation names (`file.1` … `file.N`, and
//! their `.gz` forms), shifting them when a file is rotated, removing them on
//! flush, and gzip of a rotated file on a side thread.
//!
//! Rotation never copies and truncates: the live file is renamed, so a line
//! already written is never lost or duplicated, and a reader holding the old
//! file open keeps reading it to its end.
//!
//! Compression runs on its own `std::thread` so the pump that rotated never
//! waits for gzip. Because later rotations keep shifting names while the
//! thread works, each rotation bumps a shared *generation* counter under a
//! lock; the thread compresses into a temporary file and, under that lock,
//! computes where its source has moved to (`1 + generations since`) before
//! renaming the `.gz` into place (or discarding it if `keep` dropped it).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Rotations so far of one log path; the lock also serialises renames of its
/// generations between the writer and compression threads.
pub type Generation = Arc<Mutex<u64>>;

/// `path.N`: the N-th older generation of `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `path.gz`.
pub fn gz_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".gz");
    PathBuf::from(s)
}

/// Renames `from` to `to` when `from` exists; a missing generation is normal.
fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Moves `path` to `path.1`, each `path.i` to `path.i+1`, and drops what
/// would pass `keep`. With `keep == 0` the live file is simply removed.
/// The caller holds the [`Generation`] lock.
pub fn shift(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return remove_if_exists(path);
    }
    remove_if_exists(&rotated_path(path, keep))?;
    remove_if_exists(&gz_path(&rotated_path(path, keep)))?;
    for i in (1..keep).rev() {
        let (from, to) = (rotated_path(path, i), rotated_path(path, i + 1));
        rename_if_exists(&from, &to)?;
        rename_if_exists(&gz_path(&from), &gz_path(&to))?;
    }
    rename_if_exists(path, &rotated_path(path, 1))
}

/// Removes every rotated generation of `path` (for `flush`), whatever `keep`
/// was when they were made: it stops at the first gap.
pub fn remove_generations(path: &Path) -> io::Result<()> {
    for n in 1..=u32::MAX {
        let (plain, gz) = (rotated_path(path, n), gz_path(&rotated_path(path, n)));
        if !plain.exists() && !gz.exists() {
            break;
        }
        remove_if_exists(&plain)?;
        remove_if_exists(&gz)?;
    }
    Ok(())
}

/// Compresses `source` (already open on `path.1`, rotated at generation
/// `at`) into `path.K.gz` on a new thread, K being wherever that generation
/// has moved by the time gzip is done.
pub fn spawn_compress(path: PathBuf, source: File, generation: Generation, at: u64, keep: u32) {
    let spawned = std::thread::Builder::new()
        .name("procd-log-gzip".into())
        .spawn(move || {
            if let Err(e) = compress(&path, source, &generation, at, keep) {
                tracing::warn!(path = %path.display(), error = %e, "compressing a rotated log failed; it stays uncompressed");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the log compression thread; the rotated log stays uncompressed");
    }
}

fn compress(path: &Path, source: File, generation: &Generation, at: u64, keep: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".gz-{at}.tmp"));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let out = BufWriter::new(File::create(&tmp)?);
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        io::copy(&mut BufReader::with_capacity(256 * 1024, source), &mut gz)?;
        gz.finish()?.flush()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Held from here: no rotation may move the names while ours is placed.
    let now = generation.lock().unwrap_or_else(PoisonError::into_inner);
    let index = 1 + now.saturating_sub(at);
    if index > u64::from(keep) {
        return fs::remove_file(&tmp);
    }
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    let plain = rotated_path(path, index);
    fs::rename(&tmp, gz_path(&plain))?;
    remove_if_exists(&plain)
}
