//! Decoding of the cluster-mode keys: `listen`, `ready` and `rollout`.
//!
//! All three sit outside the instance hash (sockets belong to the app and
//! outlive instances; readiness and rollout are policies), so they are
//! decoded here, apart from the instance template, and checked against each
//! other once the whole app block has been read.

use std::path::PathBuf;

use kdl::{KdlEntry, KdlNode, KdlValue};

use super::kdl_value::{Diagnostics, Located};
use super::{ListenAddr, ListenSpec, ReadyCheck, ReadySpec, RolloutSpec};
use crate::ready::HttpUrl;

/// The readiness kinds, in the order the error messages list them.
const READY_KINDS: &str = "\"notify\", \"tcp\", \"http\", \"exec\" or \"none\"";

/// `listen "tcp://HOST:PORT" name="http"` or `listen "unix:///PATH" mode="0660"`.
/// A relative Unix path is kept as written; `resolve` joins it to the cwd.
pub(crate) fn decode_listen(d: &mut Diagnostics, node: &KdlNode) -> Option<Located<ListenSpec>> {
    let before = d.errors.len();
    let pos = d.pos(node.span());
    let shape = d.shape(node, &["name", "mode"]);
    d.no_children(node);
    d.at_most_args(node, &shape.args, 1);
    let Some(entry) = shape.args.first() else {
        d.at(node.span(), "`listen` needs an address: `listen \"tcp://127.0.0.1:8080\"` or `listen \"unix:///PATH\"`");
        return None;
    };
    let address = d.string(entry, "`listen` address").and_then(|text| match parse_listen_addr(&text) {
        Ok(address) => Some(address),
        Err(message) => {
            d.at(entry.span(), format!("`listen` address {text:?}: {message}"));
            None
        }
    })?;
    let mut name = default_fd_name(&address);
    let mut mode = None;
    for (prop, value) in shape.props {
        match prop {
            "name" => match d.string(value, "`name` of `listen`") {
                Some(given) if valid_fd_name(&given) => name = given,
                Some(given) => d.at(
                    value.span(),
                    format!("`name` of `listen` {given:?}: use 1 to 255 printable ASCII characters without `:`"),
                ),
                None => {}
            },
            _ => {
                mode = decode_mode(d, value);
                if matches!(address, ListenAddr::Tcp { .. }) {
                    d.at(value.span(), "`mode` of `listen` applies to `unix://` addresses only");
                }
            }
        }
    }
    (d.errors.len() == before).then_some(Located { value: ListenSpec { address, name, mode }, pos })
}

/// `tcp://HOST:PORT` (`tcp://:PORT` is every IPv4 address, IPv6 in
/// brackets) or `unix://PATH` (`unix:///abs`, or relative to the cwd).
pub fn parse_listen_addr(text: &str) -> Result<ListenAddr, String> {
    if let Some(rest) = text.strip_prefix("tcp://") {
        let (host, port) = rest.rsplit_once(':').ok_or("expected `tcp://HOST:PORT`")?;
        let port: u16 = port.parse().map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err("port 0 would bind a different random port every time; give a fixed port".into());
        }
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6.to_string(),
            Some(_) => return Err(format!("{host} is not an IPv6 address")),
            None if host.is_empty() => "0.0.0.0".to_string(),
            None if host.contains(':') => return Err("write an IPv6 host in brackets: `tcp://[::1]:8080`".into()),
            None if host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) => host.to_string(),
            None => return Err(format!("{host:?} is not a host name or IP address")),
        };
        return Ok(ListenAddr::Tcp { host, port });
    }
    if let Some(path) = text.strip_prefix("unix://") {
        if path.is_empty() || path.ends_with('/') || path.contains('\0') {
            return Err("expected `unix:///PATH/TO/SOCKET`".into());
        }
        // sun_path holds 108 bytes, the final NUL included.
        if path.len() > 107 {
            return Err("a Unix socket path is limited to 107 bytes".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    Err("expected `tcp://HOST:PORT` or `unix:///PATH`".into())
}

/// `tcp-8080`, `unix-web.sock`: a `LISTEN_FDNAMES` entry that says which
/// socket it is without the user naming it.
fn default_fd_name(address: &ListenAddr) -> String {
    match address {
        ListenAddr::Tcp { port, .. } => format!("tcp-{port}"),
        ListenAddr::Unix(path) => {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let clean: String =
                file.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
            format!("unix-{clean}").chars().take(255).collect()
        }
    }
}

/// systemd's rule for `FileDescriptorName=`: printable ASCII, no `:` (the
/// separator of `LISTEN_FDNAMES`), at most 255 characters.
fn valid_fd_name(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// `mode="0660"`: octal digits in a string, as `chmod` takes them (a KDL
/// integer `0660` would read as decimal 660).
fn decode_mode(d: &mut Diagnostics, entry: &KdlEntry) -> Option<u32> {
    let parsed = match entry.value() {
        KdlValue::String(s) if !s.is_empty() && s.len() <= 4 => u32::from_str_radix(s, 8).ok(),
        _ => None,
    };
    match parsed {
        Some(mode) if mode <= 0o777 => Some(mode),
        _ => {
            d.wrong(entry, "`mode` of `listen`", "octal permission bits in a string, like \"0660\"");
            None
        }
    }
}

/// `ready "notify" timeout="3s" watchdog="10s"`, `ready "tcp" "HOST:PORT"`,
/// `ready "http" "http://HOST:PORT/PATH"`, `ready "exec" "CMD" "ARG"...`,
/// `ready "none"`.
pub(crate) fn decode_ready(d: &mut Diagnostics, node: &KdlNode) -> Option<ReadySpec> {
    let before = d.errors.len();
    let shape = d.shape(node, &["timeout", "watchdog"]);
    d.no_children(node);
    let Some((kind_entry, rest)) = shape.args.split_first() else {
        d.at(node.span(), format!("`ready` needs a kind: {READY_KINDS}"));
        return None;
    };
    let mut operands = Vec::new();
    for entry in rest {
        operands.extend(d.string(entry, "argument of `ready`"));
    }
    let kind = match kind_entry.value() {
        KdlValue::String(kind) => kind.as_str(),
        _ => "",
    };
    let extra = |d: &mut Diagnostics, allowed: usize| {
        if let Some(entry) = rest.get(allowed) {
            d.at(entry.span(), format!("unexpected extra argument to `ready \"{kind}\"`"));
        }
    };
    let check = match kind {
        "none" => {
            extra(d, 0);
            ReadyCheck::None
        }
        "notify" => {
            extra(d, 0);
            ReadyCheck::Notify { watchdog: None }
        }
        "tcp" => {
            extra(d, 1);
            match operands.first() {
                Some(address) => match tcp_probe_address(address) {
                    Ok(address) => ReadyCheck::Tcp { address },
                    Err(message) => {
                        d.at(rest[0].span(), format!("`ready \"tcp\"` address {address:?}: {message}"));
                        return None;
                    }
                },
                None => {
                    let message = "`ready \"tcp\"` needs the address to probe: `ready \"tcp\" \"127.0.0.1:8080\"`";
                    d.at(node.span(), message);
                    return None;
                }
            }
        }
        "http" => {
            extra(d, 1);
            match operands.first() {
                Some(url) => match HttpUrl::parse(url) {
                    Ok(_) => ReadyCheck::Http { url: url.clone() },
                    Err(e) => {
                        d.at(rest[0].span(), format!("`ready \"http\"`: {e}"));
                        return None;
                    }
                },
                None => {
                    d.at(
                        node.span(),
                        "`ready \"http\"` needs a URL: `ready \"http\" \"http://127.0.0.1:8080/health\"`",
                    );
                    return None;
                }
            }
        }
        "exec" if operands.is_empty() => {
            d.at(node.span(), "`ready \"exec\"` needs a command: `ready \"exec\" \"/usr/bin/check\" \"--quick\"`");
            return None;
        }
        "exec" => ReadyCheck::Exec { argv: operands },
        _ => {
            d.wrong(kind_entry, "`ready` kind", READY_KINDS);
            return None;
        }
    };
    let mut spec = ReadySpec { check, timeout: ReadySpec::DEFAULT_TIMEOUT };
    for (prop, entry) in shape.props {
        let what = format!("`{prop}` of `ready`");
        let value = d.duration(entry, &what);
        if value.is_some_and(|v| v.is_zero()) {
            d.at(entry.span(), format!("{what} must be above 0"));
        }
        match (prop, &mut spec.check) {
            ("timeout", _) => spec.timeout = value.unwrap_or(spec.timeout),
            (_, ReadyCheck::Notify { watchdog }) => *watchdog = value,
            _ => d.at(entry.span(), "`watchdog` applies to `ready \"notify\"` only (the app sends WATCHDOG=1)"),
        }
    }
    (d.errors.len() == before).then_some(spec)
}

/// `HOST:PORT` (a `tcp://` prefix is accepted and dropped).
fn tcp_probe_address(text: &str) -> Result<String, String> {
    let address = text.strip_prefix("tcp://").unwrap_or(text);
    let (host, port) = address.rsplit_once(':').ok_or("expected `HOST:PORT`")?;
    if host.is_empty() {
        return Err("expected `HOST:PORT` with a host, e.g. 127.0.0.1".into());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(address.to_string()),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

/// `rollout max-surge=1 max-unavailable=0`.
pub(crate) fn decode_rollout(d: &mut Diagnostics, node: &KdlNode) -> Option<RolloutSpec> {
    let before = d.errors.len();
    let shape = d.shape(node, &["max-surge", "max-unavailable"]);
    d.no_children(node);
    d.at_most_args(node, &shape.args, 0);
    let mut rollout = RolloutSpec::default();
    for (prop, entry) in shape.props {
        let value = d.u32(entry, &format!("`{prop}` of `rollout`"));
        match prop {
            "max-surge" => rollout.max_surge = value.unwrap_or(rollout.max_surge),
            _ => rollout.max_unavailable = value.unwrap_or(rollout.max_unavailable),
        }
    }
    if d.errors.len() == before && rollout.max_surge == 0 && rollout.max_unavailable == 0 {
        d.at(node.span(), "`rollout` with max-surge=0 and max-unavailable=0 could never replace an instance");
    } else if d.errors.len() == before && rollout.max_surge == 0 {
        // Stopping an old instance before its replacement is ready is not
        // built: procd never lets the serving count drop during a rollout.
        d.at(node.span(), "`rollout` with max-surge=0 is not supported by this version of procd yet");
    }
    (d.errors.len() == before).then_some(rollout)
}

/// Checks across keys, once the app block is read: the same address twice,
/// and probes aimed at a socket procd holds (the kernel accepts connections
/// on it before any instance is ready, and old instances answer requests on
/// it, so such a probe would pass at once whatever the new instance does).
pub(crate) fn check_cluster(d: &mut Diagnostics, listen: &[Located<ListenSpec>], ready: Option<&Located<ReadySpec>>) {
    for (i, socket) in listen.iter().enumerate() {
        if let Some(first) = listen[..i].iter().find(|other| other.value.address == socket.value.address) {
            let message = format!("`listen` {} is given twice; first at line {}", socket.value.address, first.pos.line);
            d.at_pos(socket.pos, message);
        }
    }
    let Some(ready) = ready else { return };
    let probed = match &ready.value.check {
        ReadyCheck::Tcp { address } => Some(address.clone()),
        ReadyCheck::Http { url } => HttpUrl::parse(url).ok().map(|url| url.authority()),
        _ => None,
    };
    let Some(probed) = probed else { return };
    for socket in listen {
        if let ListenAddr::Tcp { host, port } = &socket.value.address {
            let port = port.to_string();
            let same_port = probed.rsplit_once(':').is_some_and(|(_, p)| p == port);
            let any_host = host == "0.0.0.0" || host == "::";
            if same_port && (any_host || probed.trim_start_matches('[').starts_with(host.as_str())) {
                d.at_pos(
                    ready.pos,
                    format!(
                        "`ready` probes {probed}, a socket procd holds for `listen` {}: it would pass before the \
                         new instance is ready; use `ready \"notify\"`, or probe a per-instance port",
                        socket.value.address
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::spec::decode::{decode_document, decode_one_key as decode};

    fn tcp(host: &str, port: u16) -> ListenAddr {
        ListenAddr::Tcp { host: host.into(), port }
    }

    /// FEATURES.md §1, whole, as users copy it.
    const FEATURES_EXAMPLE: &str = include_str!("../../tests/fixtures/features-example.kdl");

    #[test]
    fn the_features_example_decodes() {
        let (apps, errors) = decode_document(Path::new("web.kdl"), FEATURES_EXAMPLE);
        assert!(errors.is_empty(), "{errors:#?}");
        let web = &apps[0];
        assert_eq!(web.listen.len(), 1);
        assert_eq!(web.listen[0].address, tcp("127.0.0.1", 8080));
        assert_eq!(web.ready.check, ReadyCheck::Notify { watchdog: None });
        assert_eq!(web.ready.timeout, Duration::from_secs(3));
        assert_eq!(web.rollout, RolloutSpec::default());
    }

    #[test]
    fn listen_addresses() {
        let table: &[(&str, ListenAddr)] = &[
            ("tcp://127.0.0.1:8080", tcp("127.0.0.1", 8080)),
            ("tcp://:8080", tcp("0.0.0.0", 8080)),
            ("tcp://localhost:1", tcp("localhost", 1)),
            ("tcp://[::1]:8080", tcp("::1", 8080)),
            ("tcp://[::]:80", tcp("::", 80)),
            ("unix:///run/web.sock", ListenAddr::Unix("/run/web.sock".into())),
            ("unix://web.sock", ListenAddr::Unix("web.sock".into())),
        ];
        for (text, expected) in table {
            assert_eq!(&parse_listen_addr(text).unwrap(), expected, "{text}");
        }
        assert_eq!(tcp("::1", 80).to_string(), "tcp://[::1]:80");
        assert_eq!(parse_listen_addr("unix:///a/b").unwrap().to_string(), "unix:///a/b");
        let long = format!("unix:///{}", "x".repeat(120));
        for bad in [
            "tcp://h",
            "tcp://h:0",
            "tcp://h:70000",
            "tcp://::1:80",
            "tcp://[zz]:80",
            "tcp://a b:1",
            "unix://",
            "udp://:1",
            &long,
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_names_modes_and_order() {
        let app = decode("listen \"tcp://:8080\"\n listen \"unix:///run/w.sock\" mode=\"0660\"\n listen \"tcp://127.0.0.1:9\" name=\"admin\"")
            .unwrap();
        let names: Vec<&str> = app.listen.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["tcp-8080", "unix-w.sock", "admin"]);
        assert_eq!(app.listen[1].mode, Some(0o660));
        assert_eq!(app.listen[0].mode, None);
    }

    #[test]
    fn ready_kinds() {
        let ready = |body: &str| decode(body).unwrap().ready;
        assert_eq!(decode("instances 1").unwrap().ready, ReadySpec::default());
        assert_eq!(ready("ready \"none\"").check, ReadyCheck::None);
        let notify = ready("ready \"notify\" timeout=\"10s\" watchdog=\"30s\"");
        assert_eq!(notify.check, ReadyCheck::Notify { watchdog: Some(Duration::from_secs(30)) });
        assert_eq!(notify.timeout, Duration::from_secs(10));
        assert_eq!(
            ready("ready \"tcp\" \"127.0.0.1:9000\"").check,
            ReadyCheck::Tcp { address: "127.0.0.1:9000".into() }
        );
        assert_eq!(ready("ready \"tcp\" \"tcp://db:5432\"").check, ReadyCheck::Tcp { address: "db:5432".into() });
        let http = ready("ready \"http\" \"http://127.0.0.1:9000/health\" timeout=\"5s\"");
        assert_eq!(http.check, ReadyCheck::Http { url: "http://127.0.0.1:9000/health".into() });
        assert_eq!(http.timeout, Duration::from_secs(5));
        let exec = ready("ready \"exec\" \"./check\" \"--fast\"");
        assert_eq!(exec.check, ReadyCheck::Exec { argv: vec!["./check".into(), "--fast".into()] });
    }

    #[test]
    fn rollout() {
        assert_eq!(decode("rollout").unwrap().rollout, RolloutSpec { max_surge: 1, max_unavailable: 0 });
        let r = decode("rollout max-surge=2 max-unavailable=1").unwrap().rollout;
        assert_eq!(r, RolloutSpec { max_surge: 2, max_unavailable: 1 });
        assert!(decode("rollout max-surge=0 max-unavailable=1").is_err());
    }

    /// Every error, located on line 3 (the body's line) with its gist.
    #[test]
    fn errors() {
        let table: &[(&str, &str)] = &[
            ("listen", "`listen` needs an address"),
            ("listen 8080", "`listen` address: expected a string, found integer 8080"),
            ("listen \"http://:80\"", "expected `tcp://HOST:PORT` or `unix:///PATH`"),
            ("listen \"tcp://:0\"", "port 0 would bind a different random port"),
            ("listen \"tcp://:8080\" mode=\"0660\"", "`mode` of `listen` applies to `unix://` addresses only"),
            ("listen \"unix:///s\" mode=\"rw\"", "octal permission bits"),
            ("listen \"unix:///s\" mode=660", "octal permission bits"),
            ("listen \"unix:///s\" mode=\"1777\"", "octal permission bits"),
            ("listen \"tcp://:1\" name=\"a:b\"", "without `:`"),
            ("listen \"tcp://:1\" nam=\"a\"", "did you mean `name`?"),
            ("listen \"tcp://:1\" \"tcp://:2\"", "unexpected extra argument to `listen`"),
            (
                "listen \"tcp://:1\"\n listen \"tcp://0.0.0.0:1\"",
                "`listen` tcp://0.0.0.0:1 is given twice; first at line 3",
            ),
            ("ready", "`ready` needs a kind"),
            ("ready \"notify\" \"x\"", "unexpected extra argument to `ready \"notify\"`"),
            ("ready \"tcp\"", "`ready \"tcp\"` needs the address"),
            ("ready \"tcp\" \"nohost\"", "expected `HOST:PORT`"),
            ("ready \"tcp\" \":80\"", "with a host"),
            ("ready \"http\"", "needs a URL"),
            ("ready \"http\" \"https://x/\"", "https is not supported"),
            ("ready \"exec\"", "needs a command"),
            ("ready \"exec\" 5", "argument of `ready`: expected a string"),
            ("ready \"notify\" timeout=3", "expected a duration string"),
            ("ready \"notify\" timeout=\"0s\"", "`timeout` of `ready` must be above 0"),
            ("ready \"tcp\" \"h:1\" watchdog=\"1s\"", "`watchdog` applies to `ready \"notify\"` only"),
            ("ready \"notify\" { x; }", "`ready` takes no `{ ... }` block"),
            ("ready \"notify\"\n ready \"none\"", "`ready` is given twice"),
            ("rollout max-surge=0 max-unavailable=0", "could never replace an instance"),
            ("rollout 1", "unexpected extra argument to `rollout`"),
            ("rollout surge=1", "unknown property `surge` of `rollout`"),
            ("listen \"tcp://127.0.0.1:8080\"\n ready \"tcp\" \"127.0.0.1:8080\"", "a socket procd holds"),
            ("listen \"tcp://:8080\"\n ready \"http\" \"http://localhost:8080/\"", "a socket procd holds"),
        ];
        let mut failures = Vec::new();
        for (body, gist) in table {
            match decode(body) {
                Ok(_) => failures.push(format!("{body:?}: no error")),
                Err(errors) if !errors.iter().any(|e| e.starts_with("t.kdl:") && e.contains(gist)) => {
                    failures.push(format!("{body:?}: expected {gist:?}, found {errors:?}"))
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // A probe of another port than the held socket's is fine.
        decode("listen \"tcp://127.0.0.1:8080\"\n ready \"http\" \"http://127.0.0.1:9090/\"").unwrap();
    }
}
