//! systemd's notification protocol (`sd_notify(3)`): datagrams such as `READY=1`,
//! `WATCHDOG=1`, `RELOADING=1`, `STATUS=…` to the socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` in the abstract namespace). Without the variable every call does nothing.
//! `WATCHDOG_USEC` gives the watchdog period (pinged at half of it).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The notification socket, if the service manager gave one.
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), if a watchdog is set.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(|us| Duration::from_micros(us / 2));
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|p| {
            let addr = if let Some(name) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier { target, watchdog }
    }

    /// Sends one notification (errors are ignored: the manager may be gone).
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            let _ = sock.send_to_addr(msg.as_bytes(), addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("nq-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), addr)),
            watchdog: None,
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
