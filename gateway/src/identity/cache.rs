//! A small bounded cache of recent answers with a short time-to-live, so a caller repeating a query
//! (a service hall re-opening a case, a batch retried) does not send five look-ups to every source again.
//!
//! Keys are SHA-256 digests of the normalised query (or of a name, for term frequencies): the cache
//! never holds identifiers in the clear as keys. Eviction is `quick_cache`'s CLOCK-Pro, bounded by
//! entry count; expiry is checked on read.
//!
//! An entry lives between 80 % and 100 % of the TTL, spread by its key. With one fixed lifetime, entries
//! filled in a burst (a batch, a morning's first queries) all expired in the same instant and the next
//! calls re-resolved them at once against the sources: throughput halved for a moment every TTL
//! (BENCHMARKS.md, *Load*). The key is a uniform digest, so the spread is even and needs no randomness.

use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

/// A bounded TTL cache keyed by a 32-byte digest.
pub struct TtlCache<V: Clone> {
    /// Value and the instant it expires.
    inner: Option<Cache<[u8; 32], (Instant, V)>>,
    ttl: Duration,
}

impl<V: Clone> TtlCache<V> {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize, ttl: Duration) -> TtlCache<V> {
        TtlCache { inner: (capacity > 0 && !ttl.is_zero()).then(|| Cache::new(capacity)), ttl }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<V> {
        let cache = self.inner.as_ref()?;
        match cache.get(key) {
            Some((expires, v)) if Instant::now() < expires => Some(v),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: [u8; 32], value: V) {
        if let Some(cache) = &self.inner {
            cache.insert(key, (Instant::now() + self.lifetime(&key), value));
        }
    }

    /// `ttl × (0.8 + 0.2 × k / 65536)` for the key's first two bytes `k`.
    fn lifetime(&self, key: &[u8; 32]) -> Duration {
        let spread = f64::from(u16::from_be_bytes([key[0], key[1]])) / 65_536.0;
        self.ttl.mul_f64(0.8 + 0.2 * spread)
    }

    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_is_bounded() {
        let cache = TtlCache::new(4, Duration::from_millis(30));
        cache.insert([1; 32], 1);
        assert_eq!(cache.get(&[1; 32]), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&[1; 32]), None);
        for i in 0..100u8 {
            cache.insert([i; 32], i);
        }
        assert!(cache.len() <= 8, "bounded: {}", cache.len());
        let off: TtlCache<u8> = TtlCache::new(0, Duration::from_secs(1));
        off.insert([1; 32], 1);
        assert_eq!(off.get(&[1; 32]), None);
    }

    /// Lifetimes spread over the last fifth of the TTL, by key, never past it.
    #[test]
    fn lifetimes_spread_between_four_fifths_and_the_whole_ttl() {
        let ttl = Duration::from_secs(30);
        let cache: TtlCache<u8> = TtlCache::new(4, ttl);
        let lifetime = |first: u8| cache.lifetime(&[first; 32]);
        assert_eq!(lifetime(0), ttl.mul_f64(0.8));
        assert!(lifetime(0xff) <= ttl && lifetime(0xff) > ttl.mul_f64(0.99));
        let spread: std::collections::BTreeSet<_> = (0..=255u8).map(lifetime).collect();
        assert_eq!(spread.len(), 256, "distinct keys, distinct expiries");
    }
}
