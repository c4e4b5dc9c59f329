//! The example specs in `examples/conf.d` are part of the documentation, so
//! they must always be valid: this test checks them as `procd check` would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use procd::spec::{LoadOptions, Loader, SpecDir, check_paths};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/conf.d")
}

/// A PATH holding fake interpreters, so the test does not depend on which
/// languages the machine has.
fn fake_path() -> (tempfile::TempDir, LoadOptions) {
    let bin = tempfile::tempdir().expect("temp dir");
    for name in ["python3", "bash", "node"] {
        let path = bin.path().join(name);
        fs::write(&path, "#!/bin/sh\n").expect("write fake interpreter");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let opts = LoadOptions { env_profile: None, path_env: Some(bin.path().as_os_str().to_owned()) };
    (bin, opts)
}

#[test]
fn every_example_is_valid() {
    let (_bin, opts) = fake_path();
    let errors = check_paths(&[examples_dir()], &opts);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{}", shown.join("\n"));
}

#[test]
fn examples_declare_the_expected_apps() {
    let (bin, opts) = fake_path();
    let loaded = Loader::new(opts).load(&[SpecDir { path: examples_dir(), cli_created: false }]);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    let names: Vec<&str> = loaded.apps.iter().map(|app| app.name.as_str()).collect();
    assert_eq!(names, ["api", "cluster-node", "cluster-py", "web", "worker"]);
    let app = |name: &str| loaded.apps.iter().find(|app| app.name == name).expect("declared");

    let web = app("web");
    assert_eq!(web.template.argv[0], bin.path().join("python3").to_string_lossy());
    assert_eq!(web.template.argv[1], examples_dir().join("../apps/web.py").to_string_lossy());
    assert_eq!(web.template.env["PORT"], "8081");
    let worker = app("worker");
    assert_eq!(worker.instances.resolve(8), 2);
    assert_eq!(worker.template.argv[2..], ["--queue", "default"]);
    for name in ["cluster-node", "cluster-py"] {
        let cluster = app(name);
        assert_eq!(cluster.instances.resolve(8), 2);
        assert_eq!(cluster.listen.len(), 1, "{name} shares one socket");
        assert_eq!(cluster.ready.check, procd::spec::ReadyCheck::Notify { watchdog: None });
    }
    for app in &loaded.apps {
        // argv[1] is the script (after its interpreter) or node's argument.
        let program = &app.template.argv[1];
        let cwd = app.template.cwd.as_ref().expect("cwd is resolved");
        assert!(cwd.join(program).exists(), "{} runs {program}, which does not exist", app.name);
    }
}
