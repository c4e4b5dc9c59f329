//! Reading spec directories: which files count, and what a load yields when
//! some of them are broken.
//!
//! A [`Loader`] remembers the last good apps of every file, so a file that
//! becomes invalid (a typo saved by an editor, a half-written deploy) keeps
//! its apps running while its errors are reported; only a file that is
//! removed takes its apps away. App names are unique across all
//! directories: the first declaration, in directory order then path order,
//! wins.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::decode::decode_document;
use super::kdl_value::Pos;
use super::resolve::{LoadOptions, resolve};
use super::{AppSpec, SourceRef, SpecError};

/// File name suffixes that editors, package managers and config tools leave
/// next to real files; listed for the tests, as `*.kdl` already excludes them.
const BACKUP_SUFFIXES: &[&str] = &[
    "~",
    ".swp",
    ".swx",
    ".tmp",
    ".bak",
    ".orig",
    ".dpkg-new",
    ".dpkg-old",
    ".dpkg-dist",
    ".dpkg-bak",
    ".rpmnew",
    ".rpmsave",
];

/// Whether a directory entry is a spec file: `*.kdl`, except hidden files
/// (`.#web.kdl` editor locks, `.web.kdl.swp`, Ansible's `.ansible_tmp*`)
/// and `#web.kdl#` autosaves, and never a leftover such as `web.kdl~`,
/// `web.kdl.dpkg-new` or `web.kdl.ucf-dist`.
pub fn is_spec_file(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    let Some(stem) = bytes.strip_suffix(b".kdl") else {
        return false;
    };
    let hidden_or_autosave = matches!(stem.first(), None | Some(b'.' | b'#' | b'~'));
    let leftover = stem.windows(5).any(|w| w == b".ucf-")
        || BACKUP_SUFFIXES.iter().any(|suffix| stem.ends_with(suffix.as_bytes()));
    !hidden_or_autosave && !leftover
}

/// The spec files of `dir`, sorted, not recursive. Symlinks are followed: a
/// link to a regular file counts, a link to a directory does not, and a
/// dangling link is listed so that reading it reports the problem. A
/// missing directory has no files.
pub fn list_spec_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !is_spec_file(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => continue,
            _ => files.push(path),
        }
    }
    files.sort();
    Ok(files)
}

/// A directory of spec files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDir {
    /// conf.d, or the state dir's `apps/`.
    pub path: PathBuf,
    /// True for the state dir's `apps/`, which holds apps created by
    /// `procd start SCRIPT`; `delete` may remove only those.
    pub cli_created: bool,
}

/// The result of one load: the apps to run and the errors to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Sorted by name; names are unique.
    pub apps: Vec<AppSpec>,
    pub errors: Vec<SpecError>,
}

/// Loads spec directories again and again, keeping each file's last good
/// apps across loads.
#[derive(Debug, Default, Clone)]
pub struct Loader {
    opts: LoadOptions,
    /// The apps of each file's last load without errors.
    last_good: HashMap<PathBuf, Vec<AppSpec>>,
}

impl Loader {
    pub fn new(opts: LoadOptions) -> Self {
        Loader { opts, last_good: HashMap::new() }
    }

    /// The options every file is resolved with.
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    /// Reads every spec file of `dirs`. A file with any error contributes
    /// its errors and its last good apps (none if it never was good); a
    /// file that disappeared contributes nothing.
    pub fn load(&mut self, dirs: &[SpecDir]) -> Loaded {
        let mut loaded = Loaded::default();
        let mut names = Names::default();
        let mut next_good = HashMap::new();
        let mut visited = HashSet::new();
        for dir in dirs {
            let files = list_spec_files(&dir.path).unwrap_or_else(|e| {
                loaded.errors.push(whole_file(&dir.path, format!("cannot read directory: {e}")));
                // An unreadable directory is not an empty one: keep what
                // its files declared before.
                let mut known: Vec<PathBuf> =
                    self.last_good.keys().filter(|file| file.parent() == Some(&dir.path)).cloned().collect();
                known.sort();
                known
            });
            for file in files {
                if !visited.insert(file.clone()) {
                    continue;
                }
                let outcome = match fs::read_to_string(&file) {
                    Ok(text) => match decode_located(&file, &text, &self.opts, dir.cli_created) {
                        (found, errors) if errors.is_empty() => names.accept(&file, found),
                        (_, errors) => Err(errors),
                    },
                    Err(e) => Err(vec![whole_file(&file, format!("cannot read: {e}"))]),
                };
                let apps = match outcome {
                    Ok(apps) => {
                        next_good.insert(file.clone(), apps.clone());
                        apps
                    }
                    Err(errors) => {
                        loaded.errors.extend(errors);
                        let previous = self.last_good.get(&file).cloned().unwrap_or_default();
                        if !previous.is_empty() {
                            next_good.insert(file.clone(), previous.clone());
                        }
                        previous.into_iter().filter(|app| !names.contains(&app.name)).collect()
                    }
                };
                names.register(&apps);
                loaded.apps.extend(apps);
            }
        }
        self.last_good = next_good;
        loaded.apps.sort_by(|a, b| a.name.cmp(&b.name));
        loaded
    }
}

/// Decodes and resolves one spec file: all its apps, or all its errors.
/// Used by the [`Loader`] and by `procd check`.
pub fn decode_file(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    cli_created: bool,
) -> Result<Vec<AppSpec>, Vec<SpecError>> {
    match decode_located(path, text, opts, cli_created) {
        (found, errors) if errors.is_empty() => Ok(found.into_iter().map(|(app, _)| app).collect()),
        (_, errors) => Err(errors),
    }
}

/// Checks files and directories as `procd check` does, cross-file
/// duplicate names included. Files named explicitly are checked whatever
/// their name (Ansible's `validate` passes a temp file); directories yield
/// their spec files.
pub fn check_paths(paths: &[PathBuf], opts: &LoadOptions) -> Vec<SpecError> {
    let mut errors = Vec::new();
    let mut names = Names::default();
    let mut visited = HashSet::new();
    for path in paths {
        let files = if path.is_dir() {
            match list_spec_files(path) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(whole_file(path, format!("cannot read directory: {e}")));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            if !visited.insert(file.clone()) {
                continue;
            }
            match fs::read_to_string(&file) {
                Ok(text) => {
                    // Apps of a file with errors still take part in the
                    // duplicate check, so one run shows every problem.
                    let (found, file_errors) = decode_located(&file, &text, opts, false);
                    errors.extend(file_errors);
                    if let Err(duplicates) = names.accept(&file, found) {
                        errors.extend(duplicates);
                    }
                }
                Err(e) => errors.push(whole_file(&file, format!("cannot read: {e}"))),
            }
        }
    }
    errors
}

/// The resolved apps of a file with the position of each `app` node, and
/// every error of the file.
fn decode_located(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
    cli_created: bool,
) -> (Vec<(AppSpec, Pos)>, Vec<SpecError>) {
    let (decls, mut errors) = decode_document(path, text);
    let mut apps = Vec::new();
    for decl in &decls {
        match resolve(decl, path, opts, cli_created) {
            Ok(app) => apps.push((app, decl.pos)),
            Err(app_errors) => errors.extend(app_errors),
        }
    }
    (apps, errors)
}

/// App names declared so far in a load, with where each was declared.
#[derive(Default)]
struct Names {
    seen: HashMap<String, SourceRef>,
}

impl Names {
    fn contains(&self, name: &str) -> bool {
        self.seen.contains_key(name)
    }

    /// Registers the apps of `file` if none of their names is taken;
    /// otherwise returns an error at each `app` node whose name is.
    fn accept(&mut self, file: &Path, found: Vec<(AppSpec, Pos)>) -> Result<Vec<AppSpec>, Vec<SpecError>> {
        let duplicates: Vec<SpecError> = found
            .iter()
            .filter_map(|(app, pos)| {
                let first = self.seen.get(&app.name)?;
                Some(SpecError {
                    file: file.to_path_buf(),
                    line: pos.line,
                    column: pos.column,
                    message: format!(
                        "app `{}` is already declared in {}:{}",
                        app.name,
                        first.file.display(),
                        first.line
                    ),
                })
            })
            .collect();
        if !duplicates.is_empty() {
            return Err(duplicates);
        }
        let apps: Vec<AppSpec> = found.into_iter().map(|(app, _)| app).collect();
        self.register(&apps);
        Ok(apps)
    }

    fn register(&mut self, apps: &[AppSpec]) {
        for app in apps {
            self.seen.entry(app.name.clone()).or_insert_with(|| app.source.clone());
        }
    }
}

/// An error about a whole file or directory (line and column 0).
fn whole_file(path: &Path, message: String) -> SpecError {
    SpecError { file: path.to_path_buf(), line: 0, column: 0, message }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn which_names_are_spec_files() {
        let table: &[(&str, bool)] = &[
            ("web.kdl", true),
            ("10-web.kdl", true),
            ("web.v2.kdl", true),
            ("web", false),
            ("web.KDL", false),
            (".kdl", false),
            (".web.kdl", false),
            (".#web.kdl", false),
            ("#web.kdl#", false),
            ("#web.kdl", false),
            ("web.kdl~", false),
            ("web~.kdl", false),
            (".web.kdl.swp", false),
            ("web.kdl.swp", false),
            ("web.kdl.swx", false),
            ("web.kdl.dpkg-new", false),
            ("web.kdl.dpkg-old", false),
            ("web.kdl.dpkg-dist", false),
            ("web.kdl.dpkg-bak", false),
            ("web.dpkg-new.kdl", false),
            ("web.kdl.rpmnew", false),
            ("web.kdl.rpmsave", false),
            ("web.kdl.ucf-dist", false),
            ("web.ucf-old.kdl", false),
            ("web.kdl.tmp", false),
            ("web.tmp.kdl", false),
            ("web.bak.kdl", false),
            (".ansible_tmpab12web.kdl", false),
        ];
        for (name, expected) in table {
            assert_eq!(is_spec_file(OsStr::new(name)), *expected, "{name}");
        }
        assert!(!is_spec_file(OsStr::from_bytes(b"\xff.kdl~")));
    }

    struct Conf {
        dir: tempfile::TempDir,
    }

    impl Conf {
        fn new() -> Conf {
            let conf = Conf { dir: tempfile::tempdir().unwrap() };
            fs::create_dir_all(conf.dir.path().join("conf.d")).unwrap();
            fs::create_dir_all(conf.dir.path().join("apps")).unwrap();
            conf
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn write(&self, rel: &str, text: &str) {
            fs::write(self.path(rel), text).unwrap();
        }
        fn dirs(&self) -> Vec<SpecDir> {
            vec![
                SpecDir { path: self.path("conf.d"), cli_created: false },
                SpecDir { path: self.path("apps"), cli_created: true },
            ]
        }
    }

    fn names(loaded: &Loaded) -> Vec<&str> {
        loaded.apps.iter().map(|app| app.name.as_str()).collect()
    }

    fn app(name: &str, program: &str) -> String {
        format!("app \"{name}\" {{\n  run \"{program}\"\n}}\n")
    }

    #[test]
    fn lists_sorted_spec_files_following_symlinks() {
        let conf = Conf::new();
        conf.write("conf.d/b.kdl", "");
        conf.write("conf.d/a.kdl", "");
        conf.write("conf.d/a.kdl~", "");
        conf.write("target.txt", "");
        fs::create_dir(conf.path("conf.d/dir.kdl")).unwrap();
        symlink(conf.path("target.txt"), conf.path("conf.d/linked.kdl")).unwrap();
        symlink(conf.path("conf.d/dir.kdl"), conf.path("conf.d/dirlink.kdl")).unwrap();
        symlink(conf.path("gone"), conf.path("conf.d/dangling.kdl")).unwrap();
        let files = list_spec_files(&conf.path("conf.d")).unwrap();
        let files: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(files, ["a.kdl", "b.kdl", "dangling.kdl", "linked.kdl"]);
        assert!(list_spec_files(&conf.path("missing")).unwrap().is_empty());
    }

    #[test]
    fn loads_apps_sorted_with_their_source() {
        let conf = Conf::new();
        conf.write("conf.d/b.kdl", &app("web", "w"));
        conf.write("conf.d/a.kdl", &format!("{}{}", app("db", "d"), app("cache", "c")));
        conf.write("apps/x.kdl", &app("tool", "t"));
        let loaded = Loader::new(LoadOptions::default()).load(&conf.dirs());
        assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
        assert_eq!(names(&loaded), ["cache", "db", "tool", "web"]);
        assert_eq!(loaded.apps[0].source, SourceRef { file: conf.path("conf.d/a.kdl"), line: 4, cli_created: false });
        assert!(loaded.apps[2].source.cli_created);
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_apps_and_a_deleted_file_drops_them() {
        let conf = Conf::new();
        let mut loader = Loader::new(LoadOptions::default());
        conf.write("conf.d/web.kdl", &app("web", "v1"));
        let good = loader.load(&conf.dirs());
        conf.write("conf.d/web.kdl", "app \"web\" {\n  run \"v2\"\n  instanse 2\n}\n");
        conf.write("conf.d/new.kdl", "app \"new\" { run \"x\"; stop timeout=1; }");
        let broken = loader.load(&conf.dirs());
        assert_eq!(names(&broken), ["web"], "a file that never was good contributes nothing");
        assert_eq!(broken.apps, good.apps, "the last good spec is kept, not the new one");
        assert_eq!(broken.errors.len(), 2);
        assert_eq!((broken.errors[1].line, broken.errors[1].column), (3, 3));
        // Still broken on the next load: still kept.
        assert_eq!(loader.load(&conf.dirs()).apps, good.apps);
        fs::remove_file(conf.path("conf.d/web.kdl")).unwrap();
        assert!(loader.load(&conf.dirs()).apps.is_empty());
        // Once gone, its last good spec is forgotten.
        conf.write("conf.d/web.kdl", "app \"web\" {");
        assert!(loader.load(&conf.dirs()).apps.is_empty());
    }

    #[test]
    fn unreadable_file_is_an_error_and_keeps_last_good() {
        let conf = Conf::new();
        let mut loader = Loader::new(LoadOptions::default());
        conf.write("target.kdl", &app("web", "w"));
        symlink(conf.path("target.kdl"), conf.path("conf.d/web.kdl")).unwrap();
        assert_eq!(names(&loader.load(&conf.dirs())), ["web"]);
        fs::remove_file(conf.path("target.kdl")).unwrap();
        let loaded = loader.load(&conf.dirs());
        assert_eq!(names(&loaded), ["web"]);
        assert_eq!((loaded.errors[0].line, loaded.errors[0].column), (0, 0));
        assert!(loaded.errors[0].message.starts_with("cannot read: "));
    }

    #[test]
    fn duplicate_names_across_files_first_wins() {
        let conf = Conf::new();
        let mut loader = Loader::new(LoadOptions::default());
        conf.write("conf.d/b.kdl", &format!("{}{}", app("api", "b1"), app("other", "o")));
        let first = loader.load(&conf.dirs());
        conf.write("conf.d/a.kdl", &format!("// first\n{}", app("web", "a")));
        conf.write("apps/web.kdl", &app("web", "cli"));
        conf.write("conf.d/b.kdl", &format!("{}{}", app("other", "o"), app("web", "b")));
        let loaded = loader.load(&conf.dirs());
        let messages: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        let a = conf.path("conf.d/a.kdl").display().to_string();
        assert_eq!(
            messages,
            [
                format!("{}:4:1: app `web` is already declared in {a}:2", conf.path("conf.d/b.kdl").display()),
                format!("{}:1:1: app `web` is already declared in {a}:2", conf.path("apps/web.kdl").display()),
            ]
        );
        // b.kdl fell back to its last good apps.
        assert_eq!(names(&loaded), ["api", "other", "web"]);
        assert_eq!(loaded.apps[0], first.apps[0]);
        assert_eq!(loaded.apps[2].template.argv, ["a"]);
    }

    #[test]
    fn check_paths_reports_everything_including_cross_file_duplicates() {
        let conf = Conf::new();
        conf.write("conf.d/a.kdl", &app("web", "a"));
        conf.write("conf.d/b.kdl", &format!("{}app \"x\" {{ instanse 1; }}\n", app("web", "b")));
        conf.write("conf.d/ignored.kdl~", "garbage {");
        conf.write("tmpXYZ", "app \"web\" { run \"c\"; }");
        let opts = LoadOptions::default();
        let errors = check_paths(&[conf.path("conf.d"), conf.path("tmpXYZ"), conf.path("nope.kdl")], &opts);
        let found: Vec<(String, usize, usize)> = errors
            .iter()
            .map(|e| (e.file.file_name().unwrap().to_string_lossy().into_owned(), e.line, e.column))
            .collect();
        let expected = [("b.kdl", 4, 11), ("b.kdl", 4, 1), ("b.kdl", 1, 1), ("tmpXYZ", 1, 1), ("nope.kdl", 0, 0)];
        let expected: Vec<(String, usize, usize)> = expected.iter().map(|(f, l, c)| (f.to_string(), *l, *c)).collect();
        assert_eq!(found, expected, "{errors:#?}");
        assert!(check_paths(&[conf.path("conf.d/a.kdl")], &opts).is_empty());
        assert_eq!(decode_file(&conf.path("conf.d/a.kdl"), &app("web", "a"), &opts, false).unwrap()[0].name, "web");
    }
}
