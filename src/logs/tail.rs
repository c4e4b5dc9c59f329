//! Reading log files back for `procd logs`: the last N lines (across rotated
//! generations) and following new lines across rotations. Client side,
//! synchronous, reads the files directly: no daemon needed.
//!
//! `last_lines` reads each file backwards in 64 KiB blocks, so a huge file
//! costs only the blocks that hold the wanted lines. `follow` polls every
//! [`POLL`]: it notices a rotation by the path's inode changing (draining the
//! old file first, so no line written before the rename is missed) and a
//! truncation (`flush`) by the file shrinking below the read position.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::logs::lines::MAX_LINE;
use crate::logs::rotate::{gz_path, rotated_path};

/// How often `follow` looks for new data.
pub const POLL: Duration = Duration::from_millis(100);
const BLOCK: u64 = 64 * 1024;

/// The last `n` lines of each labelled file, oldest first, file after file
/// (not interleaved: lines of different files carry no common clock). When
/// the live file holds fewer than `n` lines, its rotated generations
/// (`file.1`, `file.2`, …, gzipped or not) supply the rest. Missing files
/// give no lines.
pub fn last_lines(files: &[(String, PathBuf)], n: usize) -> io::Result<Vec<(String, String)>> {
    let mut all = Vec::new();
    for (label, path) in files {
        let mut newest_first: Vec<Vec<String>> = Vec::new();
        let mut need = n;
        let mut generation = 0u32;
        while need > 0 {
            let p = if generation == 0 { path.clone() } else { rotated_path(path, generation) };
            let lines = if p.exists() {
                last_of_file(&p, need)?
            } else if gz_path(&p).exists() {
                let mut data = Vec::new();
                flate2::read::GzDecoder::new(File::open(gz_path(&p))?).read_to_end(&mut data)?;
                last_of(&data, need, true)
            } else if generation == 0 {
                Vec::new()
            } else {
                break;
            };
            need -= lines.len().min(need);
            newest_first.push(lines);
            generation = match generation.checked_add(1) {
                Some(g) => g,
                None => break,
            };
        }
        for line in newest_first.into_iter().rev().flatten() {
            all.push((label.clone(), line));
        }
    }
    Ok(all)
}

/// The last `n` lines of `data`; `whole` says whether `data` starts at the
/// beginning of a line (else its first line is a fragment and skipped).
fn last_of(data: &[u8], n: usize, whole: bool) -> Vec<String> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    if data.is_empty() && whole {
        return Vec::new();
    }
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if !whole && lines.len() > n {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

/// Reads `path` backwards until `n` lines are in hand.
fn last_of_file(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let file = File::open(path)?;
    let mut pos = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut newlines = 0usize;
    while pos > 0 {
        let step = BLOCK.min(pos);
        pos -= step;
        let mut block = vec![0; usize::try_from(step).unwrap_or(0)];
        file.read_exact_at(&mut block, pos)?;
        newlines += memchr::memchr_iter(b'\n', &block).count();
        block.extend_from_slice(&buf);
        buf = block;
        // A trailing '\n' ends the last line rather than starting one.
        if newlines - usize::from(buf.last() == Some(&b'\n')) >= n {
            break;
        }
    }
    Ok(last_of(&buf, n, pos == 0))
}

/// One followed file.
struct Followed {
    label: String,
    path: PathBuf,
    /// The file being read; may be an old generation until it is drained.
    file: Option<File>,
    ino: u64,
    pos: u64,
    /// A line whose newline has not been written yet.
    partial: Vec<u8>,
}

/// Prints lines appended to `files` (as `label | line`, or the bare line
/// for an empty label) until `stop()` returns true, checked every [`POLL`].
/// Starts at the current ends; a file that does not exist yet is read from
/// its start once it appears. Follows rotations and truncations.
pub fn follow(files: &[(String, PathBuf)], out: &mut dyn Write, stop: &dyn Fn() -> bool) -> io::Result<()> {
    let mut followed: Vec<Followed> = files
        .iter()
        .map(|(label, path)| {
            let mut f =
                Followed { label: label.clone(), path: path.clone(), file: None, ino: 0, pos: 0, partial: Vec::new() };
            if let Ok(file) = File::open(path)
                && let Ok(meta) = file.metadata()
            {
                (f.ino, f.pos, f.file) = (meta.ino(), meta.len(), Some(file));
            }
            f
        })
        .collect();
    while !stop() {
        let mut progressed = false;
        for f in &mut followed {
            progressed |= f.poll(out)?;
        }
        out.flush()?;
        if !progressed {
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

impl Followed {
    /// Reads what is new; true if anything was printed.
    fn poll(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        let current = std::fs::metadata(&self.path).ok();
        let rotated = match (&self.file, &current) {
            (Some(_), Some(m)) => m.ino() != self.ino,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut printed = self.drain(out)?;
        if rotated || self.file.is_none() {
            if let Some(file) = current.and_then(|_| File::open(&self.path).ok()) {
                self.flush_partial(out)?;
                self.ino = file.metadata()?.ino();
                (self.file, self.pos) = (Some(file), 0);
                printed |= self.drain(out)?;
            } else if rotated {
                self.file = None;
            }
        }
        Ok(printed)
    }

    /// Reads the open file from `pos` to its end.
    fn drain(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if file.metadata()?.len() < self.pos {
            // Truncated (flush): start again from the beginning.
            (self.pos, self.partial) = (0, Vec::new());
        }
        let mut printed = false;
        let mut block = vec![0; 64 * 1024];
        loop {
            let n = file.read_at(&mut block, self.pos)?;
            if n == 0 {
                return Ok(printed);
            }
            self.pos += n as u64;
            self.partial.extend_from_slice(&block[..n]);
            if let Some(last) = memchr::memrchr(b'\n', &self.partial) {
                for line in self.partial[..last].split(|&b| b == b'\n') {
                    write_line(out, &self.label, line)?;
                }
                self.partial.drain(..=last);
                printed = true;
            }
            if self.partial.len() > MAX_LINE {
                write_line(out, &self.label, &self.partial)?;
                self.partial.clear();
            }
        }
    }

    fn flush_partial(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.partial.is_empty() {
            write_line(out, &self.label, &self.partial)?;
            self.partial.clear();
        }
        Ok(())
    }
}

fn write_line(out: &mut dyn Write, label: &str, line: &[u8]) -> io::Result<()> {
    if !label.is_empty() {
        write!(out, "{label} | ")?;
    }
    out.write_all(line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::last_of;

    #[test]
    fn last_of_skips_the_leading_fragment_only_when_not_whole() {
        assert_eq!(last_of(b"a\nb\nc\n", 2, true), ["b", "c"]);
        assert_eq!(last_of(b"ment\nb\nc", 5, false), ["ment", "b", "c"]);
        assert_eq!(last_of(b"ment\nb\nc\n", 2, false), ["b", "c"]);
        assert!(last_of(b"", 3, true).is_empty());
    }
}
