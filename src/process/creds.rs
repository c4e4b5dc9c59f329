//! [`Credentials`]: the numeric uid, gid and supplementary groups an app runs
//! with, resolved from the names of its spec.
//!
//! Resolution reads the user and group databases (NSS, possibly LDAP), which
//! may block: do it when a spec is loaded, not on the respawn path.

use std::ffi::CString;
use std::io;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

use super::error::ProcessError;

/// Who an app runs as, all numeric so that [`launch`](super::launch) needs no
/// database lookup between `fork` and `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// Real, effective and saved user id of the child.
    pub uid: u32,
    /// Real, effective and saved group id of the child.
    pub gid: u32,
    /// Supplementary groups, set with `setgroups` (an empty list drops them all).
    pub groups: Vec<u32>,
}

/// Resolves the `user`, `group` and `groups` of a spec into [`Credentials`].
///
/// - `user`: a name or a numeric uid. Without it the daemon's effective uid is
///   used.
/// - `group`: a name or gid; by default the user's primary group (so a
///   numeric uid without a passwd entry needs an explicit group).
/// - `groups`: supplementary group names or gids. When empty and `user` is
///   given, the user's groups from the group database, as `initgroups` does;
///   when empty and only `group` is given, none.
///
/// Returns `Ok(None)` when neither `user` nor `group` is given: the app runs
/// as the daemon's user, groups included.
pub fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
    groups: &[String],
) -> Result<Option<Credentials>, ProcessError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let account = match user {
        Some(user) => Some(lookup_user(user)?),
        None => None,
    };
    let uid = match &account {
        Some((uid, _)) => *uid,
        None => Uid::effective().as_raw(),
    };
    let gid = match (group, &account) {
        (Some(group), _) => lookup_group(group)?,
        (None, Some((_, Some(entry)))) => entry.gid.as_raw(),
        (None, _) => {
            return Err(ProcessError::UnknownUser { user: user.unwrap_or_default().to_owned() });
        }
    };
    let groups = if !groups.is_empty() {
        groups.iter().map(|g| lookup_group(g)).collect::<Result<Vec<_>, _>>()?
    } else {
        match &account {
            Some((_, Some(entry))) => database_groups(entry, gid)?,
            _ => Vec::new(),
        }
    };
    Ok(Some(Credentials { uid, gid, groups }))
}

/// A uid and, when the database has one, its passwd entry.
type Account = (u32, Option<User>);

fn lookup_user(user: &str) -> Result<Account, ProcessError> {
    let lookup_err =
        |e: nix::Error| ProcessError::Lookup { what: "user", name: user.to_owned(), source: io::Error::from(e) };
    if let Some(uid) = numeric(user) {
        let entry = User::from_uid(Uid::from_raw(uid)).map_err(lookup_err)?;
        return Ok((uid, entry));
    }
    match User::from_name(user).map_err(lookup_err)? {
        Some(entry) => Ok((entry.uid.as_raw(), Some(entry))),
        None => Err(ProcessError::UnknownUser { user: user.to_owned() }),
    }
}

fn lookup_group(group: &str) -> Result<u32, ProcessError> {
    if let Some(gid) = numeric(group) {
        return Ok(gid);
    }
    match Group::from_name(group) {
        Ok(Some(entry)) => Ok(entry.gid.as_raw()),
        Ok(None) => Err(ProcessError::UnknownGroup { group: group.to_owned() }),
        Err(e) => Err(ProcessError::Lookup { what: "group", name: group.to_owned(), source: io::Error::from(e) }),
    }
}

/// The groups `initgroups(name, gid)` would set: every group listing the user,
/// plus `gid` itself.
fn database_groups(entry: &User, gid: u32) -> Result<Vec<u32>, ProcessError> {
    let lookup_err =
        |source: io::Error| ProcessError::Lookup { what: "supplementary groups of", name: entry.name.clone(), source };
    let name =
        CString::new(entry.name.as_str()).map_err(|e| lookup_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let list = getgrouplist(&name, Gid::from_raw(gid)).map_err(|e| lookup_err(e.into()))?;
    Ok(list.into_iter().map(Gid::as_raw).collect())
}

/// A uid/gid written as digits; names are never all digits by convention.
fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_means_the_daemons_user() {
        assert_eq!(resolve_credentials(None, None, &[]).unwrap(), None);
    }

    #[test]
    fn root_by_name_and_by_number_agree() {
        let by_name = resolve_credentials(Some("root"), None, &[]).unwrap().unwrap();
        let by_uid = resolve_credentials(Some("0"), None, &[]).unwrap().unwrap();
        assert_eq!(by_name, by_uid);
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert!(by_name.groups.contains(&0));
    }

    #[test]
    fn explicit_groups_replace_the_database_ones() {
        let c = resolve_credentials(Some("root"), Some("123"), &["7".into(), "root".into()]).unwrap().unwrap();
        assert_eq!((c.gid, c.groups), (123, vec![7, 0]));
    }

    #[test]
    fn numeric_uid_without_entry_needs_a_group() {
        let err = resolve_credentials(Some("54321"), None, &[]).unwrap_err();
        assert!(err.to_string().contains("54321"), "{err}");
        let c = resolve_credentials(Some("54321"), Some("54321"), &[]).unwrap().unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (54321, 54321, vec![]));
    }

    #[test]
    fn unknown_names_are_named_in_the_error() {
        let err = resolve_credentials(Some("no-such-user-procd"), None, &[]).unwrap_err();
        assert!(err.to_string().contains("no-such-user-procd"), "{err}");
        let err = resolve_credentials(None, Some("no-such-group-procd"), &[]).unwrap_err();
        assert!(err.to_string().contains("no-such-group-procd"), "{err}");
    }
}
