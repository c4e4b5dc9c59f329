//! The scalar units of the spec syntax: durations, sizes and signals.
//!
//! Pure string-to-value functions; the messages they return are the
//! "expected ..." part of a located [`SpecError`](super::SpecError), so they
//! say what a valid value looks like.

use std::time::Duration;

/// Highest signal number Linux accepts (real-time signals included).
const MAX_SIGNAL: i128 = 64;

/// A humantime duration such as `"1600ms"`, `"1s"` or `"2m 30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected a duration string like \"1600ms\" or \"2s\", found {text:?} ({e})"))
}

/// A size in bytes: a plain number, or a number with a `K`, `M` or `G`
/// suffix meaning ×1024, ×1024², ×1024³ (PM2's meaning: `"300M"` is
/// 300 × 1024 × 1024), an optional trailing `B`, any case.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected = || format!("expected a size like \"10M\" (K, M, G are powers of 1024), found {text:?}");
    let upper = text.trim().to_ascii_uppercase();
    let unit_less = upper.strip_suffix('B').unwrap_or(&upper);
    let (number, factor) = match unit_less.chars().last() {
        Some('K') => (&unit_less[..unit_less.len() - 1], 1u64 << 10),
        Some('M') => (&unit_less[..unit_less.len() - 1], 1u64 << 20),
        Some('G') => (&unit_less[..unit_less.len() - 1], 1u64 << 30),
        _ => (unit_less, 1),
    };
    let number = number.trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(expected());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(factor).ok_or_else(|| format!("size {text:?} is too large"));
    }
    // Fractions such as "1.5G" are allowed; rounding to whole bytes is fine.
    let value: f64 = number.parse().map_err(|_| expected())?;
    let bytes = (value * factor as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// A signal by name (`"SIGINT"`, `"INT"`, `"int"`, `"SIGRTMIN+2"`) or number
/// as text (`"2"`); the names are the process module's, so what `show`
/// prints reads back.
pub fn parse_signal_name(text: &str) -> Result<i32, String> {
    crate::process::parse_signal(text)
        .ok_or_else(|| format!("unknown signal {text:?}; expected a name like \"SIGINT\", \"TERM\" or a number 1..=64"))
}

/// A signal given as a number; Linux has 1..=64.
pub fn signal_number(number: i128) -> Result<i32, String> {
    if (1..=MAX_SIGNAL).contains(&number) {
        Ok(number as i32)
    } else {
        Err(format!("signal number {number} is out of range; expected 1..=64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1600ms"), Ok(Duration::from_millis(1600)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 1s "), Ok(Duration::from_secs(1)));
        assert!(parse_duration("1600").unwrap_err().contains("\"1600ms\""));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        let table: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("512", Some(512)),
            ("512B", Some(512)),
            ("10K", Some(10 * 1024)),
            ("10kb", Some(10 * 1024)),
            ("300M", Some(300 * 1024 * 1024)),
            ("300mb", Some(300 * 1024 * 1024)),
            ("1G", Some(1 << 30)),
            ("1.5G", Some(3 << 29)),
            ("", None),
            ("M", None),
            ("-1M", None),
            ("10T", None),
            ("ten", None),
            ("99999999999999999999G", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_size(text).ok(), *expected, "{text:?}");
        }
    }

    #[test]
    fn signals_by_name_and_number() {
        let table: &[(&str, Option<i32>)] = &[
            ("SIGINT", Some(2)),
            ("INT", Some(2)),
            ("int", Some(2)),
            ("SigTerm", Some(15)),
            ("KILL", Some(9)),
            ("SIGWINCH", Some(28)),
            ("9", Some(9)),
            ("64", Some(64)),
            ("0", None),
            ("65", None),
            ("SIGFOO", None),
            ("", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_signal_name(text).ok(), *expected, "{text:?}");
        }
        assert_eq!(signal_number(-1).ok(), None);
    }
}
