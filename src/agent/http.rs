//! The agent's HTTP endpoint: `GET /metrics` and `GET /healthz`, nothing else. Read only
//! and bounded: a request head larger than `MAX_HEAD` bytes gets 431, one not complete
//! within `DEADLINE` gets 408, any method but GET (and HEAD) 405, any other path 404; at
//! most `MAX_CONNECTIONS` are served at once (more are answered 503 and closed). Every
//! answer closes the connection. A request body is never read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MAX_HEAD: usize = 8192;
pub const DEADLINE: Duration = Duration::from_secs(5);
pub const MAX_CONNECTIONS: usize = 16;

/// What the endpoint serves: the exposition, and health (`Err`: why unhealthy).
pub trait Pages: Send + Sync + 'static {
    fn metrics(&self) -> Result<String, String>;
    fn health(&self) -> Result<(), String>;
}

/// One answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub allow: bool,
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
        allow: false,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers a complete request head (pure; the socket part is `serve_one`).
pub fn respond(head: &[u8], pages: &dyn Pages) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return text(400, "request is not UTF-8\n");
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return text(400, "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return text(400, "only HTTP/1.x\n");
    }
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        let mut r = text(405, "only GET\n");
        r.allow = true;
        return r;
    }
    match path {
        "/metrics" => match pages.metrics() {
            Ok(body) => Response {
                status: 200,
                content_type: crate::agent::metrics::CONTENT_TYPE,
                body,
                allow: false,
            },
            Err(e) => text(500, format!("{e}\n")),
        },
        "/healthz" => match pages.health() {
            Ok(()) => text(200, "ok\n"),
            Err(why) => text(503, format!("unhealthy: {why}\n")),
        },
        _ => text(404, "not found: try /metrics or /healthz\n"),
    }
}

/// Reads a request head within the limits: `Ok(head)`, or the error answer.
fn read_head(s: &mut TcpStream) -> Result<Vec<u8>, Response> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(text(408, "request not complete in time\n"));
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => return Err(text(400, "connection closed mid-request\n")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(text(408, "request not complete in time\n"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(text(400, "read error\n")),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(text(431, "request head too large\n"));
        }
    }
}

fn write_response(s: &mut TcpStream, r: &Response, head_only: bool) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let _ = s.set_write_timeout(Some(DEADLINE));
    let _ = s.write_all(out.as_bytes());
    if !head_only {
        let _ = s.write_all(r.body.as_bytes());
    }
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Serves one connection.
pub fn serve_one(mut s: TcpStream, pages: &dyn Pages) {
    match read_head(&mut s) {
        Ok(head) => {
            let r = respond(&head, pages);
            write_response(&mut s, &r, head.starts_with(b"HEAD "));
        }
        Err(r) => write_response(&mut s, &r, false),
    }
}

/// A bound listener.
pub struct Server {
    listener: TcpListener,
}

impl Server {
    pub fn bind(addr: SocketAddr) -> std::io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr)?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves forever on a thread of its own, one thread per connection up to the bound.
    pub fn spawn(self, pages: Arc<dyn Pages>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let busy = Arc::new(AtomicUsize::new(0));
            for conn in self.listener.incoming() {
                let Ok(mut s) = conn else { continue };
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    write_response(&mut s, &text(503, "too many connections\n"), false);
                    continue;
                }
                let pages = Arc::clone(&pages);
                let done = Arc::clone(&busy);
                let spawned = std::thread::Builder::new()
                    .name("netqos-http".into())
                    .spawn(move || {
                        serve_one(s, pages.as_ref());
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    // The connection went with the closure and is closed.
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(bool);
    impl Pages for P {
        fn metrics(&self) -> Result<String, String> {
            Ok("m 1\n".into())
        }
        fn health(&self) -> Result<(), String> {
            if self.0 {
                Ok(())
            } else {
                Err("apply refused".into())
            }
        }
    }

    #[test]
    fn only_get_of_two_paths() {
        let p = P(true);
        assert_eq!(respond(b"GET /metrics HTTP/1.1\r\nHost: x", &p).status, 200);
        assert_eq!(respond(b"GET /metrics?x=1 HTTP/1.0", &p).body, "m 1\n");
        assert_eq!(respond(b"GET /healthz HTTP/1.1", &p).status, 200);
        assert_eq!(respond(b"GET /../etc/passwd HTTP/1.1", &p).status, 404);
        let post = respond(b"POST /metrics HTTP/1.1", &p);
        assert_eq!((post.status, post.allow), (405, true));
        assert_eq!(respond(b"DELETE /healthz HTTP/1.1", &p).status, 405);
        assert_eq!(respond(b"GET /metrics", &p).status, 400);
        assert_eq!(respond(b"GET /metrics SPDY/3", &p).status, 400);
        assert_eq!(respond(b"\xff\xfe", &p).status, 400);
    }

    #[test]
    fn unhealthy_is_503_with_the_reason() {
        let r = respond(b"GET /healthz HTTP/1.1", &P(false));
        assert_eq!(r.status, 503);
        assert!(r.body.contains("apply refused"));
    }
}
