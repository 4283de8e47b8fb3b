//! The one way stages use the second core: a list of independent items (interfaces) split
//! in two by weight (their classes), the later part on a second thread, the results in
//! order, so output is the one a single thread gives. Threads are a speed-up, never a
//! need: a refused one (a task limit) leaves all the work to the calling thread.

use std::sync::{Mutex, PoisonError};

/// Below this much weight in all (classes), everything runs on the calling thread.
pub const FROM: usize = 4096;

/// `f` of every item, in order. With two items or more and a total `weight` of at least
/// `from`, the first items holding at least half of the weight (at least one, at most all
/// but one) are done here and the rest on a second thread.
pub fn map_in_two<T: Send, R: Send>(
    items: &mut [T],
    weight: &dyn Fn(&T) -> usize,
    from: usize,
    f: &(dyn Fn(&mut T) -> R + Sync),
) -> Vec<R> {
    let sizes: Vec<usize> = items.iter().map(weight).collect();
    let total: usize = sizes.iter().sum();
    if items.len() < 2 || total < from {
        return items.iter_mut().map(f).collect();
    }
    let mut split = 1;
    let mut here = sizes[0];
    while split + 1 < sizes.len() && here * 2 < total {
        here += sizes[split];
        split += 1;
    }
    let (first, rest) = items.split_at_mut(split);
    // Whichever thread gets to the later items takes them through the lock.
    let rest = Mutex::new(rest);
    let later = || {
        let mut rest = rest.lock().unwrap_or_else(PoisonError::into_inner);
        rest.iter_mut().map(f).collect::<Vec<_>>()
    };
    std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, later).ok();
        let mut out: Vec<R> = first.iter_mut().map(f).collect();
        match other {
            Some(h) => out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
            None => out.extend(later()),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_whatever_the_split() {
        for sizes in [
            vec![5],
            vec![1, 1],
            vec![9, 1, 1],
            vec![1, 1, 9],
            vec![3, 3, 3, 3],
        ] {
            let mut items: Vec<(usize, usize)> = sizes.iter().copied().enumerate().collect();
            let f = |x: &mut (usize, usize)| x.0 * 10;
            let want: Vec<usize> = (0..sizes.len()).map(|i| i * 10).collect();
            for from in [0, 1, usize::MAX] {
                assert_eq!(
                    map_in_two(&mut items, &|x| x.1, from, &f),
                    want,
                    "{sizes:?}"
                );
            }
        }
    }
}
