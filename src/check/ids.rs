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
    let mut auto: Vec<String> = Vec::new();
    walk_mut(classes, &mut |c| {
        if c.id.is_none() {
            auto.push(c.path.clone());
        }
    });
    auto.sort();
    let mut chosen: BTreeMap<String, u16> = BTreeMap::new();
    let slots = usize::try_from(LAST - FIRST + 1).unwrap_or(usize::MAX);
    let in_range = |k: u16| (FIRST..=LAST).contains(&u32::from(k));
    let mut used = taken.keys().filter(|k| in_range(**k)).count();
    for path in auto {
        let mut m = u32::from(preferred_minor(&path));
        // At most 65533 classes can exist per interface (NQ004 reports more); once every
        // slot is taken the probe would come back to the preferred minor, so skip it:
        // probing 65533 slots for each surplus class made rejection quadratic.
        if used < slots {
            for _ in FIRST..=LAST {
                let key = u16::try_from(m).unwrap_or(2);
                if !taken.contains_key(&key) {
                    break;
                }
                m = if m >= LAST { FIRST } else { m + 1 };
            }
        }
        let key = u16::try_from(m).unwrap_or(2);
        if taken.insert(key, (path.clone(), Span::default())).is_none() && in_range(key) {
            used += 1;
        }
        chosen.insert(path, key);
    }
    walk_mut(classes, &mut |c| {
        if let Some(m) = chosen.get(&c.path) {
            c.minor = *m;
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
