//! Live apply over netlink: read the managed kernel state, diff it against a plan, send
//! the changes in a make-before-break order, journal them, and return to the snapshot on
//! failure or on request. The only module with host side effects, all behind
//! `kernel::Kernel` and `resource::Resource`.
//!
//! * `netlink` — the rtnetlink codec and socket.
//! * `model` — kernel objects and changes; `keys` — plan selectors → u32 keys.
//! * `state` — live and target state; `diff` — the pure planner; `state_scope` — the part
//!   of a tree a narrow change works on.
//! * `kernel` — the `Kernel` trait and its netlink implementation; `fake` an in-memory one.
//! * `transaction` — the apply transaction and rollback, with a typed outcome.
//! * `state_dir` — state directory, lock, records, pending confirmation; `state_applied` —
//!   the applied target (`applied.json` and the scoped applies since, `applied.delta`);
//!   `state_wal` — the log of scoped transactions (two fsyncs each), folded into the
//!   files by everything else.
//! * `device_lock` — one lock per device (namespace, ifindex), whatever the state dir.
//! * `safe_fs` — no symlink followed, exclusive temp files, trusted directories only.
//! * `txn` — the journal, execution in windows, the return to a snapshot.
//! * `resource` — what an apply changes or checks besides the tree:
//!   `conflist_file` (the CNI conflist written in place and restored) and
//!   `probe` (new TCP connections opened after an apply, `--probe`).

pub mod cni_plugin;
pub mod conflist_file;
pub mod device_lock;
pub mod diff;
pub mod fake;
pub mod kernel;
pub mod keys;
pub mod model;
pub mod netlink;
pub mod nft_table;
pub mod probe;
pub mod resource;
pub mod safe_fs;
pub mod state;
pub mod state_applied;
pub mod state_dir;
pub mod state_scope;
pub mod state_wal;
pub mod transaction;
pub mod txn;
