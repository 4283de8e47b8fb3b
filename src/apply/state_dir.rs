//! The state directory: the lock, the transaction records (snapshot, target, recorded
//! resources), how each ended, the applied target, the pending confirmation. Every file is
//! written by temp file + fsync + rename; `StateError` is its one error type (exit 3).
//!
//! Layout (default `/var/lib/netqos`):
//!
//! ```text
//! lock                   flock(2) held by apply, rollback, confirm and the reverter
//! last                   id of the last transaction that succeeded: the undo point
//! current                id of the transaction in flight (written before its first
//!                        change, removed when it ends); found under the lock, it names
//!                        an interrupted transaction, undone before anything else
//! applied.json           the target of the last successful apply (for drift in status)
//! applied.delta          scoped applies since applied.json was written (state_applied)
//! pending.json           an unconfirmed apply: {"id", "deadline"} (see --confirm)
//! txn.wal                the log of scoped transactions (state_wal): read above the
//!                        files below, folded into them by everything but a scoped apply
//! txn/ID.json            the record: source, target, snapshot, resources
//! txn/ID.outcome         how it ended: applied, rolled back, failed, …
//! txn/ID.applied-before.json  the applied target it replaced (restored by rollback)
//! txn/ID.applied-before.part  the same for a scoped apply: its scope as it was before
//! txn/ID.reverter       flock(2) held by the process that reverts ID at its deadline
//! txn/ID.journal         one JSON line per change, written before it is sent, with its
//!                        inverse; a "done" line after it succeeded
//! cni/NAME.orig          the original of a conflist apply patched
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::resource::Recorded;
use crate::apply::safe_fs;
use crate::apply::state::{Live, Target};
use crate::exit::Exit;

/// A state-directory problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged: {source}", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} holds a bad id `{id}`", path.display())]
    BadId { path: PathBuf, id: String },
    #[error(
        "another netqos apply, rollback or confirm holds {}{}; wait for it to finish",
        path.display(),
        holder.as_ref().map(|h| format!(" (process {h})")).unwrap_or_default()
    )]
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error(
        "refusing the state directory {}: it {why}; it holds the snapshots rollback \
         restores: use a directory only root can write (mode 0700)",
        path.display()
    )]
    Unsafe { path: PathBuf, why: String },
    #[error("cannot record the outcome: failure injected by the fail_record test hook")]
    Injected,
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl StateError {
    /// Exit 3: an environment problem.
    pub fn exit(&self) -> Exit {
        Exit::Io
    }
}

pub(crate) fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(v).map_err(|source| StateError::Encode { what, source })
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// An unconfirmed apply and when it reverts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// Unix seconds.
    pub deadline: u64,
}

/// What an apply recorded before changing anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub source: String,
    /// The target of the apply: which devices and links the snapshot covers.
    pub target: Target,
    /// The managed state of those devices before the first change.
    pub snapshot: Live,
    /// `applying`, `applied`, `rolled back`, `failed, rolled back`, `failed, rollback failed`.
    pub outcome: String,
    /// What rollback needs to undo the apply's other resources (recorded before any change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Recorded>,
    /// Records written before `resources` existed kept the conflist here.
    #[serde(default, skip_serializing)]
    conflist: Option<crate::apply::conflist_file::ConflistRecord>,
    /// A scoped transaction (`state_scope`): `target` and `snapshot` hold only the objects
    /// in this scope (plus roots, hooks and links), the only ones it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::apply::state_scope::Scope>,
    /// The undo point (`last`) when this transaction began: `last` again after the
    /// rollback or revert of this one while it awaited confirmation. `None` in records of
    /// older versions (such a rollback then leaves `last` as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_before: Option<LastBefore>,
}

/// The undo point a transaction replaced (`id`: `None` when there was none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBefore {
    pub id: Option<String>,
}

impl Record {
    /// A record of a new transaction (`applying`) with a fresh id.
    pub fn new(source: &str, target: Target, snapshot: Live, resources: Vec<Recorded>) -> Record {
        Record {
            id: new_id(),
            created: now(),
            source: source.to_string(),
            target,
            snapshot,
            outcome: "applying".into(),
            resources,
            conflist: None,
            scope: None,
            last_before: None,
        }
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new transaction id: time and pid, sortable.
pub fn new_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:06}-{}",
        t.as_secs(),
        t.subsec_micros(),
        std::process::id()
    )
}

impl StateDir {
    /// Opens the state directory, creating it (mode 0700) when missing. An existing one
    /// (or its `txn/`, `cni/`) that another user owns or that others may write is refused:
    /// whoever can write it could swap the snapshot rollback restores.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [path.to_path_buf(), path.join("txn")] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_err("cannot create state directory", &dir, e))?;
        }
        for dir in [path.to_path_buf(), path.join("txn"), path.join("cni")] {
            match crate::apply::safe_fs::unsafe_dir(&dir) {
                Ok(None) => {}
                Ok(Some(why)) => return Err(StateError::Unsafe { path: dir, why }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot inspect", &dir, e)),
            }
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock, failing at once if another netqos holds it (`wait`: blocks).
    pub fn lock(&self, wait: bool) -> Result<Lock, StateError> {
        let p = self.path.join("lock");
        let mut file = safe_fs::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| io_err("cannot open lock file", &p, e))?;
        if wait {
            file.lock().map_err(|e| io_err("cannot lock", &p, e))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = safe_fs::read_to_string(&p).unwrap_or_default();
                    let holder = Some(holder.trim().to_string()).filter(|h| !h.is_empty());
                    return Err(StateError::Locked { path: p, holder });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &p, e)),
            }
        }
        // Who holds it, for the message above (advisory; the flock is what counts).
        let _ = file
            .set_len(0)
            .and_then(|()| std::io::Seek::rewind(&mut file))
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Lock { _file: file })
    }

    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let p = self.path.join(name);
        write_synced(&p, bytes).map_err(|e| io_err("cannot write", &p, e))
    }

    pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let p = self.path.join(name);
        match safe_fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StateError::Damaged { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &p, e)),
        }
    }

    pub(crate) fn remove(&self, name: &str) -> Result<(), StateError> {
        let p = self.path.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &p, e)),
        }
    }

    pub fn save_record(&self, r: &Record) -> Result<(), StateError> {
        self.write(&format!("txn/{}.json", r.id), &encode("the record", r)?)
    }

    /// Records how a transaction ended, in `txn/ID.outcome` (the record itself, which can
    /// be megabytes, is written once).
    pub fn set_outcome(&self, r: &mut Record, outcome: &str) -> Result<(), StateError> {
        r.outcome = outcome.to_string();
        self.write(
            &format!("txn/{}.outcome", r.id),
            format!("{outcome}\n").as_bytes(),
        )
    }

    /// The record of transaction `id`, with its outcome (from the transaction log when it
    /// is there: the log is newer than the files).
    pub fn record(&self, id: &str) -> Result<Option<Record>, StateError> {
        if let Some(r) = self.with_wal(|w| w.record(id))? {
            return Ok(Some(r));
        }
        let mut r: Option<Record> = self.read_json(&format!("txn/{id}.json"))?;
        if let Some(r) = &mut r {
            if let Ok(o) = safe_fs::read_to_string(&self.path.join(format!("txn/{id}.outcome"))) {
                r.outcome = o.trim().to_string();
            }
            if let Some(c) = r.conflist.take() {
                r.resources.push(Recorded::Conflist(c));
            }
        }
        Ok(r)
    }

    /// The record of the last transaction, if any.
    pub fn last(&self) -> Result<Option<Record>, StateError> {
        match self.last_id()? {
            Some(id) => self.record(&id),
            None => Ok(None),
        }
    }

    /// The id of the last transaction, if any.
    pub fn last_id(&self) -> Result<Option<String>, StateError> {
        if let Some(id) = self.with_wal(|w| w.last.clone())? {
            return Ok(Some(id));
        }
        let p = self.path.join("last");
        let id = match safe_fs::read_to_string(&p) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot read", &p, e)),
        };
        checked_id(&p, &id).map(Some)
    }

    pub fn set_last(&self, id: &str) -> Result<(), StateError> {
        self.write("last", format!("{id}\n").as_bytes())
    }

    /// Makes `id` the undo point, or leaves none.
    pub fn set_last_to(&self, id: Option<&str>) -> Result<(), StateError> {
        match id {
            Some(id) => self.set_last(id),
            None => self.remove("last"),
        }
    }

    /// Marks transaction `id` as in flight (`None`: it ended).
    pub fn set_current(&self, id: Option<&str>) -> Result<(), StateError> {
        match id {
            Some(id) => self.write("current", format!("{id}\n").as_bytes()),
            None => self.remove("current"),
        }
    }

    /// A transaction that started changing the kernel and never recorded how it ended
    /// (its process was killed, or its undo failed). Only meaningful under the lock: a
    /// running transaction holds it. Records of older versions, which made a transaction
    /// `last` before its first change, count when their outcome is still `applying`.
    pub fn interrupted(&self) -> Result<Option<Record>, StateError> {
        let (open, logged) = self.with_wal(|w| {
            let open = w.open.as_ref().and_then(|id| w.record(id));
            (open, w.last.is_some())
        })?;
        if open.is_some() {
            return Ok(open);
        }
        let p = self.path.join("current");
        match safe_fs::read_to_string(&p) {
            Ok(id) => {
                let id = checked_id(&p, id.trim())?;
                return self.record(&id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot read", &p, e)),
        }
        // The outcome file says how the last one ended without parsing its record (which
        // holds a whole snapshot and can be megabytes); one the log made `last` ended.
        if logged {
            return Ok(None);
        }
        if let Some(id) = self.last_id()?
            && safe_fs::read_to_string(&self.path.join(format!("txn/{id}.outcome")))
                .is_ok_and(|o| o.trim() != "applying")
        {
            return Ok(None);
        }
        Ok(self.last()?.filter(|r| r.outcome == "applying"))
    }

    /// Opens and locks `txn/ID.reverter` for the process that will revert `id` (the CLI
    /// hands the locked file to its detached reverter; an agent keeps it): while the lock is
    /// held, `reverter_alive(id)` is true.
    pub fn reverter_lock(&self, id: &str) -> Result<File, StateError> {
        let p = self.path.join(format!("txn/{id}.reverter"));
        let file = safe_fs::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io_err("cannot open", &p, e))?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StateError::Locked {
                path: p.clone(),
                holder: None,
            },
            std::fs::TryLockError::Error(e) => io_err("cannot lock", &p, e),
        })?;
        Ok(file)
    }

    /// Whether a process still holds the reverter lock of `id`.
    pub fn reverter_alive(&self, id: &str) -> bool {
        let p = self.path.join(format!("txn/{id}.reverter"));
        match safe_fs::open_read(&p) {
            Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    pub fn pending(&self) -> Result<Option<Pending>, StateError> {
        self.read_json("pending.json")
    }

    pub fn set_pending(&self, p: Option<&Pending>) -> Result<(), StateError> {
        match p {
            Some(p) => self.write("pending.json", &encode("the pending apply", p)?),
            None => self.remove("pending.json"),
        }
    }
}

/// A transaction id read from `path`: letters, digits and `-` only (it names files).
fn checked_id(path: &Path, id: &str) -> Result<String, StateError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(StateError::BadId {
            path: path.to_path_buf(),
            id: id.to_string(),
        });
    }
    Ok(id.to_string())
}

/// Writes a file by temp file + fsync + rename, then fsyncs the directory.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map_or("x".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let r = (|| {
        safe_fs::create_exclusive(&tmp, bytes, 0o600)?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Writes a file by temp file and rename (atomic: the old bytes or the new), without
/// fsyncing the directory; the file's data too only with `sync`. For files whose loss
/// in a crash costs nothing (history, names for display) or whose directory the caller
/// syncs once for many.
pub fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map_or("x".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(crate::apply::device_lock::nofollow())
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netqos-sd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Issue 18.5: a state directory others may write, or another user owns, is refused;
    /// a new one is made 0700.
    #[test]
    fn an_unsafe_state_dir_is_refused_and_a_new_one_is_private() {
        let d = scratch("unsafe");
        let fresh = d.join("new");
        StateDir::open(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for (m, word) in [(0o777, "every user"), (0o770, "its group")] {
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(m)).unwrap();
            let e = StateDir::open(&fresh).unwrap_err().to_string();
            assert!(
                e.contains("refusing the state directory") && e.contains(word),
                "{e}"
            );
        }
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(fresh.join("txn"), std::fs::Permissions::from_mode(0o733))
            .unwrap();
        assert!(StateDir::open(&fresh).is_err(), "txn/ is checked too");
        std::fs::set_permissions(fresh.join("txn"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&fresh, Some(65534), None).unwrap();
            let e = StateDir::open(&fresh).unwrap_err().to_string();
            assert!(e.contains("owned by user 65534"), "{e}");
            std::os::unix::fs::chown(&fresh, Some(0), None).unwrap();
        }
        let link = d.join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let e = StateDir::open(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Issue 18.5: symlinks planted in the state directory are never followed: the lock,
    /// a state file and a temporary file name pointing at a victim leave it untouched.
    #[test]
    fn planted_symlinks_are_not_followed() {
        let d = scratch("links");
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dir = StateDir::open(&d.join("state")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path.join("lock")).unwrap();
        assert!(dir.lock(false).is_err(), "the lock refuses a symlink");
        std::os::unix::fs::symlink(&victim, dir.path.join("applied.json")).unwrap();
        assert!(dir.applied().is_err(), "a symlinked state file is not read");
        let tmp = dir.path.join(format!(".last.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        dir.set_last("1-2-3").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(dir.path.join("last")).unwrap(),
            "1-2-3\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
