//! The apps' `watch` settings: one file watcher per app, kept in step with
//! the specs, and a change turned into a restart of the running instances.

use super::Daemon;
use crate::app_watch::{AppWatcher, WatchEvent};
use crate::spec::SpecError;
use crate::supervisor::RestartReason;
use crate::supervisor::task::Control;

impl Daemon {
    /// Makes the file watchers match the apps' `watch` settings: new ones
    /// started, changed ones replaced, removed ones dropped. An app's own
    /// log files are never watched.
    pub(super) fn sync_watchers(&mut self) {
        self.watchers
            .retain(|name, (spec, _)| self.desired.iter().any(|s| s.name == *name && s.watch.as_ref() == Some(spec)));
        self.watch_errors.clear();
        for spec in &self.desired {
            let Some(watch) = &spec.watch else { continue };
            if self.watchers.contains_key(&spec.name) {
                continue;
            }
            let count = spec.instances.resolve(self.apps.cpus);
            let own_files = (0..count)
                .flat_map(|i| {
                    let p = self.apps.logs.paths(&spec.name, i, &spec.template.logs);
                    [p.out, p.err, p.combined]
                })
                .flatten()
                .collect();
            match AppWatcher::start(&spec.name, watch, own_files, self.watch_tx.clone()) {
                Ok(w) => {
                    self.watchers.insert(spec.name.clone(), (watch.clone(), w));
                }
                Err(e) => self.watch_errors.push(SpecError {
                    file: spec.source.file.clone(),
                    line: spec.source.line,
                    column: 1,
                    message: format!("app `{}`: cannot watch: {e}", spec.name),
                }),
            }
        }
    }

    /// A watched file changed: restart the app's running instances (never
    /// start a stopped one), naming the path.
    pub(super) fn on_file_change(&mut self, event: WatchEvent) {
        tracing::info!(app = %event.app, "watched file changed: {}", event.path.display());
        let reason = RestartReason::Watch { path: event.path };
        self.apps.send_all(&[event.app], || Control::RestartIfRunning(reason.clone()));
    }
}
