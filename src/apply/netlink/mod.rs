//! The netlink layer: rtnetlink messages for links and traffic control, encoded and
//! decoded here (no `tc` subprocess), sent over a blocking `netlink-sys` socket.
//!
//! * `nla` — message and attribute framing, strict decoding.
//! * `tc` — qdiscs, HTB classes, u32 filters and mirred, requests and dumps.
//! * `link` — devices (IFB create, up/down, delete; dumps).
//! * `route` — which devices carry a default route (read only).
//! * `socket` — request/ACK and dump exchanges, extended-ack text.

pub mod link;
pub mod nla;
pub mod route;
pub mod socket;
pub mod tc;

pub use socket::{Netlink, NlError};
