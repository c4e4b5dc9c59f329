//! The read buffer of one pipe, which turns arbitrary reads into whole lines.
//!
//! Reads land at the end of a fixed buffer; only the prefix up to the last
//! '\n' is handed out, the partial tail stays for the next read. Work is per
//! *read*, not per line: one `memchr` for the first newline (to enforce the
//! length limit on the line that started in an earlier read) and one
//! `memrchr` for the last.
//!
//! # Line length limit
//!
//! A line longer than [`MAX_LINE`] bytes (64 KiB, newline excluded) is split
//! into pieces of exactly `MAX_LINE` bytes, each written as a line; nothing is
//! dropped. Because a read is at most [`READ_SIZE`] ≤ `MAX_LINE` bytes and
//! the unterminated tail never exceeds `MAX_LINE` after a read, a line that
//! lies inside one read is always short enough: only the line continuing from
//! earlier reads, or the tail, can need a cut, and at most once per read.

/// Longest line written whole; longer lines are split every `MAX_LINE` bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes asked of the pipe per `read()`.
pub const READ_SIZE: usize = 64 * 1024;
/// Buffer size: several reads are batched into one write when the app is fast.
const CAPACITY: usize = 512 * 1024;

/// Bytes read from a pipe, split into complete lines and a partial tail.
pub struct LineBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` holding data.
    filled: usize,
    /// Start of the unterminated line; everything before it is whole lines.
    line_start: usize,
}

impl Default for LineBuf {
    /// Empty: the buffer grows as output arrives, so an instance that never
    /// writes costs nothing, and a quiet one only what its bursts need.
    fn default() -> Self {
        LineBuf { buf: Vec::new(), filled: 0, line_start: 0 }
    }
}

impl LineBuf {
    /// Whether another full read fits (with a byte of slack for a cut).
    pub fn has_room(&self) -> bool {
        self.filled + READ_SIZE < self.buf.len().max(CAPACITY)
    }

    /// Where the next read goes (at most `READ_SIZE` bytes); follow with
    /// [`commit`](Self::commit).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.filled + READ_SIZE >= self.buf.len() && self.buf.len() < CAPACITY {
            // Doubling, from one read's worth, up to the batching capacity.
            let grown = (self.buf.len() * 2).max(self.filled + READ_SIZE + 1).min(CAPACITY);
            self.buf.resize(grown, 0);
        }
        let end = (self.filled + READ_SIZE).min(self.buf.len());
        &mut self.buf[self.filled..end]
    }

    /// Takes in `n` bytes just read into [`spare`](Self::spare).
    pub fn commit(&mut self, n: usize) {
        let start = self.filled;
        self.filled = (self.filled + n).min(self.buf.len());
        if let Some(p) = memchr::memchr(b'\n', &self.buf[start..self.filled]) {
            let mut nl = start + p;
            while nl - self.line_start > MAX_LINE {
                self.cut(self.line_start + MAX_LINE);
                nl += 1;
            }
            if let Some(q) = memchr::memrchr(b'\n', &self.buf[nl..self.filled]) {
                self.line_start = nl + q + 1;
            }
        }
        while self.filled - self.line_start > MAX_LINE {
            self.cut(self.line_start + MAX_LINE);
        }
    }

    /// Inserts a newline at `at` and starts the next line after it.
    fn cut(&mut self, at: usize) {
        if self.filled == self.buf.len() {
            self.buf.push(0);
        }
        self.buf.copy_within(at..self.filled, at + 1);
        self.buf[at] = b'\n';
        self.filled += 1;
        self.line_start = at + 1;
    }

    /// At EOF: terminates the partial last line so it is written too.
    pub fn finish(&mut self) {
        if self.filled > self.line_start {
            if self.filled == self.buf.len() {
                self.buf.push(0);
            }
            self.buf[self.filled] = b'\n';
            self.filled += 1;
            self.line_start = self.filled;
        }
    }

    /// The whole lines ready to be written.
    pub fn complete(&self) -> &[u8] {
        &self.buf[..self.line_start]
    }

    /// Drops the lines returned by [`complete`](Self::complete), keeping the tail.
    pub fn consume(&mut self) {
        self.buf.copy_within(self.line_start..self.filled, 0);
        self.filled -= self.line_start;
        self.line_start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lb: &mut LineBuf, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in data.chunks(READ_SIZE) {
            if !lb.has_room() {
                out.extend_from_slice(lb.complete());
                lb.consume();
            }
            lb.spare()[..piece.len()].copy_from_slice(piece);
            lb.commit(piece.len());
        }
        out.extend_from_slice(lb.complete());
        lb.consume();
        out
    }

    #[test]
    fn split_line_is_held_until_complete() {
        let mut lb = LineBuf::default();
        assert_eq!(feed(&mut lb, b"one\ntw"), b"one\n");
        assert_eq!(feed(&mut lb, b"o\nthr"), b"two\n");
        lb.finish();
        assert_eq!(lb.complete(), b"thr\n");
    }

    #[test]
    fn long_lines_are_cut_at_the_limit_and_nothing_is_lost() {
        for len in [MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, 3 * MAX_LINE + 17, 1_000_000] {
            let mut lb = LineBuf::default();
            let mut data = vec![b'x'; len];
            data.extend_from_slice(b"\nshort\n");
            let mut out = Vec::new();
            for piece in data.chunks(1000) {
                out.extend(feed(&mut lb, piece));
            }
            let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
            let xs: usize = lines.iter().filter(|l| l.first() == Some(&b'x')).map(|l| l.len()).sum();
            assert_eq!(xs, len, "len {len}");
            assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
            assert_eq!(lines[lines.len() - 2], b"short");
        }
    }
}
