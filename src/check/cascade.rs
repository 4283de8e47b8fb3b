//! Root causes before knock-on errors. A statement netqos cannot read (NQ041) or an
//! undefined variable (NQ043) leaves its interface incomplete: the interface may well have
//! had its default, its rate or the match the reader could not see. The checks that judge an
//! interface as a whole are then implied by the root cause, so they are dropped for that
//! interface instead of being reported before it; fixing the root cause brings them back if
//! they still hold.

use crate::codes::Code;
use crate::diagnostic::Diagnostics;
use crate::span::Span;
use crate::syntax::ast::{File, Item};

/// Codes that make their interface incomplete.
const ROOTS: [Code; 2] = [Code::NQ041, Code::NQ043];

/// Checks of a whole interface that an incomplete one cannot be held to: no default
/// (NQ001), no rate (NQ008), a starved default for unmatched protocols (NQ022), a class no
/// match selects (NQ024), an inner class never selected (NQ025), a percentage of a rate
/// that could not be read (NQ064).
const IMPLIED: [Code; 6] = [
    Code::NQ001,
    Code::NQ008,
    Code::NQ022,
    Code::NQ024,
    Code::NQ025,
    Code::NQ064,
];

/// Whether `code` reports a root cause, sorted before everything else.
#[must_use]
pub fn is_root(code: Code) -> bool {
    code == Code::NQ040 || code == Code::NQ052 || ROOTS.contains(&code)
}

/// Drops the diagnostics a root cause in the same interface implies.
pub fn suppress_knock_ons(file: &File, diags: &mut Diagnostics) {
    let blocks: Vec<Span> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Interface(_) => Some(i.span()),
            _ => None,
        })
        .collect();
    // Interface blocks are in source order and do not overlap: the one holding `s` is the
    // last that starts at or before it (a binary search: a file may have many).
    let inside = |s: Span| {
        let i = blocks
            .partition_point(|b| b.start <= s.start)
            .checked_sub(1)?;
        blocks.get(i).filter(|b| s.end <= b.end).map(|_| i)
    };
    let mut incomplete: Vec<usize> = diags
        .iter()
        .filter(|d| ROOTS.contains(&d.code))
        .filter_map(|d| d.primary_span().and_then(inside))
        .collect();
    incomplete.sort_unstable();
    incomplete.dedup();
    if incomplete.is_empty() {
        return;
    }
    diags.retain(|d| {
        !IMPLIED.contains(&d.code)
            || d.primary_span()
                .and_then(inside)
                .is_none_or(|b| incomplete.binary_search(&b).is_err())
    });
}
