//! The spec hash: what decides whether a running instance is out of date.
//!
//! The hash covers only [`InstanceSpec`], in its canonical JSON form (fields
//! in declaration order, maps sorted, durations in whole milliseconds), so
//! comments, formatting, key order and the instance count never restart an
//! app, while any change to what an instance runs does.

use std::fmt::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{InstanceSpec, SpecHash};

/// Hex SHA-256 of the canonical JSON of `template`.
pub fn spec_hash(template: &InstanceSpec) -> SpecHash {
    // Serializing plain structs, strings and sorted maps cannot fail; the
    // empty fallback only keeps this function total.
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    SpecHash(hex)
}

/// The fields that differ between two templates, named as serialized
/// (`"argv"`, `"stop"`); env differences are listed per variable
/// (`"env.PORT"`) for `reconcile --dry-run` to say why an app restarts.
pub fn changed_fields(a: &InstanceSpec, b: &InstanceSpec) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (field, old) in &a {
        let new = b.get(field).unwrap_or(&Value::Null);
        if old == new {
            continue;
        }
        match (field.as_str(), old, new) {
            ("env", Value::Object(old_env), Value::Object(new_env)) => {
                let mut keys: Vec<&String> = old_env.keys().chain(new_env.keys()).collect();
                keys.sort();
                keys.dedup();
                let differs = |key: &&String| old_env.get(*key) != new_env.get(*key);
                changed.extend(keys.into_iter().filter(differs).map(|key| format!("env.{key}")));
            }
            _ => changed.push(field.clone()),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::spec::decode_document;
    use crate::spec::resolve::{LoadOptions, resolve};
    use crate::spec::{BackoffSpec, LogFormat, RestartPolicy, RotateSpec};

    fn template(text: &str) -> (u32, InstanceSpec) {
        let file = Path::new("/srv/conf.d/web.kdl");
        let (apps, errors) = decode_document(file, text);
        assert!(errors.is_empty(), "{errors:#?}");
        let spec = resolve(&apps[0], file, &LoadOptions::default(), false).unwrap();
        assert_eq!(spec.hash, spec_hash(&spec.template));
        (spec.instances.resolve(8), spec.template)
    }

    fn hash_of(text: &str) -> SpecHash {
        spec_hash(&template(text).1)
    }

    #[test]
    fn hash_is_hex_sha256() {
        let hash = hash_of("app \"w\" { run \"x\"; }");
        assert_eq!(hash.0.len(), 64);
        assert!(hash.0.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn formatting_comments_order_and_instances_do_not_change_the_hash() {
        let a = "app \"w\" {\n run \"x\" \"-v\"\n env { A \"1\"; B \"2\"; }\n stop timeout=\"2s\"\n}";
        let b = "// web\napp \"w\" {\n  stop timeout=\"2000ms\" // slow\n  env {\n    B \"2\"\n    A 1\n  }\n  run \"x\"   \"-v\"\n  instances 4\n}";
        let c = "app \"w\" { env { B \"2\"; A \"1\"; }; run \"x\" \"-v\"; instances \"max\"; stop signal=\"INT\" timeout=\"2s\"; }";
        assert_eq!(hash_of(a), hash_of(b));
        assert_eq!(hash_of(a), hash_of(c));
        assert_ne!(template(a).0, template(b).0);
    }

    #[test]
    fn every_field_changes_the_hash_and_is_named() {
        let (_, base) = template("app \"w\" { run \"x\"; env { A \"1\"; }; }");
        let mut variants: Vec<(&str, InstanceSpec)> = Vec::new();
        let mut push = |field, change: &dyn Fn(&mut InstanceSpec)| {
            let mut t = base.clone();
            change(&mut t);
            variants.push((field, t));
        };
        push("argv", &|t| t.argv.push("-v".into()));
        push("cwd", &|t| t.cwd = Some(PathBuf::from("/elsewhere")));
        push("env.A", &|t| {
            t.env.insert("A".into(), "2".into());
        });
        push("env.B", &|t| {
            t.env.insert("B".into(), "1".into());
        });
        push("user", &|t| t.user = Some("www".into()));
        push("group", &|t| t.group = Some("www".into()));
        push("groups", &|t| t.groups.push("adm".into()));
        push("stop", &|t| t.stop.signal = 15);
        push("stop", &|t| t.stop.timeout = Duration::from_secs(9));
        push("restart", &|t| t.restart.policy = RestartPolicy::Never);
        push("restart", &|t| t.restart.delay = Duration::from_millis(5));
        push("restart", &|t| t.restart.backoff = Some(BackoffSpec::default()));
        push("restart", &|t| t.restart.max_restarts = 3);
        push("restart", &|t| t.restart.min_uptime = Duration::from_secs(5));
        push("logs", &|t| t.logs.out = Some("/dev/null".into()));
        push("logs", &|t| t.logs.err = Some("/dev/null".into()));
        push("logs", &|t| t.logs.combined = Some("/dev/null".into()));
        push("logs", &|t| t.logs.format = LogFormat::Json);
        push("logs", &|t| t.logs.timestamp = Some("%H".into()));
        push("logs", &|t| t.logs.merge = true);
        push("logs", &|t| t.logs.rotate = Some(RotateSpec { size: 1, keep: 1, compress: false }));
        for (field, changed) in &variants {
            assert_ne!(spec_hash(changed), spec_hash(&base), "{field}");
            assert_eq!(changed_fields(&base, changed), [*field], "{field}");
        }
        let mut removed = base.clone();
        removed.env.clear();
        assert_eq!(changed_fields(&base, &removed), ["env.A"]);
        assert!(changed_fields(&base, &base).is_empty());
    }
}
