//! Retry policy: plain data with explained defaults, and one loop that applies it.
//!
//! Backoff is exponential with full jitter (each wait is uniform in `[0, min(max, base·2ⁿ)]`), and a
//! server's `Retry-After` wins over the computed wait. Registry throttling is also shared per host
//! (see `registry::HostGate`), so one 429 slows every job that talks to that host.

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub max_retries: usize,
    /// The first backoff ceiling; doubles each retry.
    pub min_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// The longest `Retry-After` we honour; longer asks are capped so a job cannot stall for hours.
    pub max_retry_after: Duration,
    /// Failed steps one blob transfer tolerates in all (upload start, GET, PUT share it; see
    /// `copy::BlobMover`). A transfer is about three requests, so this is twice the
    /// single-request budget: the same tolerance per request, and a blob the source never
    /// serves is fetched at most `transfer_retries + 1` times.
    pub transfer_retries: usize,
}

impl Default for RetryPolicy {
    /// 6 retries with ceilings 0.25 s, 0.5 s, 1 s, 2 s, 4 s, 8 s: a persistent failure gives up on
    /// the 7th try after at most ~16 s of waiting, well inside SQS visibility and ECS stop timeouts.
    /// A blob transfer gives up after 12 failed steps, having waited at most ~64 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            transfer_retries: 12,
        }
    }
}

impl RetryPolicy {
    /// The same shape with millisecond waits, for tests.
    pub fn fast() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
            transfer_retries: 12,
        }
    }

    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            transfer_retries: 0,
            ..Self::fast()
        }
    }

    fn backoff(&self, times: usize) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(times)
    }

    /// The backoff ceilings of one blob transfer's shared budget, for [`Self::wait_or_give_up`].
    pub fn transfer_backoff(&self) -> impl Iterator<Item = Duration> + Send {
        self.backoff(self.transfer_retries).build()
    }

    /// After a failed step of a multi-step operation: a permanent error, or an exhausted
    /// `budget`, is returned; otherwise waits (the server's `Retry-After`, else full jitter below
    /// the next ceiling) so the caller can try again.
    pub async fn wait_or_give_up<E>(
        &self,
        budget: &mut impl Iterator<Item = Duration>,
        e: E,
    ) -> Result<(), E>
    where
        E: Transient + std::fmt::Display,
    {
        if !e.is_transient() {
            return Err(e);
        }
        let Some(ceiling) = budget.next() else {
            return Err(e);
        };
        let wait = self.delay(e.retry_after(), ceiling);
        tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The wait before the next try: the server's `Retry-After` (capped) if it sent one, else a
    /// full-jitter draw below the computed exponential ceiling.
    pub fn delay(&self, retry_after: Option<Duration>, ceiling: Duration) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => ceiling.mul_f64(fastrand::f64()),
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or retries run out.
    pub async fn run<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, E>
    where
        E: Transient + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        op.retry(self.backoff(self.max_retries))
            .sleep(tokio::time::sleep)
            .when(|e: &E| e.is_transient())
            .adjust(|e: &E, ceiling| ceiling.map(|c| self.delay(e.retry_after(), c)))
            .notify(|e: &E, wait| tracing::debug!(what, error = %e, wait_ms = wait.as_millis() as u64, "retrying"))
            .await
    }
}

/// An error that knows whether trying again may help.
pub trait Transient {
    /// Whether the same operation may succeed later.
    fn is_transient(&self) -> bool;
    /// How long the other side asked us to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e{}", self.0)
        }
    }
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_limit_and_permanent_ones_are_not() {
        let tries = AtomicUsize::new(0);
        let r: Result<(), E> = RetryPolicy::fast()
            .run("t", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(E(true))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 7);

        tries.store(0, Ordering::SeqCst);
        let r: Result<(), E> = RetryPolicy::fast()
            .run("t", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(E(false))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retry_after_wins_but_is_capped_and_jitter_stays_below_the_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(Some(Duration::from_secs(3)), Duration::from_millis(1)),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(Some(Duration::from_secs(3600)), Duration::ZERO),
            Duration::from_secs(60)
        );
        for _ in 0..100 {
            assert!(p.delay(None, Duration::from_secs(2)) <= Duration::from_secs(2));
        }
    }
}
