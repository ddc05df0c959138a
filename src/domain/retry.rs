//! What happens to a task whose attempt failed: back to the queue after a capped exponential delay,
//! or failed for good.

use std::time::Duration;

use super::task::FailureReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queue again, claimable after `delay`.
    Requeue { delay: Duration },
    /// Terminal `failed`.
    Fail,
}

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed:
    /// base, 2·base, 4·base, … capped at `max`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    pub fn after_failure(
        &self,
        reason: FailureReason,
        retryable: bool,
        attempt: i32,
        max_attempts: i32,
    ) -> AfterFailure {
        if retryable && reason.is_retryable() && attempt < max_attempts {
            AfterFailure::Requeue {
                delay: self.delay(attempt),
            }
        } else {
            AfterFailure::Fail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    #[test]
    fn delay_doubles_and_caps() {
        assert_eq!(B.delay(1), Duration::from_secs(1));
        assert_eq!(B.delay(2), Duration::from_secs(2));
        assert_eq!(B.delay(4), Duration::from_secs(8));
        assert_eq!(B.delay(50), Duration::from_secs(300));
    }

    #[test]
    fn retries_only_with_attempts_left_and_retryable() {
        let r = FailureReason::AgentError;
        assert!(matches!(
            B.after_failure(r, true, 1, 3),
            AfterFailure::Requeue { .. }
        ));
        assert_eq!(B.after_failure(r, true, 3, 3), AfterFailure::Fail);
        assert_eq!(B.after_failure(r, false, 1, 3), AfterFailure::Fail);
        assert_eq!(
            B.after_failure(FailureReason::QueuedExpired, true, 1, 3),
            AfterFailure::Fail
        );
        assert_eq!(
            B.after_failure(FailureReason::Cancelled, true, 1, 3),
            AfterFailure::Fail
        );
    }
}
