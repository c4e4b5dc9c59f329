//! Quoting for each file format, so a path with a space or a `%` in an
//! option cannot change what the init system runs.

/// POSIX shell: bare when only safe characters, else single quotes.
pub fn sh(s: &str) -> String {
    let safe = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if safe { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// A word of a systemd `Exec*=` line: `%` and `$` escaped (specifiers and
/// variable expansion), double quotes when the word has spaces or quotes.
pub fn systemd_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    let needs_quotes = escaped.is_empty() || escaped.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c));
    if needs_quotes { format!("\"{}\"", escaped.replace('\\', r"\\").replace('"', "\\\"")) } else { escaped }
}

/// A systemd value that is not an Exec line (`Environment=`, `User=`):
/// specifiers escaped; `Environment=` quotes the whole assignment.
pub fn systemd_assignment(key: &str, value: &str) -> String {
    let pair = format!("{key}={}", value.replace('%', "%%"));
    if pair.chars().any(|c| c.is_whitespace() || "\"\\".contains(c)) {
        format!("\"{}\"", pair.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        pair
    }
}

/// XML text (the launchd plist).
pub fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A shell variable name from a service name (rc.d's `${name}_enable`).
pub fn sh_var(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_hostile_strings_one_word() {
        assert_eq!(sh("/usr/bin/procd"), "/usr/bin/procd");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
        assert_eq!(systemd_word("/opt/my procd/bin"), "\"/opt/my procd/bin\"");
        assert_eq!(systemd_word("/x/%h/$HOME"), "/x/%%h/$$HOME");
        assert_eq!(systemd_assignment("HOME", "/home/a b"), "\"HOME=/home/a b\"");
        assert_eq!(systemd_assignment("PATH", "/bin"), "PATH=/bin");
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(sh_var("procd-app.1"), "procd_app_1");
    }
}
