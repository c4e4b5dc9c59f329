//! Human-readable output: the status table, app details, plans and errors.

use std::fmt::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use crate::control::protocol::{AppStatus, StatusReport};
use crate::reconcile::Action;
use crate::spec::SpecError;

/// The `procd status` table, then the config errors.
pub fn status(report: &StatusReport) -> String {
    let mut out = String::new();
    if report.apps.is_empty() {
        out.push_str("no apps\n");
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        table.set_header(["name", "idx", "pid", "status", "uptime", "restarts", "cpu", "mem"]);
        for app in &report.apps {
            for i in &app.instances {
                table.add_row([
                    app.name.clone(),
                    i.index.to_string(),
                    i.pid.map_or("-".into(), |p| p.to_string()),
                    status_cell(i),
                    if i.pid.is_some() { duration(i.uptime_ms) } else { "-".into() },
                    i.restarts.to_string(),
                    format!("{:.1}%", i.cpu_percent),
                    bytes(i.memory_bytes),
                ]);
            }
        }
        let _ = writeln!(out, "{table}");
    }
    for app in &report.apps {
        for i in app.instances.iter().filter(|i| i.log_lines_lost > 0) {
            let why = i.log_error.as_deref().unwrap_or("writing resumed");
            let _ = writeln!(out, "{}:{} lost {} log line(s): {why}", app.name, i.index, i.log_lines_lost);
        }
    }
    out.push_str(&errors(&report.errors));
    out
}

fn status_cell(i: &crate::control::protocol::InstanceStatus) -> String {
    match i.restart_in_ms {
        Some(ms) if i.status == "waiting-restart" => format!("waiting-restart ({})", duration(ms)),
        _ => i.status.clone(),
    }
}

/// Config errors as `FILE:LINE:COL: message`, one per line.
pub fn errors(errors: &[SpecError]) -> String {
    let mut out = String::new();
    if !errors.is_empty() {
        let _ = writeln!(out, "config errors (the last good version of these files keeps running):");
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

/// `procd show APP`.
pub fn show(app: &AppStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "app        {}", app.name);
    let _ = writeln!(out, "source     {}", app.source);
    let _ = writeln!(out, "state      {}", app.state);
    let _ = writeln!(out, "spec hash  {}", app.spec_hash);
    let _ = writeln!(out, "instances  {}", app.instances_desired);
    if let Some(detail) = &app.detail {
        if let Some(spec) = detail.get("spec") {
            let s = |k: &str| spec.get(k).cloned().unwrap_or_default();
            let _ = writeln!(out, "argv       {}", s("argv"));
            let _ = writeln!(out, "cwd        {}", s("cwd"));
            if let Some(u) = spec.get("user").filter(|u| !u.is_null()) {
                let _ = writeln!(out, "user       {u}");
            }
            let _ = writeln!(out, "stop       {}", s("stop"));
            let _ = writeln!(out, "restart    {}", s("restart"));
            if let Some(env) = spec.get("env").and_then(|e| e.as_object()) {
                let keys: Vec<&String> = env.keys().collect();
                let _ = writeln!(out, "env        {}", keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" "));
            }
        }
        if let Some(files) = detail.get("log_files").and_then(|f| f.as_array()) {
            for (i, f) in files.iter().enumerate() {
                let _ = writeln!(out, "logs[{i}]    {f}");
            }
        }
    }
    for i in &app.instances {
        let _ = writeln!(
            out,
            "[{}] pid {} {} up {} restarts {} last exit {} reason {}{}",
            i.index,
            i.pid.map_or("-".into(), |p| p.to_string()),
            status_cell(i),
            duration(i.uptime_ms),
            i.restarts,
            i.last_exit.as_ref().map_or("-".into(), |e| e.to_string()),
            i.last_restart_reason.as_deref().unwrap_or("-"),
            i.error.as_ref().map_or(String::new(), |e| format!(" error: {e}")),
        );
    }
    out
}

/// A reconcile plan, one action per line.
pub fn plan(actions: &[Action], applied: bool) -> String {
    let mut out = String::new();
    if actions.is_empty() {
        out.push_str("nothing to do: running apps match the config\n");
    }
    for a in actions {
        let _ = writeln!(out, "{}{a}", if applied { "" } else { "would " });
    }
    out
}

/// `1234` ms → `1s`, `3m`, `2h`, `4d`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Bytes in PM2's binary units: `31.5M`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b}B") } else { format!("{v:.1}{}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(duration(999), "0s");
        assert_eq!(duration(61_000), "1m");
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(31_457_280), "30.0M");
    }
}
