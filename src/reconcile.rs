//! The reconcile plan: a pure function from what the files declare and what
//! the daemon currently supervises to the list of [`Action`]s that makes the
//! second equal to the first, touching nothing else.
//!
//! The plan is structural: it decides which instances must exist and with
//! which spec. Whether an existing instance is running (an operator may have
//! stopped its app) is not the plan's concern; the daemon applies actions to
//! stopped apps without starting them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::hash::changed_fields;
use crate::spec::{InstanceSpec, SpecHash};

/// One app as the config dir declares it.
#[derive(Debug, Clone)]
pub struct DesiredApp<'a> {
    pub name: &'a str,
    pub hash: &'a SpecHash,
    pub template: &'a InstanceSpec,
    /// Concrete instance count (`max` already resolved for this host).
    pub count: u32,
}

/// One app as the daemon supervises it now.
#[derive(Debug, Clone)]
pub struct ObservedApp<'a> {
    pub name: &'a str,
    pub hash: &'a SpecHash,
    pub template: &'a InstanceSpec,
    /// Indices of the instances that exist, whatever their status.
    pub indices: Vec<u32>,
}

/// A change to apply. Indices are always explicit so the plan can be shown
/// before it is applied (`reconcile --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A newly declared app: create these instances.
    Start { app: String, indices: Vec<u32> },
    /// An app no longer declared: stop and forget every instance.
    Stop { app: String, indices: Vec<u32> },
    /// The spec hash changed: replace these instances; `changed` names the
    /// spec fields that differ.
    Restart { app: String, indices: Vec<u32>, changed: Vec<String> },
    /// Only the count grew: add these instances, touch no other.
    ScaleUp { app: String, indices: Vec<u32> },
    /// Only the count shrank: stop these, highest index first.
    ScaleDown { app: String, indices: Vec<u32> },
}

impl Action {
    pub fn app(&self) -> &str {
        match self {
            Action::Start { app, .. }
            | Action::Stop { app, .. }
            | Action::Restart { app, .. }
            | Action::ScaleUp { app, .. }
            | Action::ScaleDown { app, .. } => app,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        match self {
            Action::Start { app, indices } => write!(f, "start    {app} [{}]", list(indices)),
            Action::Stop { app, indices } => write!(f, "stop     {app} [{}]", list(indices)),
            Action::Restart { app, indices, changed } => {
                write!(f, "restart  {app} [{}] changed: {}", list(indices), changed.join(", "))
            }
            Action::ScaleUp { app, indices } => write!(f, "scale-up {app} +[{}]", list(indices)),
            Action::ScaleDown { app, indices } => write!(f, "scale-down {app} -[{}]", list(indices)),
        }
    }
}

/// Computes the actions that turn `observed` into `desired`, sorted by app
/// name; removals come first so a renamed app frees its resources before its
/// successor starts.
pub fn plan(desired: &[DesiredApp<'_>], observed: &[ObservedApp<'_>]) -> Vec<Action> {
    let want: BTreeMap<&str, &DesiredApp<'_>> = desired.iter().map(|d| (d.name, d)).collect();
    let have: BTreeMap<&str, &ObservedApp<'_>> = observed.iter().map(|o| (o.name, o)).collect();
    let mut removals = Vec::new();
    let mut changes = Vec::new();

    for (name, o) in &have {
        if !want.contains_key(name) {
            removals.push(Action::Stop { app: name.to_string(), indices: sorted(&o.indices) });
        }
    }
    for (name, d) in &want {
        let app = name.to_string();
        let Some(o) = have.get(name) else {
            changes.push(Action::Start { app, indices: (0..d.count).collect() });
            continue;
        };
        let existing = sorted(&o.indices);
        let keep: Vec<u32> = existing.iter().copied().filter(|i| *i < d.count).collect();
        let mut surplus: Vec<u32> = existing.iter().copied().filter(|i| *i >= d.count).collect();
        surplus.reverse();
        let missing: Vec<u32> = (0..d.count).filter(|i| !existing.contains(i)).collect();
        if !surplus.is_empty() {
            changes.push(Action::ScaleDown { app: app.clone(), indices: surplus });
        }
        if d.hash != o.hash && !keep.is_empty() {
            changes.push(Action::Restart {
                app: app.clone(),
                indices: keep,
                changed: changed_fields(o.template, d.template),
            });
        }
        if !missing.is_empty() {
            changes.push(Action::ScaleUp { app, indices: missing });
        }
    }
    removals.extend(changes);
    removals
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::hash::spec_hash;
    use crate::spec::{LogSpec, RestartSpec, StopSpec};

    fn template(argv0: &str) -> InstanceSpec {
        InstanceSpec {
            argv: vec![argv0.to_string()],
            cwd: None,
            env: Default::default(),
            user: None,
            group: None,
            groups: vec![],
            stop: StopSpec::default(),
            restart: RestartSpec::default(),
            logs: LogSpec::default(),
        }
    }

    struct App {
        name: &'static str,
        t: InstanceSpec,
        h: SpecHash,
    }

    fn app(name: &'static str, argv0: &str) -> App {
        let t = template(argv0);
        let h = spec_hash(&t);
        App { name, t, h }
    }

    fn want<'a>(a: &'a App, count: u32) -> DesiredApp<'a> {
        DesiredApp { name: a.name, hash: &a.h, template: &a.t, count }
    }

    fn have<'a>(a: &'a App, indices: &[u32]) -> ObservedApp<'a> {
        ObservedApp { name: a.name, hash: &a.h, template: &a.t, indices: indices.to_vec() }
    }

    #[test]
    fn table() {
        let web = app("web", "web");
        let web2 = app("web", "web-v2");
        let api = app("api", "api");
        let old = app("old", "x");
        let s = |x: &str| x.to_string();
        type Case<'a> = (&'a str, Vec<DesiredApp<'a>>, Vec<ObservedApp<'a>>, Vec<Action>);
        let cases: Vec<Case> = vec![
            ("nothing to do", vec![], vec![], vec![]),
            ("converged", vec![want(&web, 2)], vec![have(&web, &[0, 1])], vec![]),
            ("new app", vec![want(&web, 2)], vec![], vec![Action::Start { app: s("web"), indices: vec![0, 1] }]),
            (
                "removed app",
                vec![],
                vec![have(&web, &[1, 0])],
                vec![Action::Stop { app: s("web"), indices: vec![0, 1] }],
            ),
            (
                "scale up touches no existing instance",
                vec![want(&web, 4)],
                vec![have(&web, &[0, 1])],
                vec![Action::ScaleUp { app: s("web"), indices: vec![2, 3] }],
            ),
            (
                "scale down highest first",
                vec![want(&web, 1)],
                vec![have(&web, &[0, 1, 2, 3])],
                vec![Action::ScaleDown { app: s("web"), indices: vec![3, 2, 1] }],
            ),
            (
                "spec change restarts every kept instance",
                vec![want(&web2, 2)],
                vec![have(&web, &[0, 1])],
                vec![Action::Restart { app: s("web"), indices: vec![0, 1], changed: vec![s("argv")] }],
            ),
            (
                "spec change with scale down restarts only the kept",
                vec![want(&web2, 1)],
                vec![have(&web, &[0, 1])],
                vec![
                    Action::ScaleDown { app: s("web"), indices: vec![1] },
                    Action::Restart { app: s("web"), indices: vec![0], changed: vec![s("argv")] },
                ],
            ),
            (
                "spec change with scale up starts the new with the new spec",
                vec![want(&web2, 3)],
                vec![have(&web, &[0])],
                vec![
                    Action::Restart { app: s("web"), indices: vec![0], changed: vec![s("argv")] },
                    Action::ScaleUp { app: s("web"), indices: vec![1, 2] },
                ],
            ),
            (
                "a hole left by a lost instance is filled",
                vec![want(&web, 3)],
                vec![have(&web, &[0, 2])],
                vec![Action::ScaleUp { app: s("web"), indices: vec![1] }],
            ),
            (
                "untouched apps are not in the plan; removals first",
                vec![want(&web, 1), want(&api, 1)],
                vec![have(&web, &[0]), have(&old, &[0])],
                vec![
                    Action::Stop { app: s("old"), indices: vec![0] },
                    Action::Start { app: s("api"), indices: vec![0] },
                ],
            ),
        ];
        for (name, desired, observed, expected) in cases {
            assert_eq!(plan(&desired, &observed), expected, "{name}");
        }
    }
}
