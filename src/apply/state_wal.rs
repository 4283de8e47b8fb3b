//! The log of scoped transactions, `txn.wal`: what a scoped apply (the agent's one-class
//! re-apply, `state_scope`) writes instead of the per-transaction files of `state_dir`, so
//! that one durable transaction costs two `fdatasync`s of a file that already exists (no
//! new file, no directory fsync) instead of about twelve.
//!
//! One JSON line per entry, appended:
//!
//! ```text
//! {"begin": {"record": …, "before": …}}   the record (scope, snapshot and target of the
//!                                           scope, resources, the undo point it replaces)
//!                                           and the applied target's scope before it;
//!                                           fdatasync'd before the first change
//! {"journal": {"id", "entry"}}             a change's inverse, written before it is sent
//!                                           (not synced: undo never depends on it)
//! {"end": {"id", "outcome", "last", "open", "applied"}}
//!                                           how it ended; `last`: it is the undo point;
//!                                           `open`: still to be undone (its undo failed);
//!                                           `applied`: its line of the applied target
//!                                           (`state_applied`); fdatasync'd
//! {"applied": …}                           a line of the applied target alone (a scoped
//!                                           apply that found the kernel already there)
//! ```
//!
//! **Reading** goes through the log: `record`, `last_id`, `interrupted`, `applied` and
//! `inverses` of `StateDir` look here after (and above) the per-transaction files. A line
//! torn by a crash does not parse and is skipped; the next append starts a new line.
//!
//! **Writing**: only scoped transactions append. Everything else (a whole-tree apply,
//! rollback, the undo of an interrupted transaction, confirm, the revert) first *folds*
//! the log, under the state directory's lock: every record in it becomes `txn/ID.json`
//! (with `ID.outcome`, `ID.applied-before.part`, `ID.journal`), `current` and `last` are
//! written when the log says so, its applied lines are appended to `applied.delta` (or the
//! whole applied target is written, once the delta is a quarter of it), and the log is
//! emptied. Folding is idempotent (a crash in the middle leaves the log, which is
//! folded again: the same files, the same applied lines replayed twice, which patch to the
//! same target), so the per-transaction files are always older than the log and a reader
//! that puts the log above them is right. A log over `WAL_MAX` is folded before the next
//! scoped transaction.
//!
//! Crash points of a scoped transaction (what is on disk, and what recovery does):
//!
//! | crash | on disk | `status` | next apply / agent start | `netqos rollback` |
//! |---|---|---|---|---|
//! | before `begin` is synced | nothing new (a torn line at most) | as before | as before | the previous `last` |
//! | after `begin`, before the first change | `begin` | interrupted | undoes it to its snapshot (nothing to send), then applies | undoes it to its snapshot |
//! | mid-send | `begin`, some journal lines | interrupted | undoes it (journal inverses, then a diff to the snapshot) | the same |
//! | after send and verify, before `end` | `begin`, journal | interrupted | undoes it, then applies again | undoes it |
//! | after `end` | `begin`, journal, `end` | its outcome; no drift | nothing to undo | rolls it back (`last`) |
//!
//! Every undo ends with a diff of the live state against the snapshot until it is empty,
//! so an unsynced journal never matters; the applied target and `last` change only with
//! `end`, so an interrupted transaction never becomes the undo point.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::apply::model::Change;
use crate::apply::safe_fs;
use crate::apply::state_applied::{Before, Line, append_synced};
use crate::apply::state_dir::{Record, StateDir, StateError, encode, io_err, write_renamed};
use crate::apply::txn::Entry;

/// The log's file name in the state directory.
pub const WAL: &str = "txn.wal";

/// A log larger than this is folded before the next scoped transaction.
pub const WAL_MAX: u64 = 1 << 20;

/// What `begin` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Begin {
    pub record: Record,
    /// The applied target's scope as it was before (for the rollback of this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Before>,
}

/// What `end` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct End {
    pub id: String,
    pub outcome: String,
    /// The transaction is the undo point (`last`) now.
    #[serde(default)]
    pub last: bool,
    /// The transaction is still to be undone (its undo failed): `current` names it.
    #[serde(default)]
    pub open: bool,
    /// Its line of the applied target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Line>,
}

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WalLine {
    Begin(Box<Begin>),
    Journal { id: String, entry: Box<Entry> },
    End(Box<End>),
    Applied(Box<Line>),
}

/// A journal line as written (borrowed, so the journal does not copy each change).
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JournalRef<'a> {
    Journal { id: &'a str, entry: &'a Entry },
}

/// What the log says, read in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// Records as they were begun (outcome `applying`), in order.
    pub records: Vec<Record>,
    pub outcomes: BTreeMap<String, String>,
    pub befores: BTreeMap<String, Before>,
    pub journals: BTreeMap<String, Vec<Entry>>,
    /// The undo point, if a transaction in the log became it.
    pub last: Option<String>,
    /// The transaction begun and not ended (or whose undo failed).
    pub open: Option<String>,
    /// Lines of the applied target, in order.
    pub applied: Vec<Line>,
}

impl Summary {
    fn take(&mut self, line: WalLine) {
        match line {
            WalLine::Begin(b) => {
                let Begin { record, before } = *b;
                self.open = Some(record.id.clone());
                if let Some(b) = before {
                    self.befores.insert(record.id.clone(), b);
                }
                self.records.retain(|r| r.id != record.id);
                self.records.push(record);
            }
            WalLine::Journal { id, entry } => self.journals.entry(id).or_default().push(*entry),
            WalLine::End(e) => {
                let e = *e;
                if e.last {
                    self.last = Some(e.id.clone());
                }
                if e.open {
                    self.open = Some(e.id.clone());
                } else if self.open.as_deref() == Some(e.id.as_str()) {
                    self.open = None;
                }
                self.applied.extend(e.applied);
                self.outcomes.insert(e.id, e.outcome);
            }
            WalLine::Applied(l) => self.applied.push(*l),
        }
    }

    /// The record of `id` with its outcome.
    pub fn record(&self, id: &str) -> Option<Record> {
        let mut r = self.records.iter().find(|r| r.id == id)?.clone();
        if let Some(o) = self.outcomes.get(id) {
            r.outcome = o.clone();
        }
        Some(r)
    }

    /// The inverses of `id`'s changes, newest first.
    pub fn inverses(&self, id: &str) -> Vec<Change> {
        let mut v: Vec<Change> = self
            .journals
            .get(id)
            .map(|j| j.iter().filter_map(|e| e.inverse.clone()).collect())
            .unwrap_or_default();
        v.reverse();
        v
    }
}

/// The log as this process last read it: its identity, its first bytes, the bytes read
/// (up to the end of the last whole line) and what they say. Between folds the log only
/// grows (appends under the lock), so a longer file of the same identity and the same
/// first bytes is read from where it stopped; a fold (in any process) empties it, and the
/// next transaction's first line starts with another id, so a changed head, like a
/// shorter file, means read it all again.
struct Cached {
    dev: u64,
    ino: u64,
    head: Vec<u8>,
    len: u64,
    summary: Summary,
}

/// How many first bytes identify a version of the log (the first record's id is in them).
const HEAD: usize = 96;

static CACHE: Mutex<BTreeMap<PathBuf, Cached>> = Mutex::new(BTreeMap::new());

/// Parses the whole lines of `bytes` into `s`; returns how many bytes they took.
fn parse(bytes: &[u8], s: &mut Summary) -> usize {
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        return 0;
    };
    for line in bytes[..end].split(|b| *b == b'\n') {
        if let Ok(l) = serde_json::from_slice::<WalLine>(line) {
            s.take(l);
        }
    }
    end + 1
}

impl StateDir {
    fn wal_path(&self) -> PathBuf {
        self.path.join(WAL)
    }

    /// Runs `f` on what the log says (an absent log says nothing).
    pub(crate) fn with_wal<R>(&self, f: impl FnOnce(&Summary) -> R) -> Result<R, StateError> {
        let p = self.wal_path();
        let mut file = match safe_fs::open_read(&p) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(f(&Summary::default()));
            }
            Err(e) => return Err(io_err("cannot read", &p, e)),
        };
        let read = |file: &mut std::fs::File, from: u64, max: u64| {
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(from))
                .and_then(|_| file.take(max).read_to_end(&mut bytes))
                .map(|_| bytes)
                .map_err(|e| io_err("cannot read", &p, e))
        };
        let meta = file
            .metadata()
            .map_err(|e| io_err("cannot inspect", &p, e))?;
        let head = read(&mut file, 0, HEAD as u64)?;
        let mut cache = CACHE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = cache.entry(p.clone()).or_insert_with(|| Cached {
            dev: meta.dev(),
            ino: meta.ino(),
            head: Vec::new(),
            len: 0,
            summary: Summary::default(),
        });
        let same = c.dev == meta.dev()
            && c.ino == meta.ino()
            && meta.len() >= c.len
            && head.starts_with(&c.head);
        if !same {
            *c = Cached {
                dev: meta.dev(),
                ino: meta.ino(),
                head: Vec::new(),
                len: 0,
                summary: Summary::default(),
            };
        }
        if meta.len() > c.len {
            let bytes = read(&mut file, c.len, u64::MAX)?;
            c.len += parse(&bytes, &mut c.summary) as u64;
            c.head = head;
            c.head
                .truncate(usize::try_from(c.len).unwrap_or(HEAD).min(HEAD));
        }
        Ok(f(&c.summary))
    }

    /// The log's size in bytes (0 when absent).
    pub(crate) fn wal_len(&self) -> u64 {
        std::fs::symlink_metadata(self.wal_path()).map_or(0, |m| m.len())
    }

    fn wal_append(&self, line: &WalLine) -> Result<(), StateError> {
        let p = self.wal_path();
        let mut bytes = encode("a line of the transaction log", line)?;
        bytes.push(b'\n');
        append_synced(&p, &bytes).map_err(|e| io_err("cannot write", &p, e))
    }

    /// Writes (and syncs) the record of a scoped transaction before its first change.
    pub(crate) fn wal_begin(
        &self,
        record: &Record,
        before: Option<Before>,
    ) -> Result<(), StateError> {
        self.wal_append(&WalLine::Begin(Box::new(Begin {
            record: record.clone(),
            before,
        })))
    }

    /// Writes (and syncs) how a scoped transaction ended.
    pub(crate) fn wal_end(&self, end: End) -> Result<(), StateError> {
        self.wal_append(&WalLine::End(Box::new(end)))
    }

    /// Writes (and syncs) a line of the applied target alone.
    pub(crate) fn wal_applied(&self, line: Line) -> Result<(), StateError> {
        self.wal_append(&WalLine::Applied(Box::new(line)))
    }

    /// Opens the log for the journal lines of transaction `id`.
    pub(crate) fn wal_file(&self) -> Result<(std::fs::File, PathBuf), StateError> {
        let p = self.wal_path();
        let f = safe_fs::options()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| io_err("cannot open", &p, e))?;
        Ok((f, p))
    }

    /// Moves what the log says into the per-transaction files and empties it (see the
    /// module doc). The caller holds the state directory's lock. Durable are the files
    /// recovery and rollback read (the open transaction's record and journal, the undo
    /// point's record, outcome and applied part, `current`, `last`, the applied lines);
    /// the records of older transactions, history only, are written without an fsync.
    pub fn fold(&self) -> Result<(), StateError> {
        if self.wal_len() == 0 {
            return Ok(());
        }
        let s = self.with_wal(Clone::clone)?;
        for r in &s.records {
            let keep = s.open.as_ref() == Some(&r.id) || s.last.as_ref() == Some(&r.id);
            self.fold_record(&s, r, keep)?;
        }
        let txn = self.path.join("txn");
        std::fs::File::open(&txn)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot sync", &txn, e))?;
        if let Some(open) = &s.open {
            self.set_current(Some(open))?;
        }
        if let Some(last) = &s.last {
            self.set_last(last)?;
        }
        self.fold_lines(&s.applied)?;
        let p = self.wal_path();
        let emptied = safe_fs::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(0).and_then(|()| f.sync_data()));
        if let Ok(mut c) = CACHE.lock() {
            c.remove(&p);
        }
        emptied.map_err(|e| io_err("cannot empty", &p, e))
    }

    fn fold_record(&self, s: &Summary, r: &Record, sync: bool) -> Result<(), StateError> {
        let id = &r.id;
        self.write_file(&format!("txn/{id}.json"), &encode("the record", r)?, sync)?;
        if let Some(o) = s.outcomes.get(id) {
            self.write_file(
                &format!("txn/{id}.outcome"),
                format!("{o}\n").as_bytes(),
                sync,
            )?;
        }
        if let Some(b) = s.befores.get(id) {
            let bytes = encode("the applied target", b)?;
            self.write_file(&format!("txn/{id}.applied-before.part"), &bytes, sync)?;
        }
        if let Some(j) = s.journals.get(id) {
            let mut bytes = Vec::new();
            for e in j {
                bytes.extend(encode("a journal line", e)?);
                bytes.push(b'\n');
            }
            self.write_file(&format!("txn/{id}.journal"), &bytes, sync)?;
        }
        Ok(())
    }

    /// Writes `name` by temp file and rename; with `sync`, the file's data first (the
    /// directory is the caller's).
    fn write_file(&self, name: &str, bytes: &[u8], sync: bool) -> Result<(), StateError> {
        let p = self.path.join(name);
        write_renamed(&p, bytes, sync).map_err(|e| io_err("cannot write", &p, e))
    }
}
