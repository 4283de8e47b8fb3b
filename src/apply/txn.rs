//! Execution: the journal of inverse changes, sending the changes in windows with undo on
//! the first failure, and the return of a transaction's devices to its snapshot.
//!
//! Recovery never depends on the journal alone: undo replays the journal's inverses and
//! then diffs the live state against the snapshot until they are equal, so a transaction
//! killed at any point is returned to the snapshot by `netqos rollback`. The snapshot is
//! fsynced before the first change; the journal is fsynced every `JOURNAL_SYNC` (1024) entries
//! and at the end (an fsync per change costs ~1.2 ms here: 36 s for the 30,000 objects of
//! 10,000 classes, against ~7 s for the changes themselves). A scoped transaction's journal
//! is lines of the transaction log (`state_wal`), never synced by itself: the `end` line's
//! sync takes them along, and a crash before it is undone from the snapshot.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apply::diff::{self, DiffError, Options};
use crate::apply::kernel::{Kernel, KernelError, batchable};
use crate::apply::model::Change;
use crate::apply::state::{self, Live, Target};
use crate::apply::state_dir::{StateDir, StateError, io_err};
use crate::apply::state_scope::Scope;

const JOURNAL_SYNC: usize = 1024;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    n: usize,
    /// With `done`: every change from `from` to `n` succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inverse: Option<Change>,
    #[serde(default)]
    done: bool,
}

/// Why a change could not be made (the apply is undone: exit 4, or 5).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("journal: {0}")]
    Journal(#[from] StateError),
    #[error("sending changes: the thread talking to the kernel stopped")]
    Lost,
    #[error("sending changes: the kernel answered fewer changes than were sent")]
    Unanswered,
    #[error("{what}: failure injected by the fail_after test hook")]
    Injected { what: String },
}

/// Why a return to the snapshot failed (exit 5).
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("{0}")]
    Read(KernelError),
    #[error("{0}")]
    Refused(#[from] DiffError),
    #[error("{0}")]
    Send(KernelError),
    #[error("the live state still differs from the snapshot in {count} place(s), first: {first}")]
    Left { count: usize, first: String },
    #[error("{what}: {error}")]
    Resource {
        what: String,
        error: crate::apply::resource::ResourceError,
    },
    #[error(
        "device {name} (ifindex {ifindex}) was renamed or replaced while the apply ran: what \
         was changed there is not undone. Give it back its name and run `netqos rollback`"
    )]
    DeviceChanged { name: String, ifindex: i32 },
    #[error(transparent)]
    Busy(#[from] crate::apply::device_lock::LockError),
    /// The transaction log could not be folded into the state directory's files (nothing
    /// was changed).
    #[error("{0}")]
    State(StateError),
}

impl UndoError {
    /// Exit 5: the devices may not be as before (3 when a device lock was refused or the
    /// state directory could not be prepared: nothing was done).
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            UndoError::Busy(_) | UndoError::State(_) => crate::exit::Exit::Io,
            _ => crate::exit::Exit::RollbackFailed,
        }
    }
}

impl StateDir {
    /// Opens (appends to) the journal of transaction `id`.
    pub fn journal(&self, id: &str) -> Result<Journal, StateError> {
        let p = self.path.join(format!("txn/{id}.journal"));
        let file = crate::apply::safe_fs::options()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| io_err("cannot open journal", &p, e))?;
        Ok(Journal {
            file: std::io::BufWriter::new(file),
            path: p,
            unsynced: 0,
            logged: None,
        })
    }

    /// The journal of scoped transaction `id`, as lines of the transaction log
    /// (`state_wal`): never synced by itself (the `end` line's sync takes them along; undo
    /// never depends on them).
    pub(crate) fn logged_journal(&self, id: &str) -> Result<Journal, StateError> {
        let (file, path) = self.wal_file()?;
        Ok(Journal {
            file: std::io::BufWriter::new(file),
            path,
            unsynced: 0,
            logged: Some(id.to_string()),
        })
    }

    /// The inverses of the changes a transaction started, newest first.
    pub fn inverses(&self, id: &str) -> Vec<Change> {
        let logged = self
            .with_wal(|w| w.inverses(id))
            .ok()
            .filter(|v| !v.is_empty());
        if let Some(v) = logged {
            return v;
        }
        let p = self.path.join(format!("txn/{id}.journal"));
        let text = crate::apply::safe_fs::read_to_string(&p).unwrap_or_default();
        let mut v: Vec<Change> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter_map(|e| e.inverse)
            .collect();
        v.reverse();
        v
    }
}

/// The append-only journal of one transaction.
pub struct Journal {
    file: std::io::BufWriter<File>,
    path: PathBuf,
    unsynced: usize,
    /// Lines of the transaction log, for this transaction id (`logged_journal`).
    logged: Option<String>,
}

impl Journal {
    fn append(&mut self, e: &Entry) -> Result<(), StateError> {
        let encoded = match &self.logged {
            Some(id) => serde_json::to_vec(&crate::apply::state_wal::JournalRef::Journal {
                id: id.as_str(),
                entry: e,
            }),
            None => serde_json::to_vec(e),
        };
        let mut line = encoded.map_err(|source| StateError::Encode {
            what: "a journal line",
            source,
        })?;
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

    /// Hands the lines written so far to the file (not to the disk).
    pub fn flush(&mut self) -> Result<(), StateError> {
        self.file
            .flush()
            .map_err(|e| io_err("cannot write journal", &self.path, e))
    }

    /// Hands the lines written so far to the file (and, for a journal of its own file,
    /// to the disk).
    pub fn sync(&mut self) -> Result<(), StateError> {
        self.unsynced = 0;
        let logged = self.logged.is_some();
        self.file
            .flush()
            .and_then(|()| {
                if logged {
                    Ok(())
                } else {
                    self.file.get_ref().sync_data()
                }
            })
            .map_err(|e| io_err("cannot sync journal", &self.path, e))
    }
}

/// Test hooks (the CLI reads them from `NETQOS_FAIL_AFTER`, `NETQOS_PAUSE_AFTER`,
/// `NETQOS_FAIL_RECORD`, documented in the man page as such): `fail_after: N` makes change
/// N+1 fail as if the kernel refused it; `pause_after: N` sleeps `pause` (default 60 s)
/// after N changes (to kill the process there, or change the device under it);
/// `fail_record` makes recording a successful apply fail (as on a full disk).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    pub fail_after: Option<usize>,
    pub pause_after: Option<usize>,
    pub pause: Option<Duration>,
    pub fail_record: bool,
}

/// How many independent changes go to the kernel in one message.
const WINDOW: usize = 128;

/// A failure at change `n`.
pub type Failed = (usize, ExecError);

fn journal_error(n: usize, e: StateError) -> Failed {
    (n, ExecError::Journal(e))
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
fn settle(journal: &mut Journal, (range, results): Answers) -> Result<(), Failed> {
    if results.len() == range.len() && results.iter().all(Result::is_ok) {
        let entry = Entry {
            n: range.end - 1,
            from: Some(range.start),
            change: None,
            inverse: None,
            done: true,
        };
        return journal
            .append(&entry)
            .map_err(|e| journal_error(range.end - 1, e));
    }
    let mut first_err = None;
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
            Err(e) if first_err.is_none() => first_err = Some((n, ExecError::Kernel(e))),
            Err(_) => {}
        }
    }
    let _ = journal.sync();
    // A sequential window stops at its first failure and says so; fewer answers than
    // changes without an error cannot happen, but is not a success either.
    Err(first_err.unwrap_or((range.start, ExecError::Unanswered)))
}

/// Journals every change of `range` (with its inverse) before it is sent.
fn journal_window(
    journal: &mut Journal,
    changes: &[Change],
    range: Range<usize>,
) -> Result<(), Failed> {
    for n in range {
        let c = &changes[n];
        let entry = Entry {
            n,
            from: None,
            change: Some(c.clone()),
            inverse: Some(c.inverse()),
            done: false,
        };
        journal.append(&entry).map_err(|e| journal_error(n, e))?;
    }
    Ok(())
}

/// The second stage: owns the kernel, sends each window it is handed, answers.
fn sender(
    kernel: &mut dyn Kernel,
    changes: &[Change],
    requests: mpsc::Receiver<Range<usize>>,
    answer: mpsc::Sender<Answers>,
) {
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
) -> Result<usize, Failed> {
    let windows = windows(changes, hooks);
    std::thread::scope(|scope| {
        let (to_kernel, requests) = mpsc::sync_channel::<Range<usize>>(1);
        let (answer, answers) = mpsc::channel::<Answers>();
        scope.spawn(move || sender(kernel, changes, requests, answer));
        let lost = |n: usize| (n, ExecError::Lost);
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
                std::thread::sleep(hooks.pause.unwrap_or(Duration::from_secs(60)));
            }
            journal_window(journal, changes, range.clone())?;
            if hooks.fail_after == Some(i) {
                let _ = journal.sync();
                let what = changes[i].describe();
                return Err((i, ExecError::Injected { what }));
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
/// against the snapshot still finds, until the live state equals the snapshot. A scoped
/// record (`scope`) snapshot only the objects in its scope, the only ones it changed:
/// those are compared and returned. Returns the number of changes sent.
pub fn restore(
    kernel: &mut dyn Kernel,
    snapshot: &Live,
    target: &Target,
    scope: Option<&Scope>,
    inverses: &[Change],
) -> Result<usize, UndoError> {
    let mut sent = 0;
    for c in inverses {
        // Failures are fine: the object is already as wanted, or the diff below repairs
        // what an inverse could not.
        if kernel.send(c).is_ok() {
            sent += 1;
        }
    }
    let want = state::from_snapshot(snapshot, target);
    let devices = target.devices();
    let opts = Options {
        replace_foreign: true,
    };
    let read = |k: &mut dyn Kernel| match scope {
        Some(s) => k.read_scoped(&devices, s),
        None => k.read(&devices),
    };
    for _ in 0..3 {
        let live = read(kernel).map_err(UndoError::Read)?;
        let changes = diff::diff(&live, &want, opts)?;
        if changes.is_empty() {
            return Ok(sent);
        }
        for c in &changes {
            kernel.send(c).map_err(UndoError::Send)?;
            sent += 1;
        }
    }
    let live = read(kernel).map_err(UndoError::Read)?;
    match diff::diff(&live, &want, opts)?.as_slice() {
        [] => Ok(sent),
        left => Err(UndoError::Left {
            count: left.len(),
            first: left[0].describe(),
        }),
    }
}
