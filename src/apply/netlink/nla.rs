//! Netlink messages and attributes: a writer that builds one request, and strict readers
//! that turn a received buffer into messages and attributes. A length that does not fit
//! is an error, never a silently skipped message (a lost dump entry would give a wrong
//! diff).

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
/// On a dump message: the dumped state changed while the dump ran (it is inconsistent).
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// In an error/ACK message: the request was not echoed back (capped).
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an error/ACK message: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A decoding failure: the bytes the kernel sent do not have the expected shape. Reading
/// the kernel's state fails with it (exit 3, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode netlink message: {len} trailing bytes, shorter than a message header")]
    Trailing { len: usize },
    #[error("cannot decode netlink message: message length {len} outside 16..={left}")]
    MessageLength { len: usize, left: usize },
    #[error("cannot decode netlink message: attribute {kind} has length {len}, {left} bytes left")]
    AttrLength { kind: u16, len: usize, left: usize },
    #[error("cannot decode netlink message: {ty} at {off} beyond {len} bytes")]
    Beyond {
        ty: &'static str,
        off: usize,
        len: usize,
    },
    #[error("cannot decode netlink message: a name attribute is not UTF-8")]
    NotUtf8,
    #[error("cannot decode netlink message: {what} of {len} bytes is shorter than {header}")]
    Short {
        what: &'static str,
        len: usize,
        header: &'static str,
    },
    #[error("cannot decode netlink message: {object} has no {part}")]
    Missing { object: String, part: &'static str },
    #[error("cannot decode netlink message: a next hop of {len} bytes in {left} bytes")]
    NextHop { len: usize, left: usize },
    #[error("cannot decode netlink message: link {index} has no name")]
    NoName { index: i32 },
    #[error(
        "cannot decode netlink message: a netlink datagram of {len} bytes exceeds the {cap} byte buffer"
    )]
    Datagram { len: usize, cap: usize },
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: header, fixed part, attributes (nests allowed).
#[derive(Debug, Clone)]
pub struct MsgWriter {
    buf: Vec<u8>,
    nests: Vec<usize>,
    /// The kernel may answer a success of this request with a warning (an extended-ack
    /// text), so a batch must ask for its ACK (see `Netlink::request_many`).
    pub may_warn: bool,
}

impl MsgWriter {
    /// A message of `kind` with `flags`; sequence number and port id are 0 until `finish`.
    pub fn new(kind: u16, flags: u16) -> MsgWriter {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        MsgWriter {
            buf,
            nests: Vec::new(),
            may_warn: false,
        }
    }

    /// Appends raw bytes (the fixed header of the family, a struct).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends an attribute, padded to four bytes.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn attr_u64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// Opens a nested attribute; close it with `end_nest`.
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    pub fn end_nest(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished message with its length, sequence number and port id filled in.
    pub fn finish(&self, seq: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.buf.len());
        self.finish_into(seq, &mut buf);
        buf
    }

    /// Appends the finished message to `out`.
    pub fn finish_into(&self, seq: u32, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.buf);
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        out[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
    }

    /// The message's flags.
    pub fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }
}

/// One received netlink message.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Splits a buffer into messages; a bad length is an error.
pub fn messages(mut buf: &[u8]) -> Result<Vec<Msg<'_>>, DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 16 {
            return Err(DecodeError::Trailing { len: buf.len() });
        }
        let len = u32_at(buf, 0)? as usize;
        if len < 16 || len > buf.len() {
            return Err(DecodeError::MessageLength {
                len,
                left: buf.len(),
            });
        }
        out.push(Msg {
            kind: u16_at(buf, 4)?,
            flags: u16_at(buf, 6)?,
            seq: u32_at(buf, 8)?,
            payload: &buf[16..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// One attribute: its type (without the nested/byte-order flags) and payload.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

/// Splits attributes; a length that overruns the buffer is an error.
pub fn attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16_at(buf, 0)?);
        let kind = u16_at(buf, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(DecodeError::AttrLength {
                kind,
                len,
                left: buf.len(),
            });
        }
        out.push(Attr {
            kind,
            payload: &buf[4..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

pub fn u16_at(b: &[u8], off: usize) -> Result<u16, DecodeError> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or(DecodeError::Beyond {
            ty: "u16",
            off,
            len: b.len(),
        })
}

pub fn u32_at(b: &[u8], off: usize) -> Result<u32, DecodeError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or(DecodeError::Beyond {
            ty: "u32",
            off,
            len: b.len(),
        })
}

pub fn i32_at(b: &[u8], off: usize) -> Result<i32, DecodeError> {
    u32_at(b, off).map(|v| i32::from_ne_bytes(v.to_ne_bytes()))
}

pub fn u64_at(b: &[u8], off: usize) -> Result<u64, DecodeError> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or(DecodeError::Beyond {
            ty: "u64",
            off,
            len: b.len(),
        })
}

/// A big-endian u32 (u32 key masks and values).
pub fn be32_at(b: &[u8], off: usize) -> Result<u32, DecodeError> {
    u32_at(b, off).map(u32::from_be)
}

/// A NUL-terminated string payload.
pub fn string(b: &[u8]) -> Result<String, DecodeError> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .map(str::to_string)
        .map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_and_nests() {
        let mut w = MsgWriter::new(36, NLM_F_REQUEST);
        w.raw(&[0; 4]).attr_str(1, "htb").begin_nest(2);
        w.attr_u32(5, 1000).end_nest();
        let b = w.finish(7);
        assert_eq!(b.len(), 16 + 4 + 8 + 12);
        let m = messages(&b).unwrap();
        assert_eq!(m[0].seq, 7);
        let a = attrs(&m[0].payload[4..]).unwrap();
        assert_eq!(string(a[0].payload).unwrap(), "htb");
        let inner = attrs(a[1].payload).unwrap();
        assert_eq!(u32_at(inner[0].payload, 0).unwrap(), 1000);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(messages(&[1, 2, 3]).is_err());
        let mut b = MsgWriter::new(1, 0).finish(0);
        b[0] = 200;
        assert!(messages(&b).is_err());
        assert!(attrs(&[40, 0, 1, 0, 0, 0]).is_err());
    }
}
