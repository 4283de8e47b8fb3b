//! The bucket of every pod limit (`pods { burst DURATION|SIZE }`): how it is written in the
//! policy and in the netqos CNI entry (`{"type":"netqos","burst":"20ms"}`), and how many
//! bytes a tbf of a given rate gets from it. Shared by the checker and the plugin, so the
//! two agree on every value.

use serde::Serialize;

use crate::units;

/// Bytes a frame adds to the MTU on the host side of a veth (Ethernet header): what tbf
/// counts per packet.
pub const LINK_HEADER: u64 = 14;

/// The node MTU the checker assumes when it prints a bucket (the plugin reads the device's).
pub const DEFAULT_MTU: u32 = 1500;

/// `burst` of the pods block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodBurst {
    /// rate × this many microseconds.
    Duration { us: u64 },
    /// This many bytes.
    Size { bytes: u64 },
}

/// Why a `burst` text is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BurstError {
    /// Neither a duration (`20ms`) nor a size (`64kib`).
    Unreadable,
    /// Zero, or a size in a bit unit (tc's `kbit` for sizes).
    Zero,
    BitUnit,
}

impl PodBurst {
    /// Reads `20ms`, `500us`, `1s` (a duration) or `64kib`, `1514b` (a size).
    pub fn parse(text: &str) -> Result<PodBurst, BurstError> {
        if let Ok(us) = units::parse_duration_us(text) {
            return if us == 0 {
                Err(BurstError::Zero)
            } else {
                Ok(PodBurst::Duration { us })
            };
        }
        match units::parse_size(text) {
            Ok(s) if s.bit_unit => Err(BurstError::BitUnit),
            Ok(s) if s.bytes == 0 => Err(BurstError::Zero),
            Ok(s) => Ok(PodBurst::Size { bytes: s.bytes }),
            Err(_) => Err(BurstError::Unreadable),
        }
    }

    /// The text of the CNI entry's `burst` key; [`PodBurst::parse`] reads it back.
    pub fn config_text(&self) -> String {
        match *self {
            PodBurst::Duration { us } if us % 1_000 == 0 => format!("{}ms", us / 1_000),
            PodBurst::Duration { us } => format!("{us}us"),
            PodBurst::Size { bytes } => format!("{bytes}b"),
        }
    }

    /// The bucket in bytes for a tbf of `rate` bytes/s on a device of `mtu`: rate × duration
    /// (or the size), never less than one full frame, the least a tbf needs to pass
    /// full-size packets and reach its rate.
    pub fn bucket_bytes(&self, rate: u64, mtu: u32) -> u64 {
        let want = match *self {
            PodBurst::Duration { us } => {
                u64::try_from(u128::from(rate) * u128::from(us) / 1_000_000).unwrap_or(u64::MAX)
            }
            PodBurst::Size { bytes } => bytes,
        };
        want.max(min_bucket(mtu))
    }

    /// For people: `20 ms`, `64 KiB`.
    pub fn describe(&self) -> String {
        match *self {
            PodBurst::Duration { us } => units::fmt_duration_us(us),
            PodBurst::Size { bytes } => units::fmt_size(bytes),
        }
    }
}

/// One full frame: the smallest bucket that passes every packet of a device of `mtu`.
pub fn min_bucket(mtu: u32) -> u64 {
    u64::from(mtu) + LINK_HEADER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            PodBurst::parse("20ms"),
            Ok(PodBurst::Duration { us: 20_000 })
        );
        assert_eq!(
            PodBurst::parse("64kib"),
            Ok(PodBurst::Size { bytes: 65_536 })
        );
        assert_eq!(PodBurst::parse("0ms"), Err(BurstError::Zero));
        assert_eq!(PodBurst::parse("8kbit"), Err(BurstError::BitUnit));
        assert_eq!(PodBurst::parse("fast"), Err(BurstError::Unreadable));
        for b in [
            PodBurst::Duration { us: 20_000 },
            PodBurst::Duration { us: 1_500 },
            PodBurst::Size { bytes: 65_536 },
        ] {
            assert_eq!(PodBurst::parse(&b.config_text()), Ok(b));
        }
    }

    #[test]
    fn the_bucket_never_drops_a_full_frame() {
        let b = PodBurst::Duration { us: 20_000 };
        // 1 Mbit/s: 125000 B/s × 20 ms = 2500 B.
        assert_eq!(b.bucket_bytes(125_000, 1500), 2_500);
        // 100 kbit/s would give 250 B: one 1514-byte frame instead.
        assert_eq!(b.bucket_bytes(12_500, 1500), 1_514);
        assert_eq!(b.bucket_bytes(12_500, 9000), 9_014);
        assert_eq!(PodBurst::Size { bytes: 100 }.bucket_bytes(1, 1500), 1_514);
    }
}
