//! What an apply changes or checks besides the tc tree, behind one boundary: the CNI
//! conflist (`conflist_file::ConflistFile`), the post-apply probes (`probe::ProbeCheck`), the
//! netqos CNI plugin binary a conflist names (`cni_plugin::PluginBinary`),
//! and later kinds (an nftables table, a burst fixer).
//!
//! The transaction (`transaction`) handles every resource alike: `record` before the first
//! kernel change (what rollback needs goes into the transaction record, fsynced), `apply`
//! after the kernel holds and verifies the tree, in the order given, and on any later
//! failure (or `netqos rollback`) each `Recorded` is undone, newest first.
//!
//! Adding a resource kind is one new type: implement `Resource` for it in its module, and,
//! when rollback must undo it, add its record as a variant of `Recorded` with its `undo`
//! arm below (the record is what a separate rollback process reads back).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::apply::conflist_file::{self, ConflistError, ConflistRecord, Restored};
use crate::apply::probe::ProbeError;

/// A resource's failure: before any change it stops the apply (exit 3); after the
/// kernel changes it undoes everything (exit 4, or 5).
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error(transparent)]
    Conflist(#[from] ConflistError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Plugin(#[from] crate::apply::cni_plugin::PluginError),
}

/// One part of an apply besides the tc tree.
pub trait Resource {
    /// What it is, for messages: `conflist /etc/cni/net.d/10-flannel.conflist`,
    /// `probe tcp:10.0.0.1:6443`.
    fn describe(&self) -> String;
    /// Whether it checks that the node stays reachable (then apply does not warn about
    /// shaping the default-route device without a safety net).
    fn guards(&self) -> bool {
        false
    }
    /// What rollback needs to undo it, worked out before anything changes (`state`: the
    /// state directory, where backups live). `None`: it changes nothing (a check).
    fn record(&self, state: &Path) -> Result<Option<Recorded>, ResourceError>;
    /// Makes it true (or checks it), once the kernel holds the tree; returns a line for the
    /// operator.
    fn apply(&mut self, state: &Path) -> Result<String, ResourceError>;
}

/// What rollback needs to undo one resource, kept in the transaction record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recorded {
    Conflist(ConflistRecord),
}

impl Recorded {
    pub fn describe(&self) -> String {
        match self {
            Recorded::Conflist(c) => format!("conflist {}", c.path.display()),
        }
    }

    /// Undoes it (idempotent); returns a line for the operator when something was done.
    pub fn undo(&self) -> Result<Option<String>, ResourceError> {
        match self {
            Recorded::Conflist(c) => Ok(match conflist_file::restore(c)? {
                Restored::Restored => Some(format!("conflist: restored {}", c.path.display())),
                Restored::AlreadyDone => None,
            }),
        }
    }
}
