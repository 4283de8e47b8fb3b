//! `netqos agent`: keeps a node on its policy. It applies the policy through the apply
//! transaction, then follows the kernel's events in a mirror of the managed objects and
//! repairs any drift (re-applying through the same transaction on top of the mirror),
//! re-applies when the policy, its vars or the conflist change, and serves metrics.
//!
//! * `events` — the rtnetlink subscription (link and tc groups) and its decoding.
//! * `mirror` — the managed state kept from events; `mirrored` — a `Kernel` reading it.
//! * `counters` — per-class counters; `metrics` — the exposition (Prometheus text, JSON).
//! * `http` — `/metrics` and `/healthz`, bounded; `notify` — systemd's sd_notify.
//! * `watch` — file fingerprints (policy, vars, conflist); `daemon` — the loop.
//! * `view` — the frame of `netqos top`.

pub mod counters;
pub mod daemon;
pub mod events;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod mirrored;
pub mod notify;
pub mod view;
pub mod watch;
