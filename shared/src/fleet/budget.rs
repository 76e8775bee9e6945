//! Sharing a registry's manifest PUT budget among the fleet's workers.
//!
//! ECR's PutImage quota (10 per second per account and region by default) is one bucket for
//! every writer. Pacing on 429s alone (AIMD, [`crate::registry`]'s pacing) lets N workers
//! overshoot it together: each learns of the quota only from its own 429s, and each starts
//! unpaced. So the workers split the configured budget (`manifest_puts_per_second`) through
//! the ledger, and pace within their share from their first request; AIMD stays on below the
//! share for the writers the budget does not know about.
//!
//! Each worker that PUTs manifests holds a lease on the budget's ledger item ([`Lease`]):
//! renewed every [`RENEW`] while it keeps asking, withdrawn when it has asked nothing for
//! [`IDLE`], lapsing after [`LEASE`] if the worker dies. Every [`TICK`] it reads the leases
//! (one strongly consistent GetItem, a read: no write) and takes its max-min fair share
//! ([`fair_share`]): a worker that asks for less than an equal split (its jobs are busy moving
//! layers) states how much it wants and leaves the rest to the others. Writes cost one per
//! worker per ten seconds while it writes manifests — at the quota's 10 jobs a second, four
//! workers add 0.04 writes per job. When the ledger cannot be read, the last share stands.

use super::ledger::{FleetLedger, Lease};
use crate::registries::Budgets;
use crate::registry::Budget;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a worker looks at the others' leases.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(20);
/// How often a lease is renewed.
pub const RENEW: Duration = Duration::from_secs(10);
/// A worker that has asked for no slot this long withdraws its lease.
pub const IDLE: Duration = Duration::from_secs(15);
/// The span a worker's demand is measured over.
const DEMAND_WINDOW: Duration = Duration::from_secs(5);
/// A worker using at least this share of its ceiling wants all it can get.
const SATURATED: f64 = 0.8;
/// Headroom over what a worker used, in the want it states.
const HEADROOM: f64 = 1.5;
/// The least a worker wants while it writes at all.
const MIN_WANT: f64 = 0.5;
/// A stated want is rewritten when the demand moves by more than this share of it.
const WANT_CHANGE: f64 = 0.3;
/// Lapsed leases older than this are removed by the next write.
const LAPSED: Duration = Duration::from_secs(60);
/// The kind of request the budget is for, in the ledger's key.
const KIND: &str = "manifest-put";

/// The share of `total` the worker wanting `mine` gets when the others want `others`
/// (`None`: as much as they get): max-min fairness — the total is split evenly, and what a
/// worker wants less than its split goes to the rest in turn.
pub fn fair_share(total: f64, mine: Option<f64>, others: &[Option<f64>]) -> f64 {
    let mut wants: Vec<f64> = others
        .iter()
        .chain(std::iter::once(&mine))
        .map(|w| w.unwrap_or(f64::INFINITY))
        .collect();
    wants.sort_by(f64::total_cmp);
    let my_want = mine.unwrap_or(f64::INFINITY);
    let mut left = total;
    let count = wants.len();
    for (i, want) in wants.iter().enumerate() {
        let even = left / (count - i) as f64;
        if *want >= even {
            // Everyone from here on (me included) wants at least an even split of what is left.
            return even.min(my_want);
        }
        left -= want;
    }
    my_want.min(total)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// This worker's view of one budget.
#[derive(Default)]
struct Share {
    /// Slots asked for per tick, over the demand window.
    asked: VecDeque<(Instant, u64)>,
    /// The last time a slot was asked for.
    last_ask: Option<Instant>,
    /// The lease as last written (`until` in epoch ms, want).
    written: Option<(u64, Option<f64>)>,
    /// Leases seen lapsed, to remove at the next write.
    lapsed: Vec<String>,
}

impl Share {
    fn note(&mut self, asked: u64, now: Instant) {
        if asked > 0 {
            self.last_ask = Some(now);
        }
        self.asked.push_back((now, asked));
        while self
            .asked
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > DEMAND_WINDOW)
        {
            self.asked.pop_front();
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.last_ask.is_none_or(|t| now.duration_since(t) >= IDLE)
    }

    /// The rate this worker wants: all it can get while it uses most of its ceiling (or has
    /// not been measured over a whole window yet), else what it used with headroom.
    fn want(&self, ceiling: f64, now: Instant) -> Option<f64> {
        let first = self.asked.front()?.0;
        let span = now.duration_since(first).as_secs_f64();
        if span < DEMAND_WINDOW.as_secs_f64() - TICK.as_secs_f64() {
            return None;
        }
        // The first entry's asks fell before the span began.
        let asked: u64 = self.asked.iter().skip(1).map(|(_, n)| n).sum();
        let used = asked as f64 / span;
        (used < ceiling * SATURATED).then(|| (used * HEADROOM).max(MIN_WANT))
    }

    fn must_write(&self, want: Option<f64>, now_ms: u64) -> bool {
        let Some((until, written)) = self.written else {
            return true;
        };
        let renew_at = until.saturating_sub((LEASE - RENEW).as_millis() as u64);
        let moved = match (written, want) {
            (None, None) => false,
            (Some(a), Some(b)) => (a - b).abs() > a * WANT_CHANGE,
            _ => true,
        };
        now_ms >= renew_at || moved
    }
}

/// Keeps this worker's share of every budget in `budgets` sized against the other workers'
/// leases in the ledger, until `stop` turns true; then withdraws its leases.
pub async fn share(
    ledger: FleetLedger,
    budgets: Arc<Budgets>,
    worker: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut shares: HashMap<String, Share> = HashMap::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = budgets.made.notified() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        for (host, budget) in budgets.all() {
            let share = shares.entry(host.clone()).or_default();
            share.note(budget.take_asked(), now);
            let result = size(&ledger, &worker, &host, &budget, share, now).await;
            match (result, failing) {
                (Ok(()), true) => {
                    failing = false;
                    tracing::info!(registry = %host, "reading the manifest PUT budget's leases again");
                }
                (Err(e), false) => {
                    failing = true;
                    tracing::warn!(registry = %host, error = %e, share = budget.ceiling(), "cannot read the manifest PUT budget's leases; keeping the last share");
                }
                _ => {}
            }
        }
    }
    for (host, share) in shares {
        if share.written.is_some() {
            if let Err(e) = withdraw(&ledger, &worker, &host).await {
                tracing::warn!(registry = %host, error = %e, "could not withdraw the budget lease; it lapses by itself");
            }
        }
    }
}

/// Removes this worker's lease on `host`'s budget, leaving its share to the others at once.
async fn withdraw(
    ledger: &FleetLedger,
    worker: &str,
    host: &str,
) -> Result<(), super::ledger::TableError> {
    let gone = Lease {
        worker: worker.to_string(),
        until: 0,
        want: None,
    };
    ledger.write_budget_lease(host, KIND, &gone, &[]).await?;
    Ok(())
}

/// One tick for one budget: renew, withdraw or read the leases, and set the ceiling.
async fn size(
    ledger: &FleetLedger,
    worker: &str,
    host: &str,
    budget: &Budget,
    share: &mut Share,
    now: Instant,
) -> Result<(), super::ledger::TableError> {
    let now_ms = unix_millis();
    if share.idle(now) {
        if share.written.is_some() {
            withdraw(ledger, worker, host).await?;
            share.written = None;
        }
        return Ok(());
    }
    let want = share.want(budget.ceiling(), now);
    let leases = if share.must_write(want, now_ms) {
        let lease = Lease {
            worker: worker.to_string(),
            until: now_ms + LEASE.as_millis() as u64,
            want,
        };
        let leases = ledger
            .write_budget_lease(host, KIND, &lease, &share.lapsed)
            .await?;
        share.written = Some((lease.until, want));
        leases
    } else {
        ledger.budget_leases(host, KIND).await?
    };
    let lapsed_before = now_ms.saturating_sub(LAPSED.as_millis() as u64);
    share.lapsed = leases
        .iter()
        .filter(|l| l.until < lapsed_before)
        .map(|l| l.worker.clone())
        .collect();
    let others: Vec<Option<f64>> = leases
        .iter()
        .filter(|l| l.worker != worker && l.until > now_ms)
        .map(|l| l.want)
        .collect();
    let ceiling = fair_share(budget.total(), want, &others);
    if (ceiling - budget.ceiling()).abs() > 0.01 {
        tracing::debug!(registry = %host, workers = others.len() + 1, ceiling, "manifest PUT share");
    }
    budget.set_ceiling(ceiling);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_split_evenly_and_pass_on_what_a_worker_does_not_want() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // Alone: the whole budget, or what it wants.
        assert!(close(fair_share(10.0, None, &[]), 10.0));
        assert!(close(fair_share(10.0, Some(3.0), &[]), 3.0));
        // Four saturated workers: a quarter each.
        assert!(close(fair_share(10.0, None, &[None, None, None]), 2.5));
        // One wants 1: the other three split the 9 left.
        assert!(close(fair_share(10.0, None, &[Some(1.0), None, None]), 3.0));
        assert!(close(fair_share(10.0, Some(1.0), &[None, None, None]), 1.0));
        // Wants above an even split count as saturated.
        assert!(close(fair_share(10.0, Some(8.0), &[Some(9.0)]), 5.0));
        // Everyone wants less than the budget holds: each gets its want.
        assert!(close(fair_share(10.0, Some(2.0), &[Some(3.0)]), 2.0));
        // The shares of all never exceed the total.
        let wants = [Some(0.5), None, Some(4.0), None, Some(2.0)];
        let total: f64 = (0..wants.len())
            .map(|i| {
                let others: Vec<_> = wants
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, w)| *w)
                    .collect();
                fair_share(10.0, wants[i], &others)
            })
            .sum();
        assert!(close(total, 10.0), "{total}");
    }

    #[test]
    fn a_worker_wants_all_while_it_uses_its_ceiling_and_its_use_with_headroom_after() {
        let start = Instant::now();
        let mut s = Share::default();
        s.note(0, start);
        // Not measured over a window yet: as much as it gets.
        s.note(10, start + Duration::from_secs(1));
        assert_eq!(s.want(5.0, start + Duration::from_secs(1)), None);
        for i in 2..=5 {
            s.note(10, start + Duration::from_secs(i));
        }
        // 10 a second against a ceiling of 10: saturated.
        assert_eq!(s.want(10.0, start + Duration::from_secs(5)), None);
        // 10 a second against a ceiling of 20: wants 15.
        let want = s.want(20.0, start + Duration::from_secs(5)).unwrap();
        assert!((want - 15.0).abs() < 1e-9, "{want}");
        // Asking nothing for the idle span: idle.
        assert!(!s.idle(start + Duration::from_secs(6)));
        assert!(s.idle(start + Duration::from_secs(5) + IDLE));
    }

    #[test]
    fn a_lease_is_written_when_new_due_or_when_the_want_moves() {
        let mut s = Share::default();
        assert!(s.must_write(None, 1_000));
        s.written = Some((1_000 + LEASE.as_millis() as u64, Some(4.0)));
        assert!(!s.must_write(Some(4.5), 2_000));
        assert!(s.must_write(Some(6.0), 2_000));
        assert!(s.must_write(None, 2_000));
        assert!(s.must_write(Some(4.0), 1_000 + RENEW.as_millis() as u64));
    }
}
