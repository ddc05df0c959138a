//! Retries with capped, fully jittered exponential backoff, for the calls that are safe to repeat.
//!
//! A call is safe to repeat when doing it twice leaves what doing it once would: reads, heartbeats,
//! registration (idempotent on daemon id and provider), reports (a report that already took effect
//! answers 200 with the current state), cancellation, deregistration, and an enqueue that carries an
//! idempotency key. A claim is not: its lost answer would hand out tasks nobody runs.

use std::time::Duration;

use rand::Rng;

/// How often and how long to retry a call that is safe to repeat.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Ceiling of the first pause; doubles per retry.
    pub base: Duration,
    /// Ceiling of any pause.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        base: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The pause before retry `n` (1-based): uniform in `[0, min(max, base · 2^(n-1))]` ("full
    /// jitter", so many clients retrying together spread out).
    pub fn pause(&self, n: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = rand::rng().random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_jittered_below_a_doubling_capped_ceiling() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        for _ in 0..100 {
            assert!(p.pause(1) <= Duration::from_millis(100));
            assert!(p.pause(2) <= Duration::from_millis(200));
            assert!(p.pause(9) <= Duration::from_millis(350));
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| p.pause(3)).collect();
        assert!(spread.len() > 1, "pauses are jittered");
    }
}
