//! The HTTP probe: ready once `GET URL` answers with a 2xx status.
//!
//! A plain HTTP/1.1 request over a tokio `TcpStream`, `Connection: close`,
//! reading only the status line: procd needs no HTTP client for this, and
//! a TLS client would be most of the binary. `https://` is refused with a
//! hint (probe a plain-HTTP port, or use `ready "exec"` with curl).

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout as within};

use super::{ProbeError, RETRY_EVERY};

/// The status line must arrive within this many bytes.
const MAX_STATUS_LINE: usize = 8192;

/// A parsed `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; includes the query.
    pub path: String,
}

/// Why a URL cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        let bad = |why: &str| UrlError(format!("URL {url:?}: {why}"));
        if url.starts_with("https://") {
            return Err(bad("https is not supported by the http probe (procd has no TLS client); \
                 probe a plain-HTTP port or use `ready \"exec\"` with curl"));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("expected http://HOST[:PORT]/PATH"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if path.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(bad("the path contains spaces or control characters"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[` in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || host.contains('@')
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
        {
            return Err(bad("expected a host name or IP address"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is not 1 to 65535"))?,
        };
        Ok(HttpUrl { host: host.to_string(), port, path })
    }

    /// `HOST:PORT`, IPv6 in brackets: what `connect` and `Host:` take.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Requests `url` until it answers 2xx or `timeout` has passed. Any other
/// status is retried too: an app may answer 503 while it warms up.
pub async fn http(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let parsed = HttpUrl::parse(url).map_err(|e| ProbeError::Invalid(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match within(left, status_of(&parsed)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) => format!("GET {url} answered {status}"),
            Ok(Err(e)) => format!("GET {url}: {e}"),
            Err(_) => format!("GET {url}: no answer in time"),
        };
        if Instant::now() + RETRY_EVERY >= deadline {
            return Err(ProbeError::Timeout { what: format!("http {url}"), waited: timeout, last });
        }
        sleep(RETRY_EVERY).await;
    }
}

/// One request; the status code of the answer.
async fn status_of(url: &HttpUrl) -> std::io::Result<u16> {
    let authority = url.authority();
    let mut stream = TcpStream::connect(&authority).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: procd-ready\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_STATUS_LINE {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head).ok_or_else(|| {
        let shown = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {shown:?}"))
    })
}

/// `HTTP/1.x NNN reason` → NNN.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok().filter(|code| (100..600).contains(code))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/health?x=1"));
        assert_eq!(HttpUrl::parse("http://localhost").unwrap().path, "/");
        assert_eq!(HttpUrl::parse("http://h?q").unwrap().path, "/?q");
        let v6 = HttpUrl::parse("http://[::1]:9/").unwrap();
        assert_eq!((v6.host.as_str(), v6.authority()), ("::1", "[::1]:9".to_string()));
        assert!(HttpUrl::parse("https://x/").unwrap_err().to_string().contains("https is not supported"));
        for bad in ["ftp://x", "http://", "http://:80/", "http://h:0/", "http://h:x/", "http://a b/", "http://u@h/"] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    /// Answers each connection with the next status of `statuses`.
    fn server(statuses: Vec<u16>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for status in statuses {
                let Ok((mut conn, _)) = listener.accept() else { return };
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        addr
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn passes_on_2xx_after_retrying_503() {
        let addr = server(vec![503, 503, 200]);
        rt().block_on(http(&format!("http://{addr}/health"), Duration::from_secs(3))).unwrap();
    }

    #[test]
    fn times_out_naming_the_last_status() {
        let addr = server(vec![500; 100]);
        let error = rt().block_on(http(&format!("http://{addr}/"), Duration::from_millis(300))).unwrap_err();
        assert!(error.to_string().contains("answered 500"), "{error}");
        let error = rt().block_on(http("https://127.0.0.1/", Duration::from_millis(300))).unwrap_err();
        assert!(matches!(error, ProbeError::Invalid(_)), "{error}");
    }
}
