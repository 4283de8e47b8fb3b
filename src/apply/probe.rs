//! Active probes after an apply (`--probe tcp:HOST:PORT`): each opens a *new* TCP
//! connection, so it tests what a fresh API-server or SSH connection would meet under the
//! new tree (connections that already exist can survive a tree that starves new ones). A
//! failed probe makes apply undo everything, as a failed change does.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// One probe, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp:[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp:{}:{}", self.host, self.port)
        }
    }
}

/// Parses `tcp:HOST:PORT`, `tcp:[IPV6]:PORT`.
pub fn parse(s: &str) -> Result<Probe, String> {
    let usage = || {
        format!(
            "`{s}` is not a probe: write tcp:HOST:PORT, e.g. tcp:10.0.0.1:6443 or tcp:[fd00::1]:22"
        )
    };
    let rest = s.strip_prefix("tcp:").ok_or_else(usage)?;
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(usage)?;
        (h, p)
    } else {
        let (h, p) = rest.rsplit_once(':').ok_or_else(usage)?;
        if h.contains(':') {
            return Err(usage());
        }
        (h, p)
    };
    let port: u16 = port.parse().map_err(|_| usage())?;
    if host.is_empty() || port == 0 {
        return Err(usage());
    }
    Ok(Probe {
        host: host.to_string(),
        port,
    })
}

impl Probe {
    /// Opens a new connection within `timeout` (every address the name resolves to is
    /// tried in turn, until one connects). Returns how long the connect took.
    pub fn run(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut last = format!("{} resolves to no address", self.host);
        for a in addrs {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                last = format!("no connection within {} ms", timeout.as_millis());
                break;
            }
            match TcpStream::connect_timeout(&a, left) {
                Ok(_) => return Ok(start.elapsed()),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse_and_print_back() {
        for s in [
            "tcp:10.0.0.1:6443",
            "tcp:[fd00::1]:22",
            "tcp:api.example:443",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "10.0.0.1:6443",
            "udp:10.0.0.1:53",
            "tcp:10.0.0.1",
            "tcp::22",
            "tcp:10.0.0.1:0",
            "tcp:10.0.0.1:70000",
            "tcp:fd00::1:22",
            "tcp:[fd00::1]22",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_connection_fails_and_a_listener_passes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = parse(&format!("tcp:127.0.0.1:{port}")).unwrap();
        assert!(p.run(Duration::from_secs(2)).is_ok());
        drop(l);
        let e = p.run(Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }
}
