//! Port ranges as the fewest value/mask pairs a u32 key can match.

/// The minimal list of `(value, mask)` pairs covering exactly `lo..=hi`.
#[must_use]
pub fn port_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at `lo` that stays within `hi`.
        let mut size: u32 = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let mask = u16::try_from(0xffff_u32 & !(size - 1)).unwrap_or(0xffff);
        out.push((u16::try_from(lo).unwrap_or(0), mask));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(pairs: &[(u16, u16)]) -> Vec<u16> {
        (0..=u16::MAX)
            .filter(|p| pairs.iter().any(|(v, m)| p & m == *v))
            .collect()
    }

    #[test]
    fn exact_and_minimal() {
        assert_eq!(port_masks(443, 443), vec![(443, 0xffff)]);
        assert_eq!(port_masks(2379, 2380), vec![(2379, 0xffff), (2380, 0xffff)]);
        assert_eq!(port_masks(1024, 2047), vec![(1024, 0xfc00)]);
        for (lo, hi) in [
            (1, 65535),
            (2379, 2380),
            (30000, 32767),
            (8472, 8472),
            (100, 1000),
        ] {
            let pairs = port_masks(lo, hi);
            assert_eq!(covered(&pairs), (lo..=hi).collect::<Vec<_>>(), "{lo}-{hi}");
        }
        assert_eq!(port_masks(1, 65535).len(), 16);
    }
}
