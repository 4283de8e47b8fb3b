//! Live apply over netlink: read the managed kernel state, diff it against a plan, send
//! the changes in a make-before-break order, journal them, and return to the snapshot on
//! failure or on request. The only module with host side effects, all behind
//! `kernel::Kernel`.
//!
//! * `netlink` — the rtnetlink codec and socket.
//! * `model` — kernel objects and changes; `keys` — plan selectors → u32 keys.
//! * `state` — live and target state; `diff` — the pure planner.
//! * `kernel` — the `Kernel` trait and its netlink implementation.
//! * `txn` — state directory, lock, snapshot, journal, execution with undo.
//! * `conflist_file` — the CNI conflist written in place and restored.
//! * `probe` — new TCP connections opened after an apply (`--probe`).

pub mod conflist_file;
pub mod diff;
pub mod fake;
pub mod kernel;
pub mod keys;
pub mod model;
pub mod netlink;
pub mod nft_table;
pub mod probe;
pub mod state;
pub mod txn;
