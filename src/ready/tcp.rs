//! The TCP probe: ready once a connection to the address succeeds.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout as within};

use super::{ProbeError, RETRY_EVERY};

/// Connects to `addr` (`HOST:PORT`, resolved on every attempt) until a
/// connection succeeds or `timeout` has passed. The connection is closed
/// at once.
pub async fn tcp(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match within(left, TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(e)) => format!("connect to {addr}: {e}"),
            Err(_) => format!("connect to {addr}: timed out"),
        };
        if Instant::now() + RETRY_EVERY >= deadline {
            return Err(ProbeError::Timeout { what: format!("tcp {addr}"), waited: timeout, last });
        }
        sleep(RETRY_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn passes_on_a_listening_port_and_times_out_on_a_closed_one() {
        rt().block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tcp(&addr, Duration::from_secs(1)).await.unwrap();
            drop(listener);
            let error = tcp(&addr, Duration::from_millis(200)).await.unwrap_err().to_string();
            assert!(error.contains("not ready after 200ms") && error.contains("refused"), "{error}");
        });
    }

    #[test]
    fn passes_once_the_port_opens_late() {
        rt().block_on(async {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let opener = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
            });
            tcp(&addr, Duration::from_secs(3)).await.unwrap();
            drop(opener.join());
        });
    }
}
