//! Hashed u32 classification: a long run of rules that all test one header word (host
//! and prefix rules: `match dst 10.0.3.7`) becomes one link node that looks the packet up
//! in a 256-bucket hash table keyed on a byte of that word, instead of a chain the packet
//! walks rule by rule.
//!
//! First match is kept exactly. A run is consecutive rules of one list (parent, family)
//! whose u32 keys (as the kernel checks them, in order) all begin with the same keys `C`
//! followed by a key on the same word `w`. The link node checks `C`, then reads `w`
//! (the hash): a packet that fails `C` fails every rule of the run without reading more, as
//! in the chain; one that passes reads `w` next, as the chain's first rule does (so a
//! packet too short to hold `w` stops the list in both). Each bucket holds, in source
//! order, every rule of the run whose key on `w` can match a packet with that bucket's
//! byte (a rule that does not fix the whole byte, such as a broader prefix, is in each
//! bucket it can match), so the first rule of the bucket that matches is the first rule of
//! the run that matches. No rule there: u32 goes on after the link node (it is not
//! terminal), as the chain goes on after the run. A crowded bucket is split again on
//! another byte of `w` (a second level). Rules keep all their own keys in the buckets.
//!
//! Only runs of at least [`HASH_MIN`] rules are hashed; the rest stays linear.

use crate::apply::keys::encode;
use crate::apply::model::Key;
use crate::plan::{
    Bucket, FilterAction, FilterPlan, Handle, HashKey, HashTablePlan, Protocol, Selector, TableId,
};

/// Runs shorter than this stay linear chains.
pub const HASH_MIN: usize = 16;
/// A bucket with more rules than this is split on another byte (when that helps).
const BUCKET_MAX: usize = 8;
/// Buckets per table: a whole byte.
pub const DIVISOR: u16 = 256;
/// Node numbers in one bucket run 0x800..=0xfff.
const BUCKET_NODES: usize = 0x800;

/// One rule of a list, before placement.
pub(crate) struct Entry {
    pub v4: bool,
    pub keys: Vec<Selector>,
    pub target: u16,
    pub line: usize,
}

/// Hash-table ids of one device (u32 shares tables across the qdisc): IPv4 lists take
/// 1..=0x3ff, IPv6 lists 0x400..=0x7ff, so the ids of one family do not move when the
/// other family's rules change.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    v4: u16,
    v6: u16,
}

impl Default for Ids {
    fn default() -> Self {
        Ids { v4: 1, v6: 0x400 }
    }
}

impl Ids {
    fn take(&mut self, v4: bool, n: usize) -> Option<Vec<TableId>> {
        let (next, end) = if v4 {
            (&mut self.v4, 0x400)
        } else {
            (&mut self.v6, 0x800)
        };
        let n16 = u16::try_from(n).ok()?;
        if next.checked_add(n16)? > end {
            return None;
        }
        let ids = (*next..*next + n16).map(TableId).collect();
        *next += n16;
        Some(ids)
    }
}

/// A hash table of a run: which byte of the word picks the bucket, and each non-empty
/// bucket's rules (indexes into the run's entries) or its own table.
struct Table {
    key: HashKey,
    buckets: Vec<(u8, Content)>,
}

enum Content {
    Rules(Vec<usize>),
    Split(Table),
}

impl Table {
    fn count(&self) -> usize {
        1 + self
            .buckets
            .iter()
            .map(|(_, c)| match c {
                Content::Rules(_) => 0,
                Content::Split(t) => t.count(),
            })
            .sum::<usize>()
    }
}

/// Where a run's rules may be hashed: after the keys `prefix` (index `j` into each rule's
/// keys), on byte `byte` (0 = most significant) of the word at `keys[j].off`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Cand {
    j: usize,
    byte: u8,
}

fn shift(byte: u8) -> u32 {
    24 - 8 * u32::from(byte)
}

/// Whether rule `k` can be hashed with the run's first rule `first` at `c`.
fn fits(first: &[Key], k: &[Key], c: Cand) -> bool {
    k.len() > c.j && k[..c.j] == first[..c.j] && k[c.j].off == first[c.j].off && k[c.j].offmask == 0
}

/// The buckets a rule's key can match on `byte`.
fn buckets_of(key: &Key, byte: u8) -> Vec<u8> {
    let s = shift(byte);
    let m = u8::try_from((key.mask >> s) & 0xff).unwrap_or(0);
    let v = u8::try_from((key.val >> s) & 0xff).unwrap_or(0) & m;
    if m == 0xff {
        return vec![v];
    }
    (0..=255u8).filter(|x| x & m == v).collect()
}

/// Non-empty buckets in bucket order, each with its rules (indexes into the keys).
type Spread = Vec<(u8, Vec<usize>)>;

/// The rules `idx` spread over the buckets of `byte` at key `j`: (bucket contents in
/// bucket order, largest bucket, entries in all).
fn spread(idx: &[usize], keys: &[Vec<Key>], c: Cand) -> (Spread, usize, usize) {
    let mut b: Vec<Vec<usize>> = vec![Vec::new(); usize::from(DIVISOR)];
    for &i in idx {
        for x in buckets_of(&keys[i][c.j], c.byte) {
            b[usize::from(x)].push(i);
        }
    }
    let max = b.iter().map(Vec::len).max().unwrap_or(0);
    let total = b.iter().map(Vec::len).sum();
    let out = (0..=255u8).zip(b).filter(|(_, v)| !v.is_empty()).collect();
    (out, max, total)
}

/// The best byte for `idx` among `bytes` at key `j`: fewest rules in the largest bucket,
/// then fewest entries; `None` unless it at least halves the largest bucket and keeps
/// copies of broad rules within bounds.
fn best(idx: &[usize], keys: &[Vec<Key>], j: usize, bytes: &[u8]) -> Option<(Cand, Spread)> {
    let mut found: Option<(usize, usize, Cand, Spread)> = None;
    for &byte in bytes {
        let c = Cand { j, byte };
        let (b, max, total) = spread(idx, keys, c);
        if max * 2 > idx.len() || total > 2 * idx.len() + 2 * usize::from(DIVISOR) {
            continue;
        }
        if found.as_ref().is_none_or(|f| (max, total) < (f.0, f.1)) {
            found = Some((max, total, c, b));
        }
    }
    found.map(|(_, _, c, b)| (c, b))
}

/// The table of `idx` hashed at `c`, with crowded buckets split once more on another byte.
fn table(idx: &[usize], keys: &[Vec<Key>], c: Cand, b: Spread, depth: u8) -> Option<Table> {
    let w = keys[idx[0]][c.j].off;
    let key = HashKey {
        mask: 0xff << shift(c.byte),
        at: u16::try_from(w).ok()?,
    };
    let mut buckets = Vec::new();
    for (x, rules) in b {
        let others: Vec<u8> = (0..4).filter(|&y| y != c.byte).collect();
        let split = if depth == 0 && rules.len() > BUCKET_MAX {
            best(&rules, keys, c.j, &others)
                .and_then(|(c2, b2)| table(&rules, keys, c2, b2, depth + 1))
        } else {
            None
        };
        match split {
            Some(t) => buckets.push((x, Content::Split(t))),
            None if rules.len() > BUCKET_NODES => return None,
            None => buckets.push((x, Content::Rules(rules))),
        }
    }
    Some(Table { key, buckets })
}

/// The longest run from `start` (indexes into `keys`) and the hash of it, if it is worth
/// one.
fn run_at(list: &[usize], start: usize, keys: &[Vec<Key>]) -> (usize, Option<(Cand, Table)>) {
    let first = &keys[list[start]];
    let mut cands: Vec<Cand> = (0..first.len())
        .filter(|&j| first[j].offmask == 0 && first[j].off >= 0 && first[j].off % 4 == 0)
        .flat_map(|j| (0..4).map(move |byte| Cand { j, byte }))
        .collect();
    let mut end = start + 1;
    while end < list.len() {
        let k = &keys[list[end]];
        let next: Vec<Cand> = cands
            .iter()
            .copied()
            .filter(|&c| fits(first, k, c))
            .collect();
        if next.is_empty() {
            break;
        }
        cands = next;
        end += 1;
    }
    let len = end - start;
    if len < HASH_MIN {
        return (len, None);
    }
    let run: Vec<usize> = list[start..end].to_vec();
    let mut js: Vec<usize> = cands.iter().map(|c| c.j).collect();
    js.dedup();
    let mut chosen = None;
    for j in js {
        let bytes: Vec<u8> = cands.iter().filter(|c| c.j == j).map(|c| c.byte).collect();
        if let Some((c, b)) = best(&run, keys, j, &bytes) {
            let better = match &chosen {
                None => true,
                Some((_, _, m)) => b.iter().map(|x| x.1.len()).max().unwrap_or(0) < *m,
            };
            if better {
                let m = b.iter().map(|x| x.1.len()).max().unwrap_or(0);
                chosen = Some((c, b, m));
            }
        }
    }
    let hashed = chosen.and_then(|(c, b, _)| table(&run, keys, c, b, 0).map(|t| (c, t)));
    (len, hashed)
}

/// The filters (and hash tables) of one list's rules (`entries`, all of one family), in
/// order, with priorities from `base` (at most `per_prio` root nodes each).
pub(crate) struct Placer<'a> {
    pub parent: Handle,
    pub filters: &'a mut Vec<FilterPlan>,
    pub tables: &'a mut Vec<HashTablePlan>,
}

/// What the placement decided for one entry of a group.
pub(crate) enum Placed {
    /// A linear node.
    Linear,
    /// The first rule of a hashed run: the run's table, the link node's keys.
    Run(Box<HashedRun>),
    /// A later rule of a hashed run (its node is in a bucket).
    Inside,
}

pub(crate) struct HashedRun {
    table: Table,
    link_keys: Vec<Selector>,
    tables: Vec<TableId>,
}

/// Decides, for the entries `list` (indexes into `entries`, one family, in order), which
/// are hashed: `out[i]` for entry `list[i]`.
pub(crate) fn decide(entries: &[Entry], list: &[usize], ids: &mut Ids) -> Vec<Placed> {
    let keys: Vec<Vec<Key>> = entries.iter().map(|e| encode(&e.keys)).collect();
    let mut out = Vec::with_capacity(list.len());
    let mut i = 0;
    while i < list.len() {
        let (len, hashed) = run_at(list, i, &keys);
        let Some((c, t)) = hashed else {
            out.extend((0..len).map(|_| Placed::Linear));
            i += len;
            continue;
        };
        let Some(tables) = ids.take(entries[list[i]].v4, t.count()) else {
            out.extend((0..len).map(|_| Placed::Linear));
            i += len;
            continue;
        };
        let first = &keys[list[i]];
        let link_keys = if c.j == 0 {
            vec![Selector::U32 {
                value: 0,
                mask: 0,
                at: t.key.at,
            }]
        } else {
            first[..c.j]
                .iter()
                .map(|k| Selector::U32 {
                    value: k.val,
                    mask: k.mask,
                    at: u16::try_from(k.off).unwrap_or(0),
                })
                .collect()
        };
        out.push(Placed::Run(Box::new(HashedRun {
            table: t,
            link_keys,
            tables,
        })));
        out.extend((1..len).map(|_| Placed::Inside));
        i += len;
    }
    out
}

impl Placer<'_> {
    /// Emits a hashed run at `prio`: its link node, then each table and its buckets' nodes.
    pub(crate) fn run(
        &mut self,
        r: &HashedRun,
        protocol: Protocol,
        prio: u16,
        entries: &[Entry],
        line: usize,
    ) {
        self.filters.push(FilterPlan {
            parent: self.parent,
            protocol,
            prio,
            ht: None,
            keys: r.link_keys.clone(),
            action: FilterAction::Link {
                link: r.tables[0],
                hashkey: r.table.key,
            },
            line,
        });
        let mut ids = r.tables.iter();
        self.table(
            &r.table,
            &mut ids,
            &r.link_keys,
            (protocol, prio, line),
            entries,
        );
    }

    /// Emits table `t` (the next id of `ids`) and its buckets; a split bucket's link node
    /// names the id its table takes next.
    fn table(
        &mut self,
        t: &Table,
        ids: &mut std::slice::Iter<'_, TableId>,
        link_keys: &[Selector],
        (protocol, prio, line): (Protocol, u16, usize),
        entries: &[Entry],
    ) {
        let Some(&id) = ids.next() else { return };
        self.tables.push(HashTablePlan {
            parent: self.parent,
            protocol,
            prio,
            handle: id,
            divisor: DIVISOR,
            line,
        });
        for (bucket, content) in &t.buckets {
            let ht = Some(Bucket {
                table: id,
                bucket: *bucket,
            });
            match content {
                Content::Rules(rules) => {
                    for &i in rules {
                        self.filters.push(FilterPlan {
                            parent: self.parent,
                            protocol,
                            prio,
                            ht,
                            keys: entries[i].keys.clone(),
                            action: FilterAction::Class {
                                target: Handle::class(entries[i].target),
                            },
                            line: entries[i].line,
                        });
                    }
                }
                Content::Split(sub) => {
                    let Some(&next) = ids.as_slice().first() else {
                        return;
                    };
                    self.filters.push(FilterPlan {
                        parent: self.parent,
                        protocol,
                        prio,
                        ht,
                        keys: link_keys.to_vec(),
                        action: FilterAction::Link {
                            link: next,
                            hashkey: sub.key,
                        },
                        line,
                    });
                    self.table(sub, ids, link_keys, (protocol, prio, line), entries);
                }
            }
        }
    }
}
