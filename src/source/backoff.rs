//! Capped exponential backoff with jitter, so a fleet of replicas does not reconnect to a
//! recovering Redis in lock-step.

use rand::Rng;
use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: half of `min * 2^attempt` (capped at `max`) plus a random part
    /// of up to the other half ("equal jitter").
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.attempt.min(16));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min / 2 && first <= min, "{first:?}");
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= max, "{d:?}");
        }
        let late = b.next_delay();
        assert!(late >= max / 2, "{late:?}");
        b.reset();
        assert!(b.next_delay() <= min);
    }
}
