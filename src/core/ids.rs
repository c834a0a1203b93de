//! Injected identifiers and randomness (architecture habit 5: determinism is designed in).
//!
//! The core never calls a system RNG. Drivers seed an [`IdGenerator`] from the OS once at
//! start; tests seed it with a constant so every tag, branch and Call-ID is reproducible.

/// A small deterministic generator (xorshift64*), good enough for protocol tokens and
/// refresh jitter. Not for cryptography: digest cnonces use it too, which RFC 7616 allows
/// as long as they are unpredictable to an observer that does not know the seed.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    state: u64,
    counter: u64,
}

impl IdGenerator {
    /// A generator from a seed. A zero seed is replaced, since xorshift would stay at zero.
    pub fn seeded(seed: u64) -> Self {
        IdGenerator {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
            counter: 0,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        self.counter += 1;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniformly distributed number in `[0, 1)`.
    pub fn next_fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A token of `len` lowercase alphanumerics, valid in SIP `token` and XML ID positions
    /// once prefixed.
    pub fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(len);
        let mut bits = self.next_u64();
        let mut left = 12; // 12 symbols of ~5.2 bits per u64
        for _ in 0..len {
            if left == 0 {
                bits = self.next_u64();
                left = 12;
            }
            out.push(ALPHABET[(bits % 36) as usize] as char);
            bits /= 36;
            left -= 1;
        }
        out
    }

    /// A From/To tag (RFC 3261 §19.3).
    pub fn tag(&mut self) -> String {
        self.token(10)
    }

    /// A Via branch with the RFC 3261 magic cookie (§8.1.1.7).
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token(16))
    }

    /// A Call-ID, globally unique within `host` (RFC 3261 §8.1.1.4).
    pub fn call_id(&mut self, host: &str) -> String {
        format!("{}@{}", self.token(20), host)
    }

    /// A SIP-ETag value for publications this gateway accepts (RFC 3903 §4.1).
    pub fn etag(&mut self) -> String {
        format!("e{}", self.token(15))
    }

    /// A duration drawn uniformly from `[lo, hi)` fractions of `whole_ms`, used to spread
    /// refreshes (product.md: refresh at a random point in 80–90 % of the granted interval).
    pub fn fraction_of(&mut self, whole_ms: u64, lo: f64, hi: f64) -> u64 {
        let f = lo + (hi - lo) * self.next_fraction();
        (whole_ms as f64 * f) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_tokens() {
        let mut a = IdGenerator::seeded(7);
        let mut b = IdGenerator::seeded(7);
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.branch(), b.branch());
    }

    #[test]
    fn branch_carries_magic_cookie() {
        assert!(IdGenerator::seeded(1).branch().starts_with("z9hG4bK"));
    }

    #[test]
    fn fraction_of_stays_in_range() {
        let mut g = IdGenerator::seeded(3);
        for _ in 0..1000 {
            let v = g.fraction_of(1_000_000, 0.8, 0.9);
            assert!((800_000..900_000).contains(&v), "{v}");
        }
    }
}
