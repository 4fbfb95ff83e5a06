//! The retry policy: exponential backoff with jitter, rounded so retries share few delay queues.

use std::time::Duration;

/// When and how often a retryable failure is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// Upper bound of the delay (before jitter).
    pub max: Duration,
    /// Random extra delay, as a fraction of the delay (0.2 adds up to 20%). Never negative, so a
    /// delay is never shorter than the backoff.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): exponential, capped, with jitter, and
    /// rounded up to two significant digits so retries share a bounded set of delay queues.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max).as_millis() as u64;
        let jittered = capped + (capped as f64 * self.jitter * fastrand::f64()) as u64;
        Duration::from_millis(round_up_2_digits(jittered.max(1)))
    }
}

fn round_up_2_digits(ms: u64) -> u64 {
    if ms < 100 {
        return ms;
    }
    let unit = 10u64.pow(ms.ilog10() - 1);
    ms.div_ceil(unit) * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_never_undercut_the_backoff() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: 0.2,
        };
        for attempt in 1..8 {
            let expected = (200u64 << (attempt - 1)).min(10_000);
            for _ in 0..50 {
                let d = p.delay(attempt).as_millis() as u64;
                assert!(d >= expected && d as f64 <= expected as f64 * 1.2 + expected as f64 * 0.1, "{attempt}: {d}");
            }
        }
    }

    #[test]
    fn delays_round_up_to_two_digits() {
        assert_eq!(round_up_2_digits(57), 57);
        assert_eq!(round_up_2_digits(1234), 1300);
        assert_eq!(round_up_2_digits(1200), 1200);
        assert_eq!(round_up_2_digits(56_789), 57_000);
    }
}
