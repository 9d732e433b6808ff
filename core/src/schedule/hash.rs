//! Hashers for the wheel's id index: the default (foldhash) and `HandleHasher` for counter-allocated `u64` handles.

use core::hash::{BuildHasher, Hasher};

/// The default hasher of the id index: foldhash, seeded per process.
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// A hasher for `u64` handles handed out by a counter (as hush does): handles
/// that are close together land in neighbouring buckets, so inserting fresh
/// handles walks the index in order instead of touching a random cache line,
/// like a slab; 7 bits of a multiplicative hash keep hashbrown's tags spread.
///
/// Use it only for ids that an attacker does not choose: unlike the default, it
/// does not resist collision flooding. Any `Hash` type works with it, but types
/// other than a single `u64` get a weak byte-wise hash: keep the default for them.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandleHasher;

impl BuildHasher for HandleHasher {
    type Hasher = HandleHasherState;

    fn build_hasher(&self) -> HandleHasherState {
        HandleHasherState(0)
    }
}

/// The state of a [`HandleHasher`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HandleHasherState(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;
/// Low bits of the handle kept as the bucket position (tables up to 2^25 buckets).
const POSITION_BITS: u32 = 25;

impl Hasher for HandleHasherState {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        // A single write leaves the handle itself; more writes mix.
        self.0 = self.0.wrapping_mul(K).rotate_left(29) ^ x;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let x = self.0;
        let tag = x.wrapping_mul(K) >> (64 - (32 - POSITION_BITS));
        (tag << POSITION_BITS) | (x & ((1 << POSITION_BITS) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_keep_their_low_bits_and_get_a_spread_tag() {
        let h = |x: u64| HandleHasher.hash_one(x);
        assert_eq!(h(5) & 0x1ff_ffff, 5);
        assert_eq!(h(6) & 0x1ff_ffff, 6);
        assert!(h(u64::MAX) <= u64::from(u32::MAX));
        let tags: std::collections::HashSet<u64> = (0..1_000).map(|x| h(x) >> 25).collect();
        assert!(tags.len() > 100, "{}", tags.len());
        assert_ne!(HandleHasher.hash_one((1u64, 2u64)), HandleHasher.hash_one((2u64, 1u64)));
    }
}
