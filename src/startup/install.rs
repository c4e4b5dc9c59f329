//! `--install`: writes the rendered file to its place and runs the init
//! system's commands; `unstartup --install` undoes it. The only part of
//! this module that changes the system, and it refuses to run without root
//! rather than fail halfway.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::{Cmd, Rendered, StartupError, shell_line};

/// Writes the file (atomically: a reader never sees half of it) and runs
/// the install commands in order, stopping at the first that fails.
pub fn install(r: &Rendered) -> Result<(), StartupError> {
    require_root()?;
    write_atomically(&r.path, &r.contents, r.mode)?;
    println!("wrote {}", r.path.display());
    r.install_cmds.iter().try_for_each(run)
}

/// Stops and disables the service, removes the file, and runs what must
/// follow the removal. A stop or disable that fails (the service was not
/// running, or never enabled) does not keep the file in place: every step
/// is tried, and the first error is returned at the end.
pub fn uninstall(r: &Rendered) -> Result<(), StartupError> {
    require_root()?;
    let mut first_error = None;
    for c in &r.uninstall_cmds {
        if let Err(e) = run(c) {
            eprintln!("procd: {e}");
            first_error.get_or_insert(e);
        }
    }
    match std::fs::remove_file(&r.path) {
        Ok(()) => println!("removed {}", r.path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("{} was not there", r.path.display()),
        Err(source) => return Err(StartupError::Remove { path: r.path.clone(), source }),
    }
    for c in &r.after_remove_cmds {
        if let Err(e) = run(c) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn require_root() -> Result<(), StartupError> {
    if crate::process::current_uid() == 0 { Ok(()) } else { Err(StartupError::NotRoot) }
}

fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), StartupError> {
    let err = |source| StartupError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.procd-tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn run(c: &Cmd) -> Result<(), StartupError> {
    let command = shell_line(c);
    let Some((program, args)) = c.split_first() else { return Ok(()) };
    println!("$ {command}");
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|source| StartupError::Spawn { command: command.clone(), source })?;
    if status.success() { Ok(()) } else { Err(StartupError::Command { command, status }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_written_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/procd");
        write_atomically(&path, "#!/bin/sh\n", 0o755).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "#!/bin/sh\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn a_failing_command_is_an_error_naming_it() {
        let err = run(&vec!["sh".into(), "-c".into(), "exit 3".into()]).unwrap_err();
        assert!(err.to_string().contains("`sh -c 'exit 3'` failed"), "{err}");
        let err = run(&vec!["/nonexistent/procd-tool".into()]).unwrap_err();
        assert!(matches!(err, StartupError::Spawn { .. }), "{err}");
    }
}
