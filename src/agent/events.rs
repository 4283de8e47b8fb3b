//! Kernel events: an rtnetlink socket subscribed to the link and traffic-control multicast
//! groups (`RTNLGRP_LINK`, `RTNLGRP_TC`), whose notifications are decoded with the same
//! codec as dumps (`apply::netlink`). The kernel queues the notifications of a request
//! before it answers the request, so once netqos's own change is acknowledged its events
//! are already waiting here. A receive-buffer overrun (`ENOBUFS`) is reported as
//! `Event::Overrun`: some events were lost and the mirror must be re-read.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::apply::model::{Class, Link, Qdisc};
use crate::apply::netlink::nla::{self, DecodeError};
use crate::apply::netlink::tc::{self, FilterEntry};
use crate::apply::netlink::{NlError, link};

/// The rtnetlink multicast group of link notifications.
pub const RTNLGRP_LINK: u32 = 1;
/// The rtnetlink multicast group of qdisc, class and filter notifications.
pub const RTNLGRP_TC: u32 = 4;
/// How much the kernel may queue for netqos before it drops events (a full apply of
/// 10,000 classes sends some 30,000 notifications of ~200 bytes).
const RCVBUF: usize = 32 << 20;
const ENOBUFS: i32 = 105;

/// One decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Link {
        ifindex: i32,
        link: Link,
        deleted: bool,
    },
    Qdisc {
        ifindex: i32,
        qdisc: Qdisc,
        deleted: bool,
    },
    /// An HTB class (other classes are not reported).
    Class {
        ifindex: i32,
        class: Class,
        deleted: bool,
    },
    /// A filter notification: the parent the request named, and the entry.
    Filter {
        ifindex: i32,
        parent: u32,
        entry: FilterEntry,
        deleted: bool,
    },
    /// Events were lost: everything must be read again.
    Overrun,
}

impl Event {
    /// The interface index the event is about (`None` for an overrun).
    pub fn ifindex(&self) -> Option<i32> {
        match self {
            Event::Link { ifindex, .. }
            | Event::Qdisc { ifindex, .. }
            | Event::Class { ifindex, .. }
            | Event::Filter { ifindex, .. } => Some(*ifindex),
            Event::Overrun => None,
        }
    }
}

/// Decodes one notification; `None` for kinds netqos does not follow (chains, routes).
pub fn decode(kind: u16, payload: &[u8]) -> Result<Option<Event>, DecodeError> {
    Ok(Some(match kind {
        link::RTM_NEWLINK | link::RTM_DELLINK => {
            let (ifindex, link) = link::decode(payload)?;
            Event::Link {
                ifindex,
                link,
                deleted: kind == link::RTM_DELLINK,
            }
        }
        tc::RTM_NEWQDISC | tc::RTM_DELQDISC => {
            let (ifindex, qdisc, _) = tc::decode_qdisc(payload)?;
            Event::Qdisc {
                ifindex,
                qdisc,
                deleted: kind == tc::RTM_DELQDISC,
            }
        }
        tc::RTM_NEWTCLASS | tc::RTM_DELTCLASS => match tc::decode_class(payload)? {
            Some((ifindex, class, _)) => Event::Class {
                ifindex,
                class,
                deleted: kind == tc::RTM_DELTCLASS,
            },
            None => return Ok(None),
        },
        tc::RTM_NEWTFILTER | tc::RTM_DELTFILTER => {
            let ifindex = nla::i32_at(payload, 4)?;
            let parent = nla::u32_at(payload, 12)?;
            Event::Filter {
                ifindex,
                parent,
                entry: tc::decode_filter(payload)?,
                deleted: kind == tc::RTM_DELTFILTER,
            }
        }
        _ => return Ok(None),
    }))
}

/// The subscribed socket (non-blocking; `wait` polls it).
pub struct Events {
    sock: Socket,
    buf: Vec<u8>,
}

impl Events {
    /// Subscribes to link and tc notifications of the current network namespace.
    pub fn open() -> Result<Events, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.add_membership(RTNLGRP_LINK)?;
        sock.add_membership(RTNLGRP_TC)?;
        // Above rmem_max only with CAP_NET_ADMIN (SO_RCVBUFFORCE); the plain size is
        // still a bound, and an overrun is detected either way.
        let _ = sock.set_rx_buf_sz(RCVBUF);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(sock.as_fd(), RCVBUF);
        sock.set_non_blocking(true)?;
        Ok(Events {
            sock,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Waits up to `timeout` for the first event (or for `also` to become readable: the
    /// file watch's wake-up), then returns every event queued.
    pub fn wait(
        &mut self,
        timeout: Duration,
        also: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Vec<Event>, NlError> {
        use rustix::event::{PollFd, PollFlags};
        let mut fds = vec![PollFd::new(&self.sock, PollFlags::IN)];
        if let Some(fd) = &also {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(NlError::Io(e.into())),
        }
        self.drain()
    }

    /// Every event queued now, without blocking.
    pub fn drain(&mut self) -> Result<Vec<Event>, NlError> {
        const MSG_TRUNC: i32 = 0x20;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, MSG_TRUNC) {
                Ok(n) if n > self.buf.capacity() => {
                    // A notification larger than the buffer: lost, so re-read.
                    out.push(Event::Overrun);
                }
                Ok(n) => {
                    for m in nla::messages(&self.buf[..n])? {
                        if let Some(e) = decode(m.kind, m.payload)? {
                            out.push(e);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => out.push(Event::Overrun),
                Err(e) => return Err(NlError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::model::{H_ROOT, QdiscKind};
    use crate::apply::netlink::tc::Mode;

    /// A request's payload (header stripped): notifications have the same layout.
    fn payload(w: &nla::MsgWriter) -> Vec<u8> {
        w.finish(1)[16..].to_vec()
    }

    #[test]
    fn a_qdisc_notification_decodes_like_a_dump() {
        let q = Qdisc {
            dev: String::new(),
            parent: H_ROOT,
            handle: 0x0001_0000,
            kind: QdiscKind::Htb {
                default: 0x30,
                r2q: 10,
                direct_qlen: 1000,
            },
        };
        let w = tc::qdisc_request(7, &q, Mode::Add);
        let e = decode(tc::RTM_DELQDISC, &payload(&w)).unwrap().unwrap();
        assert_eq!(
            e,
            Event::Qdisc {
                ifindex: 7,
                qdisc: q,
                deleted: true
            }
        );
        assert_eq!(e.ifindex(), Some(7));
    }

    #[test]
    fn chains_and_routes_are_ignored() {
        // RTM_NEWCHAIN (100) and RTM_NEWROUTE (24) carry nothing the mirror follows.
        assert_eq!(decode(100, &[0u8; 20]).unwrap(), None);
        assert_eq!(decode(24, &[0u8; 20]).unwrap(), None);
    }

    #[test]
    fn a_truncated_notification_is_an_error_not_an_event() {
        assert!(decode(tc::RTM_NEWTCLASS, &[0u8; 8]).is_err());
    }
}
