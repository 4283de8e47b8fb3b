//! netqos's nftables table (`table inet netqos`, pod traffic classified at its source) as a
//! resource of the live commands, through the `nft` tool: read (`nft list table`), compare
//! with the plan's listing, change in one `nft -f` transaction (nftables applies a
//! transaction whole or not at all), read back, and restore what was there before.
//!
//! The table is compared as text: `backend::nft::listing` renders the plan exactly as
//! `nft list table` prints it, so any edit by hand shows as a difference. What rollback
//! needs is the listing before the change (or its absence), kept in the transaction record
//! before the change is made. `NETQOS_NFT` names another `nft` binary (tests use it to make
//! the step fail).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::backend::nft;
use crate::lower::pods::TABLE;
use crate::plan::PodRules;

/// Why the table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "`{0}` not found: install nftables (the policy classifies pod traffic with an nftables rule)"
    )]
    Missing(String),
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
    #[error("{0}")]
    Io(String),
}

/// What rollback needs: the table as it was before the apply changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftRecord {
    pub table: String,
    /// `nft list table` before the change; `None`: there was no table.
    pub before: Option<String>,
    /// The state directory, whose record of the applied listing the undo puts back.
    #[serde(default)]
    pub state: Option<PathBuf>,
}

/// The change an apply makes to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftChange {
    /// Create or replace the table with the plan's rules.
    Install,
    /// Delete the table (the policy has no egress pod rules).
    Remove,
}

impl NftChange {
    pub fn describe(&self, table: &str) -> String {
        match self {
            NftChange::Install => format!("nftables: install table inet {table} (pod rules)"),
            NftChange::Remove => format!("nftables: delete table inet {table}"),
        }
    }
}

/// The table a policy wants, and the tool that makes it so.
#[derive(Debug, Clone)]
pub struct NftTable {
    pub table: String,
    /// The listing the plan wants; `None`: no table.
    pub want: Option<String>,
    /// The `nft -f` input replacing the table.
    replace: Option<String>,
    binary: PathBuf,
}

fn binary() -> PathBuf {
    std::env::var_os("NETQOS_NFT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("nft"), PathBuf::from)
}

impl NftTable {
    /// The table of a plan's pod rules (`None`: the policy wants no table).
    pub fn for_plan(rules: Option<&PodRules>) -> Self {
        NftTable {
            table: rules.map_or_else(|| TABLE.to_string(), |r| r.table.clone()),
            want: rules.map(nft::listing),
            replace: rules.map(nft::replace),
            binary: binary(),
        }
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<std::process::Output, NftError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NftError::Missing(self.binary.display().to_string()));
            }
            Err(e) => return Err(NftError::Io(format!("{}: {e}", self.binary.display()))),
        };
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // An nft that stops reading has failed: its status and message say why.
            match stdin.write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NftError::Io(format!("writing to nft: {e}")));
                }
                _ => {}
            }
        }
        child
            .wait_with_output()
            .map_err(|e| NftError::Io(format!("{}: {e}", self.binary.display())))
    }

    /// The table as the kernel holds it (`None`: absent). Without `nft` installed, a
    /// policy that wants no table reads as absent; one that wants a table fails.
    pub fn read(&self) -> Result<Option<String>, NftError> {
        let out = match self.run(&["list", "table", "inet", &self.table], None) {
            Err(NftError::Missing(_)) if self.want.is_none() => return Ok(None),
            r => r?,
        };
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NftError::Failed {
            what: format!("nft list table inet {}", self.table),
            message: err.trim().to_string(),
        })
    }

    /// What must change, given the table as read.
    pub fn change(&self, live: &Option<String>) -> Option<NftChange> {
        match (&self.want, live) {
            (Some(w), Some(l)) if w == l => None,
            (Some(_), _) => Some(NftChange::Install),
            (None, Some(_)) => Some(NftChange::Remove),
            (None, None) => None,
        }
    }

    /// Checks the wanted table with `nft -c` (the kernel validates it, nothing changes).
    pub fn check(&self) -> Result<(), NftError> {
        match &self.replace {
            Some(text) => self.transaction(&["-c", "-f", "-"], text, "nft -c (check)"),
            None => Ok(()),
        }
    }

    fn transaction(&self, args: &[&str], text: &str, what: &str) -> Result<(), NftError> {
        let out = self.run(args, Some(text))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Failed {
                what: what.to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Makes the change in one transaction and reads the table back: it must be exactly
    /// what the plan lists.
    pub fn apply_change(&self, change: &NftChange) -> Result<String, NftError> {
        let table = &self.table;
        match (change, &self.replace) {
            (NftChange::Install, Some(text)) => self.transaction(&["-f", "-"], text, "nft -f")?,
            _ => self.transaction(&["-f", "-"], &nft::remove(table), "nft -f (delete)")?,
        }
        let now = self.read()?;
        if now != self.want {
            return Err(NftError::Failed {
                what: format!("reading back table inet {table}"),
                message: "the kernel does not hold the table that was sent".to_string(),
            });
        }
        Ok(change.describe(table))
    }

    /// Puts the table back as `record` says it was (idempotent): `true` when it changed
    /// something.
    pub fn restore(record: &NftRecord) -> Result<bool, NftError> {
        let t = NftTable {
            table: record.table.clone(),
            want: record.before.clone(),
            replace: record.before.as_ref().map(|b| {
                format!(
                    "table inet {t}\ndelete table inet {t}\n{b}",
                    t = record.table
                )
            }),
            binary: binary(),
        };
        let live = match t.read() {
            // No nft: nothing of netqos's can be in nftables to undo.
            Err(NftError::Missing(_)) if record.before.is_none() => return Ok(false),
            r => r?,
        };
        let changed = match t.change(&live) {
            None => false,
            Some(c) => t.apply_change(&c).map(|_| true)?,
        };
        if let Some(state) = &record.state {
            set_applied(state, record.before.as_deref())
                .map_err(|e| NftError::Io(format!("{}: {e}", applied_path(state).display())))?;
        }
        Ok(changed)
    }
}

impl crate::apply::resource::Resource for NftTable {
    fn describe(&self) -> String {
        format!("nftables table inet {}", self.table)
    }

    /// Reads the table and, when it must change, has the kernel check the new one
    /// (`nft -c`) and keeps the table as it is for rollback. A missing `nft` with pod rules
    /// to install is refused here, before anything changes.
    fn record(
        &self,
        state: &Path,
    ) -> Result<Option<crate::apply::resource::Recorded>, crate::apply::resource::ResourceError>
    {
        let live = self.read()?;
        let Some(change) = self.change(&live) else {
            set_applied(state, self.want.as_deref())
                .map_err(|e| NftError::Io(format!("{}: {e}", applied_path(state).display())))?;
            return Ok(None);
        };
        if change == NftChange::Install {
            self.check()?;
        }
        Ok(Some(crate::apply::resource::Recorded::NftTable(
            NftRecord {
                table: self.table.clone(),
                before: live,
                state: Some(state.to_path_buf()),
            },
        )))
    }

    /// Replaces (or deletes) the table in one transaction and reads it back.
    fn apply(&mut self, state: &Path) -> Result<String, crate::apply::resource::ResourceError> {
        let live = self.read()?;
        let line = match self.change(&live) {
            Some(c) => self.apply_change(&c)?,
            None => format!("nftables: table inet {} already as planned", self.table),
        };
        set_applied(state, self.want.as_deref())
            .map_err(|e| NftError::Io(format!("{}: {e}", applied_path(state).display())))?;
        Ok(line)
    }
}

/// Where the live commands keep the listing of the last applied table.
pub fn applied_path(state: &Path) -> PathBuf {
    state.join("nft-applied.txt")
}

/// The listing the last apply left (`None`: it left no table).
pub fn applied(state: &Path) -> Option<String> {
    std::fs::read_to_string(applied_path(state)).ok()
}

/// Records (or clears) the listing the last apply left, by temp file and rename.
pub fn set_applied(state: &Path, listing: Option<&str>) -> std::io::Result<()> {
    let path = applied_path(state);
    match listing {
        Some(l) => crate::apply::state_dir::write_synced(&path, l.as_bytes()),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_follows_the_listing() {
        let mut t = NftTable::for_plan(None);
        assert_eq!(t.change(&None), None);
        assert_eq!(t.change(&Some("x".into())), Some(NftChange::Remove));
        t.want = Some("x".into());
        assert_eq!(t.change(&Some("x".into())), None);
        assert_eq!(t.change(&Some("y".into())), Some(NftChange::Install));
        assert_eq!(t.change(&None), Some(NftChange::Install));
    }
}
