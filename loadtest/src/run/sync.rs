//! `ecr-sync sync` as one measured run: one process plans and copies; its report gives the
//! counts, job times and the timeline.

use super::RunOpts;
use crate::report::{Percentiles, RunResult, Sample};
use crate::stack::{peak_rss_mib, Stack};
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

pub(super) async fn run_sync(stack: &Stack, opts: &RunOpts) -> anyhow::Result<RunResult> {
    let report = stack.dir.path().join("sync-report.json");
    let ledger = stack.dir.path().join("sync-ledger.db");
    let log = std::fs::File::create(stack.dir.path().join("sync.log"))?;
    let started = Instant::now();
    let mut child = stack
        .command("ecr-sync")
        .args(["sync", "--no-progress", "--config"])
        .arg(stack.config_path())
        .arg("--report")
        .arg(&report)
        .arg("--ledger")
        .arg(&ledger)
        .args(["--concurrency", &opts.concurrency.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start ecr-sync sync")?;
    let mut rss = 0f64;
    let mut timeline = vec![Sample::default()];
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(r) = peak_rss_mib(child.id()) {
            rss = rss.max(r);
        }
        if started.elapsed() > opts.timeout {
            child.kill()?;
            child.wait()?;
            bail!("sync did not finish in {:?}", opts.timeout);
        }
        tokio::time::sleep(opts.sample_every).await;
    };
    let wall_s = started.elapsed().as_secs_f64();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).with_context(|| {
        format!(
            "sync ({status}) wrote no report; see its log in {}",
            stack.dir.path().display()
        )
    })?)?;
    let count = |k: &str| r[k].as_u64().unwrap_or(0);
    let jobs_list = r["jobs"].as_array().cloned().unwrap_or_default();
    let mut latencies: Vec<f64> = jobs_list
        .iter()
        .filter_map(|j| j["duration_ms"].as_f64())
        .collect();
    let mut jobs = BTreeMap::new();
    for state in ["copied", "skipped", "failed"] {
        jobs.insert(state.to_string(), count(state));
    }
    let finished: Vec<f64> = jobs_list
        .iter()
        .filter_map(|j| j["finished_ms"].as_f64())
        .map(|ms| ms / 1000.0)
        .collect();
    timeline.extend(sync_timeline(
        &finished,
        opts.sample_every.as_secs_f64(),
        wall_s,
    ));
    if let Some(b) = r["peak_rss_bytes"].as_u64() {
        rss = rss.max(b as f64 / (1024.0 * 1024.0));
    }
    // The local stack counts the source's requests at its proxy; elsewhere `sync`'s own count
    // is what there is.
    let source = &stack.source.host;
    let (requests_per_tag, blob_requests) = match stack.local() {
        Some(_) => (None, None),
        None => (
            r["requests"][source]
                .as_u64()
                .map(|n| n as f64 / jobs_list.len().max(1) as f64),
            r["blob_requests"][source].as_u64(),
        ),
    };
    Ok(RunResult {
        requests_per_tag,
        blob_requests,
        workers: 1,
        wall_s,
        jobs,
        // Up-to-date tags are reported as skipped jobs; they cost no copy.
        jobs_emitted: count("copied") + count("failed"),
        mb_per_s: count("bytes") as f64 / 1e6 / wall_s.max(1e-9),
        latency_ms: Percentiles::of(&mut latencies),
        peak_rss_mib: BTreeMap::from([("sync".to_string(), rss)]),
        timeline,
        ..Default::default()
    })
}

/// A `sync` run's progress over time from when each job ended (seconds from the start): one
/// sample every `every` seconds until `wall_s`, then one at `wall_s`. The backlog is what had
/// not ended yet (`sync` plans while it copies, so it is counted against the final total).
pub fn sync_timeline(finished_s: &[f64], every: f64, wall_s: f64) -> Vec<Sample> {
    let mut ends = finished_s.to_vec();
    ends.sort_by(f64::total_cmp);
    let total = ends.len() as u64;
    let at = |t: f64| {
        let done = ends.partition_point(|e| *e <= t) as u64;
        Sample {
            t_s: t,
            done,
            backlog: total - done,
        }
    };
    let steps = if every > 0.0 {
        (wall_s / every).floor() as usize
    } else {
        0
    };
    let mut samples: Vec<Sample> = (1..=steps).map(|i| at(i as f64 * every)).collect();
    if samples.last().is_none_or(|s| s.t_s < wall_s) {
        samples.push(Sample {
            done: total,
            backlog: 0,
            ..at(wall_s)
        });
    }
    samples
}
#[cfg(test)]
mod tests {
    use super::sync_timeline;

    #[test]
    fn a_sync_timeline_counts_jobs_ended_by_each_sample() {
        // Jobs ended at 0.2, 0.4, 1.1 and 2.3 s of a 2.4 s run, sampled every second.
        let t = sync_timeline(&[1.1, 0.2, 2.3, 0.4], 1.0, 2.4);
        let points: Vec<(f64, u64, u64)> = t.iter().map(|s| (s.t_s, s.done, s.backlog)).collect();
        assert_eq!(points, [(1.0, 2, 2), (2.0, 3, 1), (2.4, 4, 0)]);
        // A warm run that ended no job has one sample, at the end.
        let warm = sync_timeline(&[], 0.5, 0.3);
        assert_eq!(warm.len(), 1);
        assert_eq!((warm[0].done, warm[0].backlog), (0, 0));
    }
}
