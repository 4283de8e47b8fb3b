//! Active probes after an apply (`--probe tcp:HOST:PORT`): each opens a *new* TCP
//! connection, so it tests what a fresh API-server or SSH connection would meet under the
//! new tree (connections that already exist can survive a tree that starves new ones). A
//! failed probe makes apply undo everything, as a failed change does.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::apply::resource::{Recorded, Resource, ResourceError};

/// Why a probe could not be parsed or did not connect.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "`{input}` is not a probe: write tcp:HOST:PORT, e.g. tcp:10.0.0.1:6443 or tcp:[fd00::1]:22"
    )]
    Usage { input: String },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("no connection within {ms} ms")]
    Timeout { ms: u128 },
    #[error("{addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

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
pub fn parse(s: &str) -> Result<Probe, ProbeError> {
    let usage = || ProbeError::Usage {
        input: s.to_string(),
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
    pub fn run(&self, timeout: Duration) -> Result<Duration, ProbeError> {
        let start = Instant::now();
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| ProbeError::Resolve {
                host: self.host.clone(),
                source,
            })?
            .collect();
        let mut last = ProbeError::NoAddress {
            host: self.host.clone(),
        };
        for addr in addrs {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                last = ProbeError::Timeout {
                    ms: timeout.as_millis(),
                };
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(_) => return Ok(start.elapsed()),
                Err(source) => last = ProbeError::Connect { addr, source },
            }
        }
        Err(last)
    }
}

/// A probe as an apply resource: a check after the tree and the other resources, with
/// nothing to undo. It guards the apply (no default-route warning).
#[derive(Debug, Clone)]
pub struct ProbeCheck {
    pub probe: Probe,
    pub timeout: Duration,
}

impl Resource for ProbeCheck {
    fn describe(&self) -> String {
        format!("probe {}", self.probe)
    }

    fn guards(&self) -> bool {
        true
    }

    fn record(&self, _state: &std::path::Path) -> Result<Option<Recorded>, ResourceError> {
        Ok(None)
    }

    fn apply(&mut self, _state: &std::path::Path) -> Result<String, ResourceError> {
        let t = self.probe.run(self.timeout)?;
        Ok(format!(
            "probe {}: connected in {} ms",
            self.probe,
            t.as_millis()
        ))
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
        let e = p.run(Duration::from_secs(2)).unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
    }
}
