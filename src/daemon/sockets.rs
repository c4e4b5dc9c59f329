//! An app's listening sockets as the daemon keeps them: bound before its
//! first instance, shared by its instances, held by the keeper for the next
//! daemon, rebound only where the `listen` entries changed.

use std::sync::Arc;

use super::apps::Apps;
use crate::listen::{ListenSet, SocketOwner};
use crate::process;
use crate::spec::AppSpec;

/// Keeper key prefix of an app's listening sockets (fds) and their
/// addresses (record).
pub(super) const LISTEN_KEY: &str = "listen/";

/// Who owns an app's Unix sockets: its user, when it has one.
fn socket_owner(spec: &AppSpec) -> Option<SocketOwner> {
    let t = &spec.template;
    let creds = process::resolve_credentials(t.user.as_deref(), t.group.as_deref(), &t.groups).ok()??;
    Some(SocketOwner { uid: creds.uid, gid: creds.gid })
}

impl Apps {
    /// The app's listening sockets, bound now if needed: the ones it has
    /// (or a previous daemon had) are kept, new addresses bound, removed ones
    /// closed. The keeper holds a copy for the next daemon.
    ///
    /// A failure (an address in use...) is logged and shown in `status`
    /// until a rescan succeeds, and is `Err`: nothing new may start. Runs a
    /// previous daemon started keep the sockets it held, which are returned
    /// then, as the set to run them with.
    pub(super) fn sockets_for(&mut self, spec: &AppSpec) -> Result<Option<Arc<ListenSet>>, ()> {
        let key = format!("{LISTEN_KEY}{}", spec.name);
        if spec.listen.is_empty() {
            if self.sockets.remove(&spec.name).is_some() {
                self.keeper.release(key.clone());
                self.keeper.store(key, None::<&Vec<String>>);
            }
            return Ok(None);
        }
        if let Some(set) = self.sockets.get(&spec.name)
            && set.matches(&spec.listen)
        {
            return Ok(Some(set.clone()));
        }
        let held = self.held_sockets.remove(&spec.name);
        let from_held = held.is_some();
        let base = match (held, self.sockets.get(&spec.name)) {
            (Some(held), _) => held,
            (None, Some(current)) => match current.duplicate() {
                Ok(fds) => fds,
                Err(e) => {
                    return self.listen_failed(spec, format!("app `{}`: cannot keep the sockets: {e}", spec.name));
                }
            },
            (None, None) => Vec::new(),
        };
        let mut set = ListenSet::from_held(base);
        if let Err(e) = set.update(&spec.listen, socket_owner(spec)) {
            let failed = self.listen_failed(spec, format!("app `{}`: {e}", spec.name));
            // The set is unchanged: adopted runs go on with what was held.
            if from_held {
                let set = Arc::new(set);
                self.sockets.insert(spec.name.clone(), set.clone());
                return Ok(Some(set));
            }
            return failed;
        }
        self.listen_errors.remove(&spec.name);
        let keys: Vec<String> = set.sockets().iter().map(|s| s.key.clone()).collect();
        self.keeper.hold(key.clone(), &set.fds());
        self.keeper.store(key, Some(&keys));
        let set = Arc::new(set);
        self.sockets.insert(spec.name.clone(), set.clone());
        Ok(Some(set))
    }

    fn listen_failed(&mut self, spec: &AppSpec, error: String) -> Result<Option<Arc<ListenSet>>, ()> {
        tracing::error!(app = %spec.name, "{error}");
        self.listen_errors.insert(spec.name.clone(), error);
        Err(())
    }

    /// Closes the sockets of apps no longer declared.
    pub fn drop_sockets(&mut self, declared: &[AppSpec]) {
        let gone: Vec<String> =
            self.sockets.keys().filter(|n| !declared.iter().any(|s| &s.name == *n)).cloned().collect();
        for name in gone {
            self.sockets.remove(&name);
            let key = format!("{LISTEN_KEY}{name}");
            self.keeper.release(key.clone());
            self.keeper.store(key, None::<&Vec<String>>);
        }
        // Sockets a previous daemon held for apps not declared any more:
        // closed in the keeper too, or the port stays bound for nobody.
        for name in std::mem::take(&mut self.held_sockets).into_keys() {
            let key = format!("{LISTEN_KEY}{name}");
            self.keeper.release(key.clone());
            self.keeper.store(key, None::<&Vec<String>>);
        }
        self.listen_errors.retain(|n, _| declared.iter().any(|s| &s.name == n));
    }
}
