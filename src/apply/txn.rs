//! Transactions: the state directory, the single-writer lock, the snapshot taken before
//! an apply (every managed object of every device the plan touches, absences included),
//! the journal of inverse changes, execution with undo, and the return to a snapshot.
//!
//! Layout of the state directory (default `/var/lib/netqos`):
//!
//! ```text
//! lock                   flock(2) held by apply, rollback, confirm and the reverter
//! last                   id of the last transaction
//! applied.json           the target of the last successful apply (for drift in status)
//! pending.json           an unconfirmed apply: {"id", "deadline"} (see --confirm)
//! txn/ID.json            the record: source, target, snapshot
//! txn/ID.outcome         how it ended: applied, rolled back, failed, …
//! txn/ID.applied-before.json  the applied target it replaced (restored by rollback)
//! txn/ID.journal         one JSON line per change, written before it is sent, with its
//!                        inverse; a "done" line after it succeeded
//! ```
//!
//! Recovery never depends on the journal alone: undo replays the journal's inverses and
//! then diffs the live state against the snapshot until they are equal, so a transaction
//! killed at any point is returned to the snapshot by `netqos rollback`. The snapshot is
//! fsynced before the first change; the journal is fsynced every `JOURNAL_SYNC` (1024) entries
//! and at the end (an fsync per change costs ~1.2 ms here: 36 s for the 30,000 objects of
//! 10,000 classes, against ~7 s for the changes themselves).
//!
//! More kinds of resource (the CNI conflist, a file with a backup) hook in as further
//! fields of `Record` restored by `restore`.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::diff::{self, Options};
use crate::apply::kernel::{Kernel, KernelError, batchable};
use crate::apply::model::Change;
use crate::apply::state::{self, Live, Target};

const JOURNAL_SYNC: usize = 1024;

/// A state-directory or journal problem (exit 3 before any change).
#[derive(Debug)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StateError {
    StateError(format!("{what} {}: {e}", path.display()))
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
    /// The CNI conflist this apply patches (recorded before it is written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflist: Option<crate::apply::conflist_file::ConflistRecord>,
    /// netqos's nftables table as it was before this apply changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft: Option<crate::apply::nft_table::NftRecord>,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    n: usize,
    /// With `done`: every change from `from` to `n` succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inverse: Option<Change>,
    #[serde(default)]
    done: bool,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl StateDir {
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        let fresh = !path.exists();
        std::fs::create_dir_all(path.join("txn"))
            .map_err(|e| io_err("cannot create state directory", path, e))?;
        if fresh {
            // Snapshots describe the node's network: readable by root only.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock, failing at once if another netqos holds it (`wait`: blocks).
    pub fn lock(&self, wait: bool) -> Result<Lock, StateError> {
        let p = self.path.join("lock");
        let mut file = std::fs::OpenOptions::new()
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
                    let holder = std::fs::read_to_string(&p).unwrap_or_default();
                    let holder = holder.trim();
                    return Err(StateError(format!(
                        "another netqos apply, rollback or confirm holds {}{}; wait for it to finish",
                        p.display(),
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" (process {holder})")
                        }
                    )));
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

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let p = self.path.join(name);
        write_synced(&p, bytes).map_err(|e| io_err("cannot write", &p, e))
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let p = self.path.join(name);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError(format!("{} is damaged: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &p, e)),
        }
    }

    fn remove(&self, name: &str) -> Result<(), StateError> {
        let p = self.path.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &p, e)),
        }
    }

    pub fn save_record(&self, r: &Record) -> Result<(), StateError> {
        let json = serde_json::to_vec(r).map_err(|e| StateError(e.to_string()))?;
        self.write(&format!("txn/{}.json", r.id), &json)
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

    /// The record of the last transaction, if any.
    pub fn last(&self) -> Result<Option<Record>, StateError> {
        let p = self.path.join("last");
        let id = match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot read", &p, e)),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StateError(format!("{} holds a bad id `{id}`", p.display())));
        }
        let mut r: Option<Record> = self.read_json(&format!("txn/{id}.json"))?;
        if let Some(r) = &mut r
            && let Ok(o) = std::fs::read_to_string(self.path.join(format!("txn/{id}.outcome")))
        {
            r.outcome = o.trim().to_string();
        }
        Ok(r)
    }

    pub fn set_last(&self, id: &str) -> Result<(), StateError> {
        self.write("last", format!("{id}\n").as_bytes())
    }

    pub fn applied(&self) -> Result<Option<Target>, StateError> {
        self.read_json("applied.json")
    }

    pub fn set_applied(&self, t: Option<&Target>) -> Result<(), StateError> {
        match t {
            Some(t) => {
                let bytes = serde_json::to_vec(t).map_err(|e| StateError(e.to_string()))?;
                if std::fs::read(self.path.join("applied.json")).is_ok_and(|b| b == bytes) {
                    return Ok(());
                }
                self.write("applied.json", &bytes)
            }
            None => self.remove("applied.json"),
        }
    }

    /// Makes `target` the applied one, keeping the one it replaces beside transaction `id`
    /// (`txn/ID.applied-before.json`) for `restore_applied`.
    pub fn replace_applied(&self, id: &str, target: &Target) -> Result<(), StateError> {
        let old = self.path.join("applied.json");
        let keep = self.path.join(format!("txn/{id}.applied-before.json"));
        match std::fs::rename(&old, &keep) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot keep", &old, e)),
        }
        self.set_applied(Some(target))
    }

    /// After a rollback of `id`: the applied target is again the one before it.
    pub fn restore_applied(&self, id: &str) -> Result<(), StateError> {
        let keep = self.path.join(format!("txn/{id}.applied-before.json"));
        match std::fs::read(&keep) {
            Ok(b) => self.write("applied.json", &b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.remove("applied.json"),
            Err(e) => Err(io_err("cannot read", &keep, e)),
        }
    }

    pub fn pending(&self) -> Result<Option<Pending>, StateError> {
        self.read_json("pending.json")
    }

    pub fn set_pending(&self, p: Option<&Pending>) -> Result<(), StateError> {
        match p {
            Some(p) => self.write(
                "pending.json",
                &serde_json::to_vec(p).map_err(|e| StateError(e.to_string()))?,
            ),
            None => self.remove("pending.json"),
        }
    }

    pub fn journal(&self, id: &str) -> Result<Journal, StateError> {
        let p = self.path.join(format!("txn/{id}.journal"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| io_err("cannot open journal", &p, e))?;
        Ok(Journal {
            file: std::io::BufWriter::new(file),
            path: p,
            unsynced: 0,
        })
    }

    /// The inverses of the changes a transaction started, newest first.
    pub fn inverses(&self, id: &str) -> Vec<Change> {
        let p = self.path.join(format!("txn/{id}.journal"));
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let mut v: Vec<Change> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter_map(|e| e.inverse)
            .collect();
        v.reverse();
        v
    }
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
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The append-only journal of one transaction.
pub struct Journal {
    file: std::io::BufWriter<File>,
    path: PathBuf,
    unsynced: usize,
}

impl Journal {
    fn append(&mut self, e: &Entry) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(e).map_err(|e| StateError(e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| io_err("cannot write journal", &self.path, e))?;
        self.unsynced += 1;
        if self.unsynced >= JOURNAL_SYNC {
            self.sync()?;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), StateError> {
        self.unsynced = 0;
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_data())
            .map_err(|e| io_err("cannot sync journal", &self.path, e))
    }
}

/// Test hooks, from the environment (documented in the man page as such):
/// `NETQOS_FAIL_AFTER=N` makes change N+1 fail as if the kernel refused it;
/// `NETQOS_PAUSE_AFTER=N` sleeps 60 s after N changes (to kill the process there).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    pub fail_after: Option<usize>,
    pub pause_after: Option<usize>,
}

impl Hooks {
    pub fn from_env() -> Hooks {
        let n = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        Hooks {
            fail_after: n("NETQOS_FAIL_AFTER"),
            pause_after: n("NETQOS_PAUSE_AFTER"),
        }
    }
}

/// How many independent changes go to the kernel in one message.
const WINDOW: usize = 128;

fn journal_error(n: usize, e: StateError) -> (usize, KernelError) {
    (
        n,
        KernelError {
            what: "journal".into(),
            errno: None,
            message: e.0,
        },
    )
}

/// The windows `changes` go out in: a single change, or a run of up to `WINDOW` batchable
/// ones that stops before a test hook's index.
fn windows(changes: &[Change], hooks: Hooks) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < changes.len() {
        let mut end = i + 1;
        if batchable(&changes[i]) {
            while end < changes.len()
                && end - i < WINDOW
                && batchable(&changes[end])
                && hooks.fail_after != Some(end)
                && hooks.pause_after != Some(end)
            {
                end += 1;
            }
        }
        out.push(i..end);
        i = end;
    }
    out
}

/// The kernel's answers to one window.
type Answers = (Range<usize>, Vec<Result<(), KernelError>>);

/// Journals the outcome of a window: one line when every change succeeded, else one per
/// success. Returns the first failure.
fn settle(journal: &mut Journal, (range, results): Answers) -> Result<(), (usize, KernelError)> {
    let mut first_err = None;
    if results.len() == range.len() && results.iter().all(Result::is_ok) {
        let entry = Entry {
            n: range.end - 1,
            from: Some(range.start),
            change: None,
            inverse: None,
            done: true,
        };
        journal
            .append(&entry)
            .map_err(|e| journal_error(range.end - 1, e))?;
        return Ok(());
    }
    for (k, r) in results.into_iter().enumerate() {
        let n = range.start + k;
        match r {
            Ok(()) => journal
                .append(&Entry {
                    n,
                    from: None,
                    change: None,
                    inverse: None,
                    done: true,
                })
                .map_err(|e| journal_error(n, e))?,
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some((n, e));
                }
            }
        }
    }
    match first_err {
        Some(err) => {
            let _ = journal.sync();
            Err(err)
        }
        // A sequential window stops at its first failure and says so; fewer answers
        // than changes without an error cannot happen, but is not a success either.
        None => Err((
            range.start,
            KernelError {
                what: "sending changes".into(),
                errno: None,
                message: "the kernel answered fewer changes than were sent".into(),
            },
        )),
    }
}

/// Sends `changes` in order, journaling each inverse before its change is sent. Runs of
/// changes that need no answer from the kernel first go out `WINDOW` at a time (see
/// `Netlink::request_many`). Two stages: a second thread talks to the kernel while this
/// one journals the next window, and a window goes out only after the previous one was
/// answered without a failure (nothing is sent speculatively). Returns the number sent,
/// or the index and error of the first failure; on failure every change that succeeded
/// is marked done in the journal.
pub fn execute(
    kernel: &mut dyn Kernel,
    changes: &[Change],
    journal: &mut Journal,
    hooks: Hooks,
) -> Result<usize, (usize, KernelError)> {
    let windows = windows(changes, hooks);
    std::thread::scope(|scope| {
        let (to_kernel, requests) = mpsc::sync_channel::<Range<usize>>(1);
        let (answer, answers) = mpsc::channel::<Answers>();
        scope.spawn(move || {
            for range in requests {
                let results = if range.len() == 1 {
                    vec![kernel.send(&changes[range.start])]
                } else {
                    kernel.send_many(&changes[range.clone()])
                };
                if answer.send((range, results)).is_err() {
                    break;
                }
            }
        });
        let lost = |n: usize| {
            (
                n,
                KernelError {
                    what: "sending changes".into(),
                    errno: None,
                    message: "the thread talking to the kernel stopped".into(),
                },
            )
        };
        let mut in_flight = false;
        for range in windows {
            let i = range.start;
            let hook_here = hooks.pause_after == Some(i) || hooks.fail_after == Some(i);
            if hook_here && in_flight {
                settle(journal, answers.recv().map_err(|_| lost(i))?)?;
                in_flight = false;
            }
            if hooks.pause_after == Some(i) {
                let _ = journal.sync();
                std::thread::sleep(Duration::from_secs(60));
            }
            for (n, c) in changes.iter().enumerate().take(range.end).skip(i) {
                let entry = Entry {
                    n,
                    from: None,
                    change: Some(c.clone()),
                    inverse: Some(c.inverse()),
                    done: false,
                };
                journal.append(&entry).map_err(|e| journal_error(n, e))?;
            }
            if hooks.fail_after == Some(i) {
                let _ = journal.sync();
                return Err((
                    i,
                    KernelError {
                        what: changes[i].describe(),
                        errno: None,
                        message: "failure injected by NETQOS_FAIL_AFTER (test hook)".into(),
                    },
                ));
            }
            if in_flight {
                settle(journal, answers.recv().map_err(|_| lost(i))?)?;
            }
            to_kernel.send(range).map_err(|_| lost(i))?;
            in_flight = true;
        }
        if in_flight {
            settle(journal, answers.recv().map_err(|_| lost(changes.len()))?)?;
        }
        journal
            .sync()
            .map_err(|e| journal_error(changes.len(), e))?;
        Ok(changes.len())
    })
}

/// Returns the devices of `record` to its snapshot: first the journal's inverses (newest
/// first; objects already in the wanted state are fine), then whatever a fresh diff
/// against the snapshot still finds, until the live state equals the snapshot. Returns
/// the number of changes sent.
pub fn restore(
    kernel: &mut dyn Kernel,
    record: &Record,
    inverses: &[Change],
) -> Result<usize, String> {
    let mut sent = 0;
    for c in inverses {
        match kernel.send(c) {
            Ok(()) => sent += 1,
            Err(e) if e.already_done() => {}
            // The diff below repairs what an inverse could not.
            Err(_) => {}
        }
    }
    let want = state::from_snapshot(&record.snapshot, &record.target);
    let devices = record.target.devices();
    let opts = Options {
        replace_foreign: true,
    };
    for _ in 0..3 {
        let live = kernel.read(&devices).map_err(|e| e.to_string())?;
        let changes = diff::diff(&live, &want, opts)?;
        if changes.is_empty() {
            return Ok(sent);
        }
        for c in &changes {
            kernel.send(c).map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    let live = kernel.read(&devices).map_err(|e| e.to_string())?;
    let left = diff::diff(&live, &want, opts)?;
    if left.is_empty() {
        Ok(sent)
    } else {
        Err(format!(
            "the live state still differs from the snapshot in {} place(s), first: {}",
            left.len(),
            left[0].describe()
        ))
    }
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
