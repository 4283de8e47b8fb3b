//! A blocking rtnetlink socket: one request, then its ACK (with the kernel's extended-ack
//! text on failure and warnings on success), or a dump read to its end. Every message of
//! the reply is decoded; a malformed one fails the call.

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use super::nla::{self, DecodeError, MsgWriter, NLM_F_ACK_TLVS, NLM_F_CAPPED};

const NLMSGERR_ATTR_MSG: u16 = 1;

/// A failed netlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The kernel marked the dump interrupted (`NLM_F_DUMP_INTR`): retried, never used.
    #[error("the dump was interrupted by a concurrent change")]
    Interrupted,
    /// The kernel refused: errno and its extended-ack message, if it gave one.
    #[error("kernel: {}{}", message.as_deref().map(|m| format!("{m} (")).unwrap_or_default(), errno_text(*errno, message.is_some()))]
    Kernel { errno: i32, message: Option<String> },
}

fn errno_text(errno: i32, close: bool) -> String {
    let text = std::io::Error::from_raw_os_error(errno);
    if close {
        format!("{text})")
    } else {
        text.to_string()
    }
}

/// The errno an interrupted dump is reported with (the kernel's own word for it).
pub const EINTR: i32 = 4;

impl NlError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Interrupted => Some(EINTR),
            _ => None,
        }
    }
}

/// The route netlink socket of the current network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
    /// Extended-ack texts of successful requests (for example quantum warnings).
    pub warnings: Vec<String>,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NlError> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        // Large dumps (10,000 classes) arrive faster than they are read.
        let _ = sock.set_rx_buf_sz(4 << 20);
        Ok(Netlink {
            sock,
            seq: 1,
            rbuf: Vec::with_capacity(1 << 20),
            warnings: Vec::new(),
        })
    }

    fn send(&mut self, w: &MsgWriter) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let buf = w.finish(self.seq);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// One datagram (one syscall; `MSG_TRUNC` reports a datagram larger than the buffer,
    /// which is an error rather than a silent cut).
    fn recv(&mut self) -> Result<Vec<u8>, NlError> {
        const MSG_TRUNC: i32 = 0x20;
        self.rbuf.clear();
        let n = self.sock.recv(&mut self.rbuf, MSG_TRUNC)?;
        if n > self.rbuf.len() {
            return Err(NlError::Decode(DecodeError::Datagram {
                len: n,
                cap: self.rbuf.capacity(),
            }));
        }
        Ok(self.rbuf[..n].to_vec())
    }

    /// Sends a request with `NLM_F_ACK` and waits for the ACK.
    pub fn request(&mut self, w: &MsgWriter) -> Result<(), NlError> {
        let seq = self.send(w)?;
        loop {
            let buf = self.recv()?;
            for m in nla::messages(&buf)? {
                if m.seq != seq {
                    continue;
                }
                if m.kind == nla::NLMSG_ERROR {
                    let (errno, text) = parse_error(m.flags, m.payload)?;
                    if errno == 0 {
                        if let Some(t) = text {
                            self.warnings.push(t);
                        }
                        return Ok(());
                    }
                    return Err(NlError::Kernel {
                        errno: -errno,
                        message: text,
                    });
                }
            }
        }
    }

    /// Sends several requests in one datagram and returns each one's outcome, in order. The
    /// kernel processes them one by one, in order, and goes on after a failure. It answers
    /// a failure always, but a success only when the request asks for an ACK: so only the
    /// last request, and those whose success may carry a warning (`MsgWriter::may_warn`),
    /// ask. Once the last one is answered, every request without an answer succeeded. This
    /// halves the messages and system calls of a batch (an ACK is one datagram, read by one
    /// `recvmsg`). An `Err` means the exchange itself failed (outcomes unknown).
    pub fn request_many(&mut self, ws: &[MsgWriter]) -> Result<Vec<Result<(), NlError>>, NlError> {
        if ws.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(ws.len() * 128);
        for (k, w) in ws.iter().enumerate() {
            self.seq = self.seq.wrapping_add(1);
            let start = buf.len();
            w.finish_into(self.seq, &mut buf);
            if k + 1 < ws.len() && !w.may_warn {
                let flags = w.flags() & !nla::NLM_F_ACK;
                buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
            }
        }
        self.sock.send(&buf, 0)?;
        let mut out: Vec<Option<Result<(), NlError>>> = (0..ws.len()).map(|_| None).collect();
        // The last request always asks for an ACK; the kernel answers in order.
        while out.last().is_some_and(Option::is_none) {
            let buf = self.recv()?;
            for m in nla::messages(&buf)? {
                let i = m.seq.wrapping_sub(first) as usize;
                if m.kind != nla::NLMSG_ERROR || i >= out.len() || out[i].is_some() {
                    continue;
                }
                let (errno, text) = parse_error(m.flags, m.payload)?;
                out[i] = Some(if errno == 0 {
                    if let Some(t) = text {
                        self.warnings.push(t);
                    }
                    Ok(())
                } else {
                    Err(NlError::Kernel {
                        errno: -errno,
                        message: text,
                    })
                });
            }
        }
        // Not answered before the last one: succeeded silently.
        Ok(out.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }

    /// Sends a request with `NLM_F_ACK` and returns the messages that came before the ACK.
    pub fn query(&mut self, w: &MsgWriter) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = self.send(w)?;
        let mut out = Vec::new();
        loop {
            let buf = self.recv()?;
            for m in nla::messages(&buf)? {
                if m.seq != seq {
                    continue;
                }
                if m.kind == nla::NLMSG_ERROR {
                    let (errno, text) = parse_error(m.flags, m.payload)?;
                    if errno == 0 {
                        return Ok(out);
                    }
                    return Err(NlError::Kernel {
                        errno: -errno,
                        message: text,
                    });
                }
                out.push(m.payload.to_vec());
            }
        }
    }

    /// Sends a dump request and returns the payload of every reply message.
    pub fn dump(&mut self, w: &MsgWriter) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = self.send(w)?;
        let mut dump = Dump::default();
        loop {
            let buf = self.recv()?;
            if let Some(payloads) = dump.take(&buf, seq)? {
                return Ok(payloads);
            }
        }
    }
}

/// A dump being read: its payloads so far, and whether the kernel marked any message
/// interrupted (`NLM_F_DUMP_INTR`: the state changed while it was dumped).
#[derive(Debug, Default)]
pub struct Dump {
    out: Vec<Vec<u8>>,
    interrupted: bool,
}

impl Dump {
    /// Takes one datagram of the dump with sequence `seq`; `Some` once it ended, `Err`
    /// when it failed (which ends it too). An interrupted dump is read to its end, then is
    /// an error: never a snapshot.
    pub fn take(&mut self, buf: &[u8], seq: u32) -> Result<Option<Vec<Vec<u8>>>, NlError> {
        for m in nla::messages(buf)? {
            if m.seq != seq {
                continue;
            }
            self.interrupted |= m.flags & nla::NLM_F_DUMP_INTR != 0;
            match m.kind {
                nla::NLMSG_DONE => {
                    let errno = nla::i32_at(m.payload, 0).unwrap_or(0);
                    if errno < 0 {
                        return Err(NlError::Kernel {
                            errno: -errno,
                            message: None,
                        });
                    }
                    if self.interrupted {
                        return Err(NlError::Interrupted);
                    }
                    return Ok(Some(std::mem::take(&mut self.out)));
                }
                nla::NLMSG_ERROR => {
                    let (errno, text) = parse_error(m.flags, m.payload)?;
                    return Err(NlError::Kernel {
                        errno: -errno,
                        message: text,
                    });
                }
                _ => self.out.push(m.payload.to_vec()),
            }
        }
        Ok(None)
    }
}

/// `struct nlmsgerr` and its extended-ack attributes: (negative errno or 0, message).
pub fn parse_error(flags: u16, payload: &[u8]) -> Result<(i32, Option<String>), DecodeError> {
    let errno = nla::i32_at(payload, 0)?;
    let orig_len = nla::u32_at(payload, 4)? as usize;
    let skip = if flags & NLM_F_CAPPED != 0 {
        4 + 16
    } else {
        4 + ((orig_len + 3) & !3)
    };
    let mut text = None;
    if flags & NLM_F_ACK_TLVS != 0 && skip <= payload.len() {
        for a in nla::attrs(&payload[skip..])? {
            if a.kind == NLMSGERR_ATTR_MSG {
                let t = nla::string(a.payload)?;
                if !t.is_empty() {
                    text = Some(t);
                }
            }
        }
    }
    Ok((errno, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + payload.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    /// Issue 18.2: a dump the kernel marks interrupted is an error once read to its end.
    #[test]
    fn an_interrupted_dump_is_an_error_not_a_snapshot() {
        let data = msg(36, nla::NLM_F_MULTI, 9, &[0; 20]);
        let intr = msg(36, nla::NLM_F_MULTI | nla::NLM_F_DUMP_INTR, 9, &[0; 20]);
        let done = msg(nla::NLMSG_DONE, nla::NLM_F_MULTI, 9, &0i32.to_ne_bytes());
        let mut d = Dump::default();
        assert!(d.take(&data, 9).unwrap().is_none());
        assert_eq!(d.take(&done, 9).unwrap().unwrap().len(), 1);
        let mut d = Dump::default();
        assert!(d.take(&[data.clone(), intr].concat(), 9).unwrap().is_none());
        let e = d.take(&done, 9).unwrap_err();
        assert!(matches!(e, NlError::Interrupted), "{e}");
    }

    #[test]
    fn extended_ack_text_is_read() {
        // error -22, echoed header only (capped), then NLMSGERR_ATTR_MSG "bad".
        let mut p = Vec::new();
        p.extend_from_slice(&(-22i32).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]);
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(b"bad\0");
        let (e, t) = parse_error(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!((e, t.as_deref()), (-22, Some("bad")));
    }
}
