//! The burst a container runtime passes with every annotated pod limit, and what the CNI
//! bandwidth plugin's 32-bit arithmetic makes of it (research/cni.md §1.5, §2.5): how many
//! bytes a pod sends or receives unshaped before its limit bites.

/// A runtime and the burst (bits) it passes with `kubernetes.io/*-bandwidth`.
#[derive(Debug, Clone, Copy)]
pub struct Runtime {
    pub name: &'static str,
    pub burst_bits: u64,
}

/// containerd (`math.MaxUint32`) and cri-dockerd / dockershim (`math.MaxInt32`). CRI-O's
/// (`MaxUint32*8-1`) wraps the queue limit instead and is described in `explain NQ066`.
pub const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "containerd",
        burst_bits: 4_294_967_295,
    },
    Runtime {
        name: "cri-dockerd",
        burst_bits: 2_147_483_647,
    },
];

/// Kernel packet-scheduler ticks per microsecond (`/proc/net/psched` on every current kernel).
const TICKS_PER_US: f64 = 15.625;

/// Go's float64 → uint32 conversion on amd64: truncate through int64, keep the low 32 bits.
fn go_u32(x: f64) -> u32 {
    (x as i64) as u32
}

/// The bytes the plugin's TBF lets through at full speed for a `rate` (bits/s) limit with
/// `burst_bits`: the bucket holds `rate × buffer time`, where the buffer time in ticks wraps
/// at 2³² on amd64 (the seed's `burst 21474835b` at 1 Mbit/s under containerd).
#[must_use]
pub fn effective_burst_bytes(rate_bits: u64, burst_bits: u64) -> u64 {
    let rate_b = rate_bits / 8;
    if rate_b == 0 {
        return 0;
    }
    let burst_b = burst_bits / 8;
    let t_us = go_u32(burst_b as f64 * 1e6 / rate_b as f64);
    let ticks = go_u32(f64::from(t_us) * TICKS_PER_US);
    (rate_b as f64 * f64::from(ticks) / TICKS_PER_US / 1e6) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_real_tc_outputs() {
        // seed article: containerd, 1 Mbit/s → "burst 21474835b"
        assert_eq!(effective_burst_bytes(1_000_000, 4_294_967_295), 21_474_835);
        // containerd at 100 Mbit/s → "burst 512Mb"; dockershim at 10 Mbit/s → "burst 256Mb"
        // (tc rounds to Mb within 1024/16 bytes)
        let near = |a: u64, b: u64| a.abs_diff(b) < 64;
        assert!(near(
            effective_burst_bytes(100_000_000, 4_294_967_295),
            512 << 20
        ));
        assert!(near(
            effective_burst_bytes(10_000_000, 2_147_483_647),
            256 << 20
        ));
    }
}
