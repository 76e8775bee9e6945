//! Throttling: the host gate a `Retry-After` closes, and the pacing of the requests a
//! registry throttles without saying for how long.
//!
//! Pacing: ECR meters each API action on its own (PutImage 10 per second per account and
//! region by default, InitiateLayerUpload 100, UploadLayerPart 500, …) and answers `429 TOOMANYREQUESTS` with no
//! `Retry-After`. Retrying such a 429 on a backoff timer storms the quota; instead each kind of
//! request gets its own pace:
//! - unlimited until the registry first throttles it;
//! - then a rate: 70 % of what the registry let through in the last second, cut to 70 % again
//!   on each later 429 (429s of requests already in flight within the same second count once),
//!   and raised by 5 % of the rate at the last cut for each busy second without one (a second
//!   in which requests kept the pace full; an idle pace learns nothing about the quota and is
//!   not raised) — additive increase, multiplicative decrease (AIMD), as TCP shares a link.
//!
//! Requests wait their turn in place (a job holds its slot and its message, it does not fail).
//! A cut to 70 % (not 50 %) keeps the average close to the quota: the sawtooth runs between
//! 70 % and 100 % of it.
//!
//! A kind of request may also have a [`Budget`]: a known quota (manifest PUTs: the
//! destination's `manifest_puts_per_second`, 10 for ECR hosts), or this process's share of it
//! when processes share one (the fleet's workers, [`crate::fleet::budget`]). With a budget the
//! pace starts at the budget from the first request, so nothing storms the quota before the
//! first 429, and the AIMD rate above stays below it: the budget keeps a fleet's workers
//! within the quota together, AIMD catches the writers the budget does not know about (CI
//! pipelines pushing into the same account, a quota lowered by AWS). AIMD alone let four
//! workers overshoot together (16.6 % of their PutImage calls throttled in `bench-ecr.sh`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Shared backoff for one host: after a 429/503 every request to the host waits until the gate
/// opens, so concurrent jobs slow down together instead of each hammering on its own schedule.
#[derive(Default)]
pub(super) struct HostGate(Mutex<Option<Instant>>);

impl HostGate {
    pub(super) async fn wait(&self) {
        let until = *self.0.lock().unwrap();
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }

    pub(super) fn close_for(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut g = self.0.lock().unwrap();
        if g.is_none_or(|cur| cur < t) {
            *g = Some(t);
        }
    }
}

/// The share of the rate kept on a 429.
const CUT: f64 = 0.7;
/// The share of the rate at the last cut added back per busy second without a 429. Measured
/// with `scripts/bench-ecr.sh` (600 tags, PutImage 10/s), this linear raise gave the best
/// times: `sync` 1.18x the quota's ideal with 1.6 % of PutImage calls throttled, four workers
/// 1.35x with 16.6 %. Tried and dropped: 2.5 % (four workers 4.6 % throttled, but 1.63x and
/// `sync` 1.42x), a CUBIC-like climb (fast to the last peak, then a probe doubling each second
/// past it: 21 % and 69 % throttled — a registry's burst allowance hides the quota and the
/// probe overshot it far; doubling every ten seconds: 1.43x and 10.6 %).
const RAISE: f64 = 0.05;
/// The slowest pace: one request every two seconds.
const MIN_RATE: f64 = 0.5;
/// The smallest additive increase per second.
const MIN_STEP: f64 = 0.25;
/// 429s closer than this to the last cut are answers to requests sent before it.
const SAME_EPISODE: Duration = Duration::from_secs(1);

/// The kind of request a manifest PUT is (ECR's `PutImage`).
pub const MANIFEST_PUT: &str = "PUT manifest";

/// The lowest ceiling a budget sets (a share of a quota split among very many processes).
const MIN_CEILING: f64 = 0.05;

/// A ceiling on the rate of one kind of request to one registry: a configured quota, or this
/// process's share of it. It outlives registry clients (a config reload makes new ones), can
/// change while requests wait (the share of a fleet's budget moves as workers come and go),
/// and counts the requests that asked for a slot (the demand a share is sized by).
#[derive(Debug)]
pub struct Budget {
    /// The quota, requests per second (`f64` bits).
    total: AtomicU64,
    /// What this process may use, requests per second (`f64` bits).
    ceiling: AtomicU64,
    /// Requests that asked for a slot since [`Budget::take_asked`] last looked.
    asked: AtomicU64,
}

impl Budget {
    /// A budget of `total` requests per second, of which this process may use `ceiling` until
    /// told otherwise.
    pub fn new(total: f64, ceiling: f64) -> Budget {
        let b = Budget {
            total: AtomicU64::new(total.to_bits()),
            ceiling: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        };
        b.set_ceiling(ceiling);
        b
    }

    /// The quota.
    pub fn total(&self) -> f64 {
        f64::from_bits(self.total.load(Ordering::Relaxed))
    }

    /// Changes the quota (a config reload); the ceiling follows only where the caller says.
    pub fn set_total(&self, total: f64) {
        self.total.store(total.to_bits(), Ordering::Relaxed);
    }

    /// What this process may use now.
    pub fn ceiling(&self) -> f64 {
        f64::from_bits(self.ceiling.load(Ordering::Relaxed))
    }

    /// Sets what this process may use (at least [`MIN_CEILING`], at most the quota).
    pub fn set_ceiling(&self, rate: f64) {
        let rate = rate.min(self.total()).max(MIN_CEILING);
        self.ceiling.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The requests that asked for a slot since the last call.
    pub fn take_asked(&self) -> u64 {
        self.asked.swap(0, Ordering::Relaxed)
    }

    /// Counts one request asking for a slot; returns the ceiling it goes under.
    pub fn ask(&self) -> f64 {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.ceiling()
    }
}

/// The pace of each kind of request to one registry, by operation name (`PUT manifest`, …),
/// and the budgets some kinds have.
#[derive(Default)]
pub(crate) struct Pacers {
    paces: Mutex<HashMap<&'static str, Pace>>,
    budgets: HashMap<&'static str, Arc<Budget>>,
}

#[derive(Default)]
struct Pace {
    /// Requests per second once throttled; `None` until then.
    rate: Option<f64>,
    /// The earliest time the next request may go.
    next: Option<Instant>,
    /// Times of answers that were not 429 within the last second (since the last cut): the
    /// rate the registry allows, when it throttles.
    recent: VecDeque<Instant>,
    last_cut: Option<Instant>,
    /// Cuts so far: slots booked before the latest one are booked again.
    cuts: u64,
    last_raise: Option<Instant>,
    /// Additive increase per busy second.
    step: f64,
    /// The budget's ceiling at the last booking.
    ceiling: Option<f64>,
}

impl Pace {
    /// When a request sent now may go (`None`: at once), booking that slot; `ceiling` is the
    /// kind's budget, if it has one.
    fn book(&mut self, now: Instant, ceiling: Option<f64>) -> Option<Instant> {
        self.follow(ceiling);
        if let (Some(mut rate), Some(raised)) = (self.rate, self.last_raise) {
            let seconds = now.duration_since(raised).as_secs();
            if seconds > 0 {
                // Busy: the slots booked so far reach into the last second.
                let busy = self.next.is_some_and(|n| n + Duration::from_secs(1) >= now);
                if busy {
                    rate += self.step * seconds as f64;
                    self.rate = Some(ceiling.map_or(rate, |c| rate.min(c)));
                }
                self.last_raise = Some(raised + Duration::from_secs(seconds));
            }
        }
        let rate = self.effective(ceiling)?;
        let slot = self.next.map_or(now, |n| n.max(now));
        self.next = Some(slot + Duration::from_secs_f64(1.0 / rate));
        (slot > now).then_some(slot)
    }

    /// The registry let a request through now.
    fn passed(&mut self, now: Instant) {
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
    }

    /// The rate requests go at: the AIMD rate under the ceiling; `None` is unpaced.
    fn effective(&self, ceiling: Option<f64>) -> Option<f64> {
        match (self.rate, ceiling) {
            (Some(r), Some(c)) => Some(r.min(c)),
            (r, c) => r.or(c),
        }
    }

    /// A ceiling that moved (this process's share of a shared budget changed) carries the
    /// AIMD rate with it, which keeps its place under the ceiling: a worker whose share
    /// doubles when others leave does not climb to it one step a second.
    fn follow(&mut self, ceiling: Option<f64>) {
        if let (Some(new), Some(old), Some(rate)) = (ceiling, self.ceiling, self.rate) {
            if new != old {
                self.rate = Some((rate * new / old).min(new));
                self.step *= new / old;
            }
        }
        self.ceiling = ceiling;
    }

    /// The registry throttled a request now.
    fn cut(&mut self, now: Instant) {
        if self
            .last_cut
            .is_some_and(|t| now.duration_since(t) < SAME_EPISODE)
        {
            return;
        }
        // What went through in the last second is what the registry allows us now; a pace
        // (or a budget) set above it — a quota lower than configured, another writer in the
        // account — drops to it at the first cut instead of one cut a second.
        let passed = self.recent.len() as f64;
        let current = self
            .effective(self.ceiling)
            .map_or(passed, |r| r.min(passed));
        let rate = (current * CUT).max(MIN_RATE);
        self.rate = Some(rate);
        self.step = (rate * RAISE).max(MIN_STEP);
        self.last_cut = Some(now);
        self.cuts += 1;
        self.last_raise = Some(now);
        // Every request waiting books again at the new pace, from one interval after now.
        self.next = Some(now + Duration::from_secs_f64(1.0 / rate));
        self.recent.clear();
    }
}

impl Pacers {
    /// Paces with a budget for some kinds of request.
    pub(crate) fn new(budgets: HashMap<&'static str, Arc<Budget>>) -> Pacers {
        Pacers {
            paces: Mutex::default(),
            budgets,
        }
    }

    /// Waits until a request of kind `op` may go.
    pub(crate) async fn wait(&self, op: &'static str) {
        let ceiling = self.budgets.get(op).map(|b| b.ask());
        loop {
            let (slot, cuts) = {
                let mut paces = self.paces.lock().unwrap();
                let pace = paces.entry(op).or_default();
                (pace.book(Instant::now(), ceiling), pace.cuts)
            };
            let Some(at) = slot else { return };
            tokio::time::sleep_until(at).await;
            // A cut while this request waited: its slot belonged to the old pace (with many
            // jobs queued, seconds of it), so it books again at the new one.
            if self.paces.lock().unwrap().get(op).map(|p| p.cuts) == Some(cuts) {
                return;
            }
        }
    }

    /// The registry answered a request of kind `op` with anything but a 429 (or the answer was
    /// lost: the request reached it all the same, as far as a quota is concerned).
    pub(crate) fn passed(&self, op: &'static str) {
        self.paces
            .lock()
            .unwrap()
            .entry(op)
            .or_default()
            .passed(Instant::now());
    }

    /// The registry throttled a request of kind `op` and did not say for how long.
    pub(crate) fn throttled(&self, op: &'static str) {
        let mut paces = self.paces.lock().unwrap();
        let pace = paces.entry(op).or_default();
        pace.cut(Instant::now());
        tracing::debug!(
            op,
            rate = pace.rate.unwrap_or_default(),
            "throttled without Retry-After; pacing"
        );
    }

    /// The current pace of kind `op` (requests per second), once throttled.
    #[cfg(test)]
    fn rate(&self, op: &'static str) -> Option<f64> {
        self.paces.lock().unwrap().get(op).and_then(|p| p.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` requests of kind `PUT manifest` that the registry lets through, one after
    /// another; returns how long they took.
    async fn go(p: &Pacers, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            p.wait("PUT manifest").await;
            p.passed("PUT manifest");
        }
        Instant::now().duration_since(start)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_go_at_once_until_throttled_then_at_a_pace_that_cuts_and_recovers() {
        let p = Pacers::default();
        let start = Instant::now();
        go(&p, 20).await;
        for _ in 0..10 {
            p.wait("PUT manifest").await;
        }
        assert_eq!(Instant::now(), start, "unthrottled requests do not wait");
        // 20 went through within the last second (10 more are in flight); the first 429
        // paces at 70 % of what went through.
        p.throttled("PUT manifest");
        assert_eq!(p.rate("PUT manifest"), Some(14.0));
        // The other kinds of request are not slowed.
        p.wait("HEAD blob").await;
        assert_eq!(Instant::now(), start);
        // More 429s from the same burst count once.
        p.throttled("PUT manifest");
        p.throttled("PUT manifest");
        assert_eq!(p.rate("PUT manifest"), Some(14.0));
        // Paced: 14 requests take about a second.
        let took = go(&p, 14).await;
        assert!(
            took >= Duration::from_millis(950) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
        // A second episode, a second after the first, cuts again.
        p.throttled("PUT manifest");
        let cut = p.rate("PUT manifest").unwrap();
        assert!((cut - 14.0 * 0.7).abs() < 0.01, "{cut}");
        // Ten busy seconds raise it by 5 % of the cut rate each.
        let busy = Instant::now();
        while Instant::now().duration_since(busy) < Duration::from_millis(10_050) {
            go(&p, 1).await;
        }
        let raised = p.rate("PUT manifest").unwrap();
        assert!((raised - cut * 1.5).abs() < 0.01, "{cut} -> {raised}");
        // An idle hour raises nothing: it says nothing about the quota.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        p.wait("PUT manifest").await;
        assert_eq!(p.rate("PUT manifest"), Some(raised));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_429_seen_after_few_answers_does_not_trap_the_pace_low() {
        // One answer in the last second (the others lost), then a 429: a pace of 0.7/s that
        // must climb back while requests keep it busy (a benchmark once sat at 2/s for five
        // minutes under a quota of 10/s).
        let p = Pacers::default();
        p.passed("PUT manifest");
        p.throttled("PUT manifest");
        let start = Instant::now();
        while Instant::now().duration_since(start) < Duration::from_secs(40) {
            go(&p, 1).await;
        }
        let rate = p.rate("PUT manifest").unwrap();
        assert!(rate > 10.0, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_paces_from_the_first_request_and_aimd_stays_below_it() {
        let budget = Arc::new(Budget::new(10.0, 10.0));
        let p = Pacers::new(HashMap::from([("PUT manifest", budget.clone())]));
        // No burst before the first 429: 30 requests at 10 a second.
        let took = go(&p, 31).await;
        assert!(took >= Duration::from_millis(2990), "{took:?}");
        assert_eq!(budget.take_asked(), 31);
        assert_eq!(budget.take_asked(), 0);
        // Other kinds of request have no budget.
        let other = Instant::now();
        for _ in 0..50 {
            p.wait("HEAD blob").await;
        }
        assert_eq!(Instant::now(), other);
        // A writer the budget does not know about: a 429 cuts below the budget...
        p.throttled("PUT manifest");
        assert_eq!(p.rate("PUT manifest"), Some(7.0));
        // ...and busy seconds raise it back to the budget, never past it.
        go(&p, 600).await;
        assert_eq!(p.rate("PUT manifest"), Some(10.0));
        // The share shrinks (others joined): the pace follows at once.
        budget.set_ceiling(2.5);
        let took = go(&p, 11).await;
        assert!(took >= Duration::from_millis(3990), "{took:?}");
        // A cut at the share, then the share grows back: the cut rate keeps its place.
        p.throttled("PUT manifest");
        budget.set_ceiling(10.0);
        p.wait("PUT manifest").await;
        let rate = p.rate("PUT manifest").unwrap();
        assert!((rate - 7.0).abs() < 0.01, "{rate}");
        // A share is never above the quota.
        budget.set_ceiling(50.0);
        assert_eq!(budget.ceiling(), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_queued_at_the_old_pace_follow_a_cut_at_once() {
        use std::sync::atomic::AtomicUsize;
        let p = Arc::new(Pacers::default());
        go(&p, 20).await;
        p.throttled("PUT manifest");
        assert_eq!(p.rate("PUT manifest"), Some(14.0));
        // 28 jobs queue up: two seconds of slots at 14 a second.
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..28 {
            let (p, done) = (p.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                go(&p, 1).await;
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        tokio::time::sleep(Duration::from_millis(1010)).await;
        let before = done.load(Ordering::Relaxed);
        assert_eq!(before, 14);
        // A 429 now: the 14 still waiting go at 70 % of what passed, not in their old slots.
        p.throttled("PUT manifest");
        let rate = p.rate("PUT manifest").unwrap();
        assert!((rate - 9.8).abs() < 0.01, "{rate}");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let next_second = done.load(Ordering::Relaxed) - before;
        assert!(
            next_second <= 10,
            "{next_second} went in the second after the cut"
        );
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_never_drops_below_one_request_every_two_seconds() {
        let p = Pacers::default();
        for _ in 0..30 {
            p.throttled("PUT manifest");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let rate = p.rate("PUT manifest").unwrap();
        assert!(rate >= MIN_RATE, "{rate}");
    }
}
