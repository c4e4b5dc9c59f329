//! `procd startup` and `procd unstartup`: resolve the options (who, where,
//! which init system), then print the file and the commands, or install.
//!
//! The file goes to stdout and the instructions to stderr, so
//! `procd startup > procd.service` saves exactly the file.

use std::path::PathBuf;

use super::Outcome;
use super::args::{StartupArgs, UnstartupArgs};
use crate::startup::{self, Options, Platform, Rendered, StartupError, shell_line};

/// `procd startup`. `home` and `config_dir` are the global `--home` and
/// `--config-dir` (or their environment variables): given, they are passed
/// on to the daemon; `--hp` takes precedence over `--home`.
pub fn startup(args: StartupArgs, home: Option<PathBuf>, config_dir: Option<PathBuf>) -> Outcome {
    let (platform, detected) = platform(args.platform);
    let binary = std::env::current_exe().map_err(StartupError::Binary)?;
    let account = args.user.as_deref().map(startup::lookup_account).transpose()?;
    // Root needs no User=, and keeps the FHS layout unless told otherwise.
    let run_as = account.filter(|a| a.uid != 0);
    let opts = Options {
        binary,
        service_name: args
            .service_name
            .unwrap_or_else(|| startup::default_service_name(run_as.as_ref().map(|a| a.name.as_str()))),
        home: args.hp.or(home).or_else(|| run_as.as_ref().map(|a| a.procd_home())),
        config_dir: config_dir.or_else(|| run_as.as_ref().map(|a| a.config_dir())),
        run_as,
    };
    let rendered = startup::render(platform, &opts);
    if args.install {
        startup::install(&rendered)?;
    } else {
        print!("{}", rendered.contents);
        eprint!("{}", install_instructions(&opts, &rendered, detected));
    }
    if let Some(home) = &opts.home {
        eprintln!("# clients reach this daemon with `procd --home {0} ...` or PROCD_HOME={0}", home.display());
    }
    Ok(true)
}

/// `procd unstartup`.
pub fn unstartup(args: UnstartupArgs) -> Outcome {
    let (platform, _) = platform(args.platform);
    let service_name = args.service_name.unwrap_or_else(|| startup::default_service_name(args.user.as_deref()));
    // Only the path and the commands matter here; no lookup of a user
    // that may be gone already.
    let opts = Options { binary: PathBuf::from("procd"), service_name, run_as: None, home: None, config_dir: None };
    let rendered = startup::render(platform, &opts);
    if args.install {
        startup::uninstall(&rendered)?;
    } else {
        let mut out = format!("# to stop the daemon and remove {}, as root:\n", rendered.path.display());
        for c in &rendered.uninstall_cmds {
            out.push_str(&format!("{}\n", shell_line(c)));
        }
        out.push_str(&format!("rm -f {}\n", shell_line(&[rendered.path.display().to_string()])));
        for c in &rendered.after_remove_cmds {
            out.push_str(&format!("{}\n", shell_line(c)));
        }
        print!("{out}");
    }
    eprintln!("# the apps keep running: stop them first with `procd stop all` if they should not");
    Ok(true)
}

fn platform(given: Option<Platform>) -> (Platform, bool) {
    match given {
        Some(p) => (p, false),
        None => (startup::detect(), true),
    }
}

/// The exact commands that install what was printed: `--install`, or the
/// same by hand.
fn install_instructions(opts: &Options, r: &Rendered, detected: bool) -> String {
    let mut regenerate = vec![opts.binary.display().to_string(), "startup".into(), r.platform.name().into()];
    if let Some(a) = &opts.run_as {
        regenerate.extend(["-u".into(), a.name.clone()]);
    }
    if let Some(home) = &opts.home {
        regenerate.extend(["--hp".into(), home.display().to_string()]);
    }
    if let Some(dir) = &opts.config_dir {
        regenerate.extend(["--config-dir".into(), dir.display().to_string()]);
    }
    regenerate.extend(["--service-name".into(), opts.service_name.clone()]);
    let path = shell_line(&[r.path.display().to_string()]);
    let mut out = String::new();
    if detected {
        out.push_str(&format!("# init system detected: {}\n", r.platform));
    }
    out.push_str("# to install and enable it, as root:\n");
    let mut install = regenerate.clone();
    install.push("--install".into());
    out.push_str(&format!("{}\n", shell_line(&install)));
    out.push_str("# or by hand:\n");
    out.push_str(&format!("{} > {path}\n", shell_line(&regenerate)));
    if r.mode & 0o111 != 0 {
        out.push_str(&format!("chmod {:o} {path}\n", r.mode));
    }
    for c in &r.install_cmds {
        out.push_str(&format!("{}\n", shell_line(c)));
    }
    out
}
