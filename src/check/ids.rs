//! Class ids: explicit `id`s are kept, every other class gets a minor derived from a hash of
//! its path, so adding or removing a class does not renumber the others.

use std::collections::BTreeMap;

use super::build::ClassDraft;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::span::Span;

/// FNV-1a, 32 bits: stable across platforms and releases, unlike `std`'s hasher.
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Lowest and highest minor netqos hands out (1 is the root class 1:1).
const FIRST: u32 = 2;
const LAST: u32 = 0xfffe;

/// The preferred minor of a class path.
#[must_use]
pub fn preferred_minor(path: &str) -> u16 {
    let span = LAST - FIRST + 1;
    u16::try_from(FIRST + fnv1a(path) % span).unwrap_or(2)
}

/// The free minors in `FIRST..=LAST`, as a union-find over "next candidate" links with
/// path halving: finding the first free slot at or after a minor is near O(1), where
/// probing one slot at a time made a nearly full interface quadratic.
struct FreeSlots {
    /// `next[i]` is slot `FIRST + i` itself when free, else a later candidate (cyclic).
    next: Vec<u32>,
    free: usize,
}

impl FreeSlots {
    fn new(taken: impl Iterator<Item = u16>) -> Self {
        let n = LAST - FIRST + 1;
        let mut s = FreeSlots {
            next: (0..n).collect(),
            free: usize::try_from(n).unwrap_or(usize::MAX),
        };
        for k in taken {
            if (FIRST..=LAST).contains(&u32::from(k)) {
                s.mark(u32::from(k) - FIRST);
            }
        }
        s
    }

    fn mark(&mut self, i: u32) {
        let idx = i as usize;
        if self.next[idx] == i {
            self.free -= 1;
            self.next[idx] = (i + 1) % (LAST - FIRST + 1);
        }
    }

    fn find(&mut self, mut i: u32) -> u32 {
        while self.next[i as usize] != i {
            let up = self.next[self.next[i as usize] as usize];
            self.next[i as usize] = up;
            i = up;
        }
        i
    }

    /// Takes the first free minor at or after `minor`, wrapping; `None` when all are taken.
    fn take_from(&mut self, minor: u16) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let slot = self.find(u32::from(minor) - FIRST);
        self.mark(slot);
        u16::try_from(slot + FIRST).ok()
    }
}

fn walk_mut(classes: &mut [ClassDraft], f: &mut dyn FnMut(&mut ClassDraft)) {
    for c in classes {
        f(c);
        walk_mut(&mut c.children, f);
    }
}

/// Assigns `minor` to every class of one interface.
pub fn assign(classes: &mut [ClassDraft], diags: &mut Diagnostics) {
    let mut taken: BTreeMap<u16, (String, Span)> = BTreeMap::new();
    walk_mut(classes, &mut |c| {
        if let Some(id) = &c.id {
            if let Some((other, other_span)) = taken.get(&id.v) {
                diags.push(
                    Diagnostic::new(
                        Code::NQ004,
                        format!(
                            "class id 1:{:x} is used by both `{other}` and `{}`",
                            id.v, c.path
                        ),
                    )
                    .label(id.span, "second use")
                    .label(*other_span, "first use")
                    .help("give each class its own id, or drop `id` and let netqos assign one"),
                );
            } else {
                taken.insert(id.v, (c.path.clone(), id.span));
            }
            c.minor = id.v;
        }
    });
    // Classes without an id, by path: (path, depth-first index among them). Minors are
    // handed out in path order; classes sharing a path (NQ042 reports them) all get the
    // minor of the last of them, as one map from path to minor would give.
    let mut auto: Vec<(&str, usize)> = Vec::new();
    for c in classes.iter() {
        c.walk_ref(&mut |c| {
            if c.id.is_none() {
                auto.push((c.path.as_str(), auto.len()));
            }
        });
    }
    auto.sort_unstable();
    let mut minors = vec![0u16; auto.len()];
    let mut free = FreeSlots::new(taken.keys().copied());
    let mut run: Vec<usize> = Vec::new();
    for (n, &(path, at)) in auto.iter().enumerate() {
        let preferred = preferred_minor(path);
        // The first free minor at or after the preferred one, wrapping (linear probing);
        // at most 65533 classes can exist per interface (NQ004 reports more), and once
        // every slot is taken a class keeps its preferred minor.
        let key = free.take_from(preferred).unwrap_or(preferred);
        run.push(at);
        if auto.get(n + 1).is_none_or(|next| next.0 != path) {
            for i in run.drain(..) {
                minors[i] = key;
            }
        }
    }
    let mut next = 0;
    walk_mut(classes, &mut |c| {
        if c.id.is_none() {
            c.minor = minors[next];
            next += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_minors_are_stable_and_in_range() {
        assert_eq!(
            preferred_minor("control-plane"),
            preferred_minor("control-plane")
        );
        for p in ["a", "b", "pods/web", "x/y/z"] {
            let m = preferred_minor(p);
            assert!((2..=0xfffe).contains(&m));
        }
    }
}
