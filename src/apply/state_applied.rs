//! The applied target in the state directory: `applied.json` (a whole target) and
//! `applied.delta`, one JSON line per scoped apply since (its scope and the objects it
//! put there, `state_scope`). A scoped apply appends a line of a few hundred bytes instead
//! of rewriting megabytes.
//!
//! Each line names the `applied.json` it extends by a fingerprint (length and FNV-1a of
//! its bytes); reading replays, in order, the lines that extend the current one. Writing a
//! whole target therefore retires every line at once, atomically (the rename of
//! `applied.json`); the delta file is removed afterwards, as tidying only. A whole write of
//! the very bytes already there would not change the fingerprint: it removes the delta
//! instead (a crash before that leaves the state as it was, which is a write not done).
//! A line torn by a crash does not parse and is skipped; the next append starts a line.
//! The transaction log of scoped transactions (`state_wal`) carries lines of the same kind
//! in its `end`s; they are replayed after the delta's, and folded into it.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::apply::safe_fs;
use crate::apply::state::Target;
use crate::apply::state_dir::{StateDir, StateError, encode, io_err, new_id};
use crate::apply::state_scope::Scope;

const BASE: &str = "applied.json";
const DELTA: &str = "applied.delta";

/// One scoped change of the applied target (a line of `applied.delta`, or in an `end`
/// of the transaction log, `state_wal`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Line {
    /// The fingerprint of the `applied.json` this line extends.
    pub base: String,
    /// The transaction that applied it (or undid one).
    pub id: String,
    pub scope: Scope,
    /// The objects in scope afterwards (a target restricted to `scope`).
    pub part: Target,
}

/// What `txn/ID.applied-before.part` keeps: the scope of transaction ID as it was before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Before {
    pub scope: Scope,
    pub part: Target,
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{h:016x}", bytes.len())
}

/// What identifies a version of `applied.json` on disk without reading it.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime_nsec(), m.ctime_nsec()))
}

/// Fingerprints of the `applied.json` files this process read or wrote, by path and
/// stamp, so that appending a line does not re-read megabytes.
static KNOWN: Mutex<BTreeMap<PathBuf, (Stamp, String)>> = Mutex::new(BTreeMap::new());

fn remember(p: &Path, fp: &str) {
    if let (Some(s), Ok(mut k)) = (stamp(p), KNOWN.lock()) {
        k.insert(p.to_path_buf(), (s, fp.to_string()));
    }
}

fn known(p: &Path) -> Option<String> {
    let s = stamp(p)?;
    let k = KNOWN.lock().ok()?;
    k.get(p)
        .filter(|(at, _)| *at == s)
        .map(|(_, fp)| fp.clone())
}

impl StateDir {
    fn base_bytes(&self) -> Result<Option<Vec<u8>>, StateError> {
        let p = self.path.join(BASE);
        match safe_fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &p, e)),
        }
    }

    /// The lines of `applied.delta` that extend the base of fingerprint `fp`.
    fn lines(&self, fp: &str) -> Result<Vec<Line>, StateError> {
        let p = self.path.join(DELTA);
        let text = match safe_fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read", &p, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            .filter(|l| l.base == fp)
            .collect())
    }

    /// The target of the last successful apply: `applied.json` and the scoped applies
    /// since.
    pub fn applied(&self) -> Result<Option<Target>, StateError> {
        let Some(bytes) = self.base_bytes()? else {
            return Ok(None);
        };
        let p = self.path.join(BASE);
        let mut t: Target =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Damaged {
                path: p.clone(),
                source,
            })?;
        let fp = fingerprint(&bytes);
        remember(&p, &fp);
        for l in self.lines(&fp)? {
            l.scope.patch(&mut t, &l.part);
        }
        // The transaction log's lines are newer than the delta's (it is folded into the
        // delta before anything else writes there).
        self.with_wal(|w| {
            for l in w.applied.iter().filter(|l| l.base == fp) {
                l.scope.patch(&mut t, &l.part);
            }
        })?;
        Ok(Some(t))
    }

    /// The fingerprint of `applied.json` (`None`: there is none), from memory when this
    /// process read or wrote that version.
    pub(crate) fn applied_fingerprint(&self) -> Result<Option<String>, StateError> {
        if let Some(fp) = known(&self.path.join(BASE)) {
            return Ok(Some(fp));
        }
        Ok(self.base_bytes()?.map(|b| {
            let fp = fingerprint(&b);
            remember(&self.path.join(BASE), &fp);
            fp
        }))
    }

    /// The fold of the transaction log's lines (`state_wal`): appended to `applied.delta`,
    /// or, once the delta has grown to a quarter of the base, the whole target (log lines
    /// included) written as the new base.
    pub(crate) fn fold_lines(&self, lines: &[Line]) -> Result<(), StateError> {
        if lines.is_empty() {
            return Ok(());
        }
        let big = match (stamp(&self.path.join(BASE)), stamp(&self.path.join(DELTA))) {
            (Some(b), Some(d)) => d.2.saturating_mul(4) > b.2,
            _ => false,
        };
        if big && let Some(whole) = self.applied()? {
            return self.set_applied(Some(&whole));
        }
        self.append_lines(lines)
    }

    /// Appends `lines` to `applied.delta`.
    fn append_lines(&self, lines: &[Line]) -> Result<(), StateError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend(encode("a line of the applied target", l)?);
            bytes.push(b'\n');
        }
        let delta = self.path.join(DELTA);
        append_synced(&delta, &bytes).map_err(|e| io_err("cannot write", &delta, e))
    }

    /// Makes `t` the applied target as a whole (`None`: none).
    pub fn set_applied(&self, t: Option<&Target>) -> Result<(), StateError> {
        let Some(t) = t else {
            // The base first: lines without a base are never read.
            self.remove(BASE)?;
            return self.remove(DELTA);
        };
        self.write_whole(&encode("the applied target", t)?)
    }

    fn write_whole(&self, bytes: &[u8]) -> Result<(), StateError> {
        let p = self.path.join(BASE);
        let fp = fingerprint(bytes);
        let same = match known(&p) {
            Some(have) => have == fp,
            None => self.base_bytes()?.is_some_and(|b| b == bytes),
        };
        if !same {
            self.write(BASE, bytes)?;
            remember(&p, &fp);
        }
        // Tidying when the base changed (its lines are stale); the state itself when not.
        self.remove(DELTA)
    }

    /// Whether scoped applies extend `applied.json`.
    fn has_lines(&self) -> Result<bool, StateError> {
        let Some(bytes) = self.base_bytes()? else {
            return Ok(false);
        };
        Ok(!self.lines(&fingerprint(&bytes))?.is_empty())
    }

    /// Makes `target` the applied one, keeping the one it replaces beside transaction `id`
    /// (`txn/ID.applied-before.json`) for `restore_applied`.
    pub fn replace_applied(&self, id: &str, target: &Target) -> Result<(), StateError> {
        let old = self.path.join(BASE);
        let keep = format!("txn/{id}.applied-before.json");
        if self.has_lines()? {
            if let Some(t) = self.applied()? {
                self.write(&keep, &encode("the applied target", &t)?)?;
            }
        } else {
            match std::fs::rename(&old, self.path.join(&keep)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot keep", &old, e)),
            }
        }
        self.set_applied(Some(target))
    }

    /// A scoped apply `id` succeeded: the objects in `scope` are now `part` (they were
    /// `before`, kept for `restore_applied`). `whole` is the whole new target: written
    /// instead of a line when the delta has grown to a quarter of the base.
    pub fn patch_applied(
        &self,
        id: &str,
        scope: &Scope,
        part: &Target,
        before: &Target,
        whole: &Target,
    ) -> Result<(), StateError> {
        let b = Before {
            scope: scope.clone(),
            part: before.clone(),
        };
        self.write(
            &format!("txn/{id}.applied-before.part"),
            &encode("the applied target", &b)?,
        )?;
        self.append_line(id, scope, part, whole)
    }

    fn append_line(
        &self,
        id: &str,
        scope: &Scope,
        part: &Target,
        whole: &Target,
    ) -> Result<(), StateError> {
        let base = self.path.join(BASE);
        let fp = match known(&base) {
            Some(fp) => fp,
            None => match self.base_bytes()? {
                Some(b) => fingerprint(&b),
                // No base to extend: the whole target is the base.
                None => return self.set_applied(Some(whole)),
            },
        };
        let delta = self.path.join(DELTA);
        let big = match (stamp(&base), stamp(&delta)) {
            (Some(b), Some(d)) => d.2.saturating_mul(4) > b.2,
            _ => false,
        };
        if big {
            return self.set_applied(Some(whole));
        }
        let line = Line {
            base: fp,
            id: id.to_string(),
            scope: scope.clone(),
            part: part.clone(),
        };
        let mut bytes = encode("a line of the applied target", &line)?;
        bytes.push(b'\n');
        append_synced(&delta, &bytes).map_err(|e| io_err("cannot write", &delta, e))
    }

    /// After a rollback of `id`: the applied target is again the one before it.
    pub fn restore_applied(&self, id: &str) -> Result<(), StateError> {
        let part = self.path.join(format!("txn/{id}.applied-before.part"));
        match safe_fs::read(&part) {
            Ok(b) => {
                let before: Before = serde_json::from_slice(&b)
                    .map_err(|source| StateError::Damaged { path: part, source })?;
                let Some(mut whole) = self.applied()? else {
                    return Ok(());
                };
                before.scope.patch(&mut whole, &before.part);
                return self.append_line(&new_id(), &before.scope, &before.part, &whole);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot read", &part, e)),
        }
        let keep = self.path.join(format!("txn/{id}.applied-before.json"));
        match safe_fs::read(&keep) {
            Ok(b) => self.write_whole(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.set_applied(None),
            Err(e) => Err(io_err("cannot read", &keep, e)),
        }
    }
}

/// Appends `bytes` (whole lines) and fsyncs (`fdatasync`; the directory too when the file
/// is new); starts a new line first when a crash left the last one unfinished.
pub(crate) fn append_synced(p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = safe_fs::options()
        .create(true)
        .read(true)
        .append(true)
        .open(p)?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
    }
    f.write_all(bytes)?;
    f.sync_data()?;
    if len == 0 {
        // A new file: its directory entry too.
        if let Some(dir) = p.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::state_scope::tests::{Rng, edit, sorted, target};

    fn dir(tag: &str) -> StateDir {
        let d = std::env::temp_dir().join(format!("netqos-applied-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        StateDir::open(&d).unwrap()
    }

    /// `prev` and an edit of it, with the scope and parts a scoped apply records.
    fn step(prev: &Target, seed: u64) -> (Target, Scope, Target, Target) {
        let mut next = prev.clone();
        edit(&mut next, &mut Rng(seed));
        edit(&mut next, &mut Rng(seed ^ 0x55));
        let scope = Scope::between(prev, &next).unwrap();
        let part = scope.restrict_target(&next);
        let before = scope.restrict_target(prev);
        (next, scope, part, before)
    }

    fn applied(d: &StateDir) -> Target {
        sorted(d.applied().unwrap().unwrap())
    }

    #[test]
    fn scoped_applies_replay_and_roll_back() {
        let d = dir("replay");
        let p = target(30);
        d.set_applied(Some(&p)).unwrap();
        let (t, scope, part, before) = step(&p, 7);
        d.patch_applied("1-1-1", &scope, &part, &before, &t)
            .unwrap();
        assert_eq!(applied(&d), sorted(t.clone()));
        let (u, scope2, part2, before2) = step(&t, 11);
        d.patch_applied("1-1-2", &scope2, &part2, &before2, &u)
            .unwrap();
        assert_eq!(applied(&d), sorted(u.clone()));
        // A rollback of the last one: back to `t`.
        d.restore_applied("1-1-2").unwrap();
        assert_eq!(applied(&d), sorted(t.clone()));
        // A whole apply keeps the replayed target for its own rollback.
        let q = target(5);
        d.replace_applied("1-1-3", &q).unwrap();
        assert_eq!(applied(&d), sorted(q));
        d.restore_applied("1-1-3").unwrap();
        assert_eq!(applied(&d), sorted(t));
        let _ = std::fs::remove_dir_all(&d.path);
    }

    #[test]
    fn a_whole_write_retires_the_lines_even_of_the_same_bytes() {
        let d = dir("retire");
        let p = target(20);
        d.set_applied(Some(&p)).unwrap();
        let (t, scope, part, before) = step(&p, 3);
        d.patch_applied("1-1-1", &scope, &part, &before, &t)
            .unwrap();
        // The same bytes as the base: the lines go, the state is `p`.
        d.set_applied(Some(&p)).unwrap();
        assert_eq!(applied(&d), sorted(p.clone()));
        d.patch_applied("1-1-2", &scope, &part, &before, &t)
            .unwrap();
        // Another base: the old line no longer extends it (stale, skipped).
        let q = target(9);
        let bytes = encode("t", &q).unwrap();
        d.write(BASE, &bytes).unwrap();
        assert_eq!(applied(&d), sorted(q));
        let _ = std::fs::remove_dir_all(&d.path);
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_next_starts_anew() {
        let d = dir("torn");
        let p = target(20);
        d.set_applied(Some(&p)).unwrap();
        let (t, scope, part, before) = step(&p, 5);
        d.patch_applied("1-1-1", &scope, &part, &before, &t)
            .unwrap();
        append_synced(&d.path.join(DELTA), b"{\"base\": \"1-").unwrap();
        assert_eq!(applied(&d), sorted(t.clone()));
        let (u, scope2, part2, before2) = step(&t, 9);
        d.patch_applied("1-1-2", &scope2, &part2, &before2, &u)
            .unwrap();
        assert_eq!(applied(&d), sorted(u));
        let _ = std::fs::remove_dir_all(&d.path);
    }
}
