//! From an [`AppDecl`] to an [`AppSpec`]: the step that touches the world.
//!
//! Resolving makes paths absolute against the app's working directory,
//! picks the interpreter of a `script` (by extension, exactly as PM2) and
//! finds it in PATH, reads env files and applies the selected env profile.
//! Errors are located at the node that caused them, so `procd check` points
//! at the `script` whose interpreter is missing or the unreadable `env-file`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::decode::{AppDecl, CommandDecl};
use super::env_file::parse_env_file;
use super::hash::spec_hash;
use super::kdl_value::Pos;
use super::{AppSpec, InstanceSpec, ListenAddr, ListenSpec, LogSpec, SourceRef, SpecError, WatchSpec};

/// Choices that apply to every app of a load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The `--env NAME` profile; an app without it keeps its base env.
    pub env_profile: Option<String>,
    /// PATH used to find interpreters; `None` means the process's PATH.
    pub path_env: Option<OsString>,
}

/// Interpreters by script extension, as PM2 chooses them; a script with any
/// other extension is executed directly.
const INTERPRETERS: &[(&str, &str)] = &[
    ("js", "node"),
    ("mjs", "node"),
    ("cjs", "node"),
    ("py", "python3"),
    ("sh", "bash"),
    ("rb", "ruby"),
    ("php", "php"),
    ("pl", "perl"),
    ("coffee", "coffee"),
];

/// Resolves one declared app of `file` into its final spec.
pub fn resolve(decl: &AppDecl, file: &Path, opts: &LoadOptions, cli_created: bool) -> Result<AppSpec, Vec<SpecError>> {
    let mut errors = Vec::new();
    let base = declaring_dir(file);
    let cwd = decl.cwd.as_ref().map_or_else(|| base.clone(), |cwd| base.join(cwd));
    let at =
        |pos: Pos, message: String| SpecError { file: file.to_path_buf(), line: pos.line, column: pos.column, message };

    let argv = match &decl.command {
        CommandDecl::Run(argv) => argv.clone(),
        CommandDecl::Script(script) => {
            let wanted = match &decl.interpreter {
                Some(explicit) => Some((explicit.value.as_str(), explicit.pos)),
                None => interpreter_for(&script.value).map(|name| (name, script.pos)),
            };
            let mut argv = Vec::new();
            if let Some((name, pos)) = wanted {
                match find_interpreter(name, &cwd, opts) {
                    Some(path) => argv.push(path.to_string_lossy().into_owned()),
                    None => errors.push(at(
                        pos,
                        format!(
                            "interpreter `{name}` for `{}` not found in PATH; install it or set `interpreter`",
                            script.value
                        ),
                    )),
                }
            }
            argv.push(cwd.join(&script.value).to_string_lossy().into_owned());
            argv.extend(decl.args.iter().cloned());
            argv
        }
    };

    let mut env = BTreeMap::new();
    for env_file in &decl.env_files {
        let path = cwd.join(&env_file.value);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                errors.push(at(env_file.pos, format!("cannot read env file `{}`: {e}", path.display())));
                continue;
            }
        };
        match parse_env_file(&text) {
            Ok(vars) => env.extend(vars),
            Err(bad_lines) => errors.extend(bad_lines.into_iter().map(|(line, message)| SpecError {
                file: path.clone(),
                line,
                column: 1,
                message: format!("{message} (env file of app `{}`)", decl.name),
            })),
        }
    }
    env.extend(decl.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(profile) = opts.env_profile.as_ref().and_then(|name| decl.env_profiles.get(name)) {
        env.extend(profile.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let template = InstanceSpec {
        argv,
        env,
        user: decl.user.clone(),
        group: decl.group.clone(),
        groups: decl.groups.clone(),
        stop: decl.stop.clone(),
        restart: decl.restart.clone(),
        logs: absolute_logs(&decl.logs, &cwd),
        cwd: Some(cwd.clone()),
    };
    Ok(AppSpec {
        name: decl.name.clone(),
        source: SourceRef { file: file.to_path_buf(), line: decl.pos.line, cli_created },
        instances: decl.instances,
        hash: spec_hash(&template),
        max_memory: decl.max_memory,
        watch: decl.watch.as_ref().map(|w| {
            let paths =
                if w.paths.is_empty() { vec![cwd.clone()] } else { w.paths.iter().map(|p| cwd.join(p)).collect() };
            WatchSpec { paths, ..w.clone() }
        }),
        listen: decl
            .listen
            .iter()
            .map(|socket| match &socket.address {
                ListenAddr::Unix(path) => ListenSpec { address: ListenAddr::Unix(cwd.join(path)), ..socket.clone() },
                ListenAddr::Tcp { .. } => socket.clone(),
            })
            .collect(),
        ready: decl.ready.clone(),
        rollout: decl.rollout,
        template,
    })
}

/// The directory of the declaring file, as listed (symlinks such as
/// `conf.d -> generations/7` are kept, not resolved), made absolute so an
/// app's paths do not depend on the daemon's working directory.
fn declaring_dir(file: &Path) -> PathBuf {
    let dir = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The default interpreter of a script, by its extension.
pub fn interpreter_for(script: &str) -> Option<&'static str> {
    let extension = Path::new(script).extension()?.to_str()?;
    INTERPRETERS.iter().find(|(ext, _)| *ext == extension).map(|(_, interpreter)| *interpreter)
}

/// A path (relative to `cwd`) is taken as is; a bare name is looked up in
/// PATH so the spec, and its hash, name the exact binary.
fn find_interpreter(name: &str, cwd: &Path, opts: &LoadOptions) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(cwd.join(name));
    }
    let path = opts.path_env.clone().or_else(|| std::env::var_os("PATH"))?;
    std::env::split_paths(&path)
        // An empty PATH entry means the current directory: never trust it.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Log paths are relative to the app's working directory, like every path
/// of a spec; `/dev/null` and other absolute paths stay.
fn absolute_logs(logs: &LogSpec, cwd: &Path) -> LogSpec {
    let join = |path: &Option<PathBuf>| path.as_ref().map(|path| cwd.join(path));
    LogSpec { out: join(&logs.out), err: join(&logs.err), combined: join(&logs.combined), ..logs.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode_document;

    /// A temp dir holding `conf.d/` and a fake `bin/` with the given
    /// executables, so no real interpreter is needed.
    struct World {
        dir: tempfile::TempDir,
    }

    impl World {
        fn new(executables: &[&str]) -> World {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("conf.d")).unwrap();
            fs::create_dir_all(dir.path().join("bin")).unwrap();
            for name in executables {
                let path = dir.path().join("bin").join(name);
                fs::write(&path, "#!/bin/sh\n").unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
            World { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn opts(&self, profile: Option<&str>) -> LoadOptions {
            LoadOptions { env_profile: profile.map(String::from), path_env: Some(self.path("bin").into()) }
        }

        fn resolve(&self, text: &str, profile: Option<&str>) -> Result<AppSpec, Vec<SpecError>> {
            let file = self.path("conf.d/app.kdl");
            let (apps, errors) = decode_document(&file, text);
            assert!(errors.is_empty(), "{errors:#?}");
            resolve(&apps[0], &file, &self.opts(profile), false)
        }

        fn argv(&self, text: &str) -> Vec<String> {
            self.resolve(text, None).unwrap().template.argv
        }
    }

    fn s(path: PathBuf) -> String {
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn interpreter_by_extension_as_pm2() {
        let world = World::new(&["node", "python3", "bash", "ruby", "php", "perl", "coffee"]);
        let table: &[(&str, Option<&str>)] = &[
            ("a.js", Some("node")),
            ("a.mjs", Some("node")),
            ("a.cjs", Some("node")),
            ("a.py", Some("python3")),
            ("a.sh", Some("bash")),
            ("a.rb", Some("ruby")),
            ("a.php", Some("php")),
            ("a.pl", Some("perl")),
            ("a.coffee", Some("coffee")),
            ("a", None),
            ("a.txt", None),
            ("a.JS", None),
        ];
        for (script, interpreter) in table {
            let argv = world.argv(&format!("app \"w\" {{ script \"{script}\"; args \"-x\"; }}"));
            let mut expected: Vec<String> = interpreter.iter().map(|name| s(world.path("bin").join(name))).collect();
            expected.push(s(world.path("conf.d").join(script)));
            expected.push("-x".into());
            assert_eq!(argv, expected, "{script}");
        }
    }

    #[test]
    fn explicit_interpreter_and_run() {
        let world = World::new(&["python3.12"]);
        let argv = world.argv("app \"w\" { script \"a.py\"; interpreter \"python3.12\"; }");
        assert_eq!(argv[0], s(world.path("bin/python3.12")));
        let argv = world.argv("app \"w\" { script \"a.js\"; interpreter \"/opt/node-18/bin/node\"; }");
        assert_eq!(argv[0], "/opt/node-18/bin/node");
        let argv = world.argv("app \"w\" { script \"a.sh\"; interpreter \"tools/sh\"; cwd \"/srv\"; }");
        assert_eq!(argv, ["/srv/tools/sh", "/srv/a.sh"]);
        assert_eq!(world.argv("app \"w\" { run \"node\" \"a.js\"; }"), ["node", "a.js"]);
    }

    #[test]
    fn missing_interpreter_is_located() {
        let world = World::new(&[]);
        // Present but not executable: still missing.
        fs::write(world.path("bin/ruby"), "").unwrap();
        let errors = world.resolve("app \"w\" {\n  script \"app.rb\"\n}", None).unwrap_err();
        assert_eq!((errors[0].line, errors[0].column), (2, 3));
        assert_eq!(
            errors[0].message,
            "interpreter `ruby` for `app.rb` not found in PATH; install it or set `interpreter`"
        );
        let errors = world.resolve("app \"w\" {\n  script \"a\"\n  interpreter \"deno\"\n}", None).unwrap_err();
        assert_eq!((errors[0].line, errors[0].column), (3, 3));
    }

    #[test]
    fn paths_are_relative_to_cwd_which_defaults_to_the_files_dir() {
        let world = World::new(&[]);
        let spec =
            world.resolve("app \"w\" { script \"../apps/w\"; logs { out \"w.log\"; err \"/dev/null\"; }; }", None);
        let template = spec.unwrap().template;
        assert_eq!(template.cwd, Some(world.path("conf.d")));
        assert_eq!(template.argv, [s(world.path("conf.d/../apps/w"))]);
        assert_eq!(template.logs.out, Some(world.path("conf.d/w.log")));
        assert_eq!(template.logs.err, Some(PathBuf::from("/dev/null")));
        let template = world.resolve("app \"w\" { script \"w\"; cwd \"sub\"; }", None).unwrap().template;
        assert_eq!(template.cwd, Some(world.path("conf.d/sub")));
        assert_eq!(template.argv, [s(world.path("conf.d/sub/w"))]);
    }

    #[test]
    fn env_precedence_file_then_block_then_profile() {
        let world = World::new(&[]);
        fs::write(world.path("conf.d/one.env"), "A=file1\nB=file1\nC=file1\nD=file1\n").unwrap();
        fs::write(world.path("conf.d/two.env"), "export D='file2'\n").unwrap();
        let text = "app \"w\" { run \"x\"; env-file \"one.env\"; env-file \"two.env\"; env { B \"env\"; C \"env\"; }; env \"prod\" { C \"prod\"; }; }";
        let env = |profile| {
            let env = world.resolve(text, profile).unwrap().template.env;
            env.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
        };
        assert_eq!(env(Some("prod")), ["A=file1", "B=env", "C=prod", "D=file2"]);
        assert_eq!(env(None), ["A=file1", "B=env", "C=env", "D=file2"]);
        // A profile the app does not define is not an error.
        assert_eq!(env(Some("staging")), env(None));
    }

    #[test]
    fn env_file_errors_are_located() {
        let world = World::new(&[]);
        let errors = world.resolve("app \"w\" {\n run \"x\"\n env-file \"nope.env\"\n}", None).unwrap_err();
        assert_eq!((errors[0].line, errors[0].column), (3, 2));
        assert!(errors[0].message.starts_with("cannot read env file"), "{}", errors[0].message);
        fs::write(world.path("conf.d/bad.env"), "A=1\nB\n").unwrap();
        let errors = world.resolve("app \"w\" { run \"x\"; env-file \"bad.env\"; }", None).unwrap_err();
        assert_eq!(errors[0].file, world.path("conf.d/bad.env"));
        assert_eq!((errors[0].line, errors[0].column), (2, 1));
    }
}
