//! The account `procd startup -u USER` runs the daemon as: its name, primary
//! group and home, read with `getent` (so NSS sources such as LDAP count)
//! and from `/etc/passwd` and `/etc/group` where `getent` is missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::StartupError;

/// A user as the generated files need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group's name (numeric when the group has no entry).
    pub group: String,
    /// The home directory: `HOME` of the daemon and the base of its
    /// default `--home` and config dir.
    pub home: PathBuf,
}

impl Account {
    /// The daemon's default config dir for this user: the XDG default
    /// (`~/.config/procd/conf.d`), where the user's own `procd check` looks.
    pub fn config_dir(&self) -> PathBuf {
        self.home.join(".config/procd/conf.d")
    }

    /// The daemon's default `--home` for this user. Not the XDG layout: that
    /// puts the socket under `$XDG_RUNTIME_DIR`, which a boot service does
    /// not have and a login shell does, so the user's client would look
    /// elsewhere; with one `--home`, `PROCD_HOME` reaches the daemon.
    pub fn procd_home(&self) -> PathBuf {
        self.home.join(".procd")
    }
}

/// Looks `user` (a name or a uid) up.
pub fn lookup_account(user: &str) -> Result<Account, StartupError> {
    let passwd = getent("passwd", user).or_else(|| file_entry("/etc/passwd", user));
    let Some(line) = passwd else { return Err(StartupError::UnknownUser(user.to_string())) };
    let (name, uid, gid, home) = parse_passwd(&line)
        .ok_or_else(|| StartupError::BadAccountEntry { user: user.to_string(), line: line.clone() })?;
    let group = getent("group", &gid.to_string())
        .or_else(|| file_entry("/etc/group", &gid.to_string()))
        .and_then(|l| l.split(':').next().map(str::to_string))
        .unwrap_or_else(|| gid.to_string());
    Ok(Account { name, uid, group, home })
}

fn getent(db: &str, key: &str) -> Option<String> {
    let out = Command::new("getent").args([db, "--", key]).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.lines().next().map(str::to_string)).flatten()
}

/// The line of a colon-separated database whose name (field 1) or id
/// (field 3) is `key`.
fn file_entry(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    find_entry(&text, key)
}

fn find_entry(text: &str, key: &str) -> Option<String> {
    let by_name = text.lines().find(|l| l.split(':').next() == Some(key));
    let by_id = || text.lines().find(|l| l.split(':').nth(2) == Some(key));
    by_name.or_else(by_id).map(str::to_string)
}

/// `name:x:uid:gid:gecos:home:shell` → (name, uid, gid, home).
fn parse_passwd(line: &str) -> Option<(String, u32, u32, PathBuf)> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 || f[0].is_empty() || f[5].is_empty() {
        return None;
    }
    Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_parse_or_are_refused() {
        assert_eq!(
            parse_passwd("app:x:1001:1002:App,,,:/home/app:/bin/sh"),
            Some(("app".into(), 1001, 1002, "/home/app".into()))
        );
        for bad in ["", "app:x:1001", "app:x:uid:1:g:/h:/s", "app:x:1:1:g::/s"] {
            assert_eq!(parse_passwd(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entries_are_found_by_name_or_by_id() {
        let db = "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001::/home/app:/bin/sh\n";
        assert!(find_entry(db, "app").unwrap().starts_with("app:"));
        assert!(find_entry(db, "1001").unwrap().starts_with("app:"));
        assert_eq!(find_entry(db, "nobody"), None);
    }

    #[test]
    fn root_is_found() {
        let root = lookup_account("root").unwrap();
        assert_eq!((root.name.as_str(), root.uid), ("root", 0));
    }
}
