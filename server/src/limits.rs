//! Rate limiting: a token bucket on tokio's clock (so tests can pause time).

use tokio::time::Instant;

/// Allows `rate` events per second on average and bursts of `2 × rate`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` events per second.
    pub(crate) fn per_second(rate: u32) -> Self {
        let per_second = f64::from(rate.max(1));
        TokenBucket { capacity: 2.0 * per_second, tokens: 2.0 * per_second, per_second, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::per_second(10);
        assert_eq!((0..25).filter(|_| bucket.try_take()).count(), 20, "burst of twice the rate");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..25).filter(|_| bucket.try_take()).count(), 5, "refills at the rate");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..100).filter(|_| bucket.try_take()).count(), 20, "never above capacity");
    }
}
