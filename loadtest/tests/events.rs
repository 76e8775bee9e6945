//! `events` on the local stack with five events per path: every push reaches the destination
//! with its digest, by Lambda (the worker binary behind the Runtime API and the event source
//! mapping) and by the warm fleet worker, and each path reports its numbers. No timing is
//! asserted: the machine's speed is not the test's business.

use ecr_sync_loadtest::events::{markdown, run_events, EventPath, EventsOpts};
use ecr_sync_loadtest::stack::{bin_dir, Stack};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_copy_every_push_and_report_their_latencies() {
    let mut stack = Stack::start_local(bin_dir(None).unwrap()).await.unwrap();
    let opts = EventsOpts {
        events: 5,
        poll: Duration::from_millis(20),
    };
    let result = run_events(&mut stack, &opts).await.unwrap();
    let paths: Vec<EventPath> = result.paths.iter().map(|p| p.path).collect();
    assert_eq!(paths, [EventPath::Lambda, EventPath::WarmWorker]);
    for p in &result.paths {
        assert_eq!(p.each.len(), 5, "{p:?}");
        for e in &p.each {
            let at_destination = stack.destination.digest(p.path.repo(), &e.tag).await;
            assert_eq!(
                at_destination.unwrap().as_deref(),
                Some(e.digest.as_str()),
                "{e:?}"
            );
            assert!(e.latency_ms > 0.0 && e.missing_ms <= e.latency_ms, "{e:?}");
            assert!(
                e.accepted_ms.is_some(),
                "the consumer's log has the push: {e:?}"
            );
        }
        let tags: std::collections::BTreeSet<&str> =
            p.each.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags.len(), 5, "distinct tags: {p:?}");
        assert!(p.first_ms > 0.0 && p.p50_ms > 0.0, "{p:?}");
        assert!(p.p50_ms <= p.p95_ms && p.p95_ms <= p.max_ms, "{p:?}");
        assert!(p.accepted_ms.is_some() && p.copy_ms.is_some(), "{p:?}");
    }
    let lambda = &result.paths[0];
    assert!(lambda.init_ms.is_some_and(|ms| ms > 0.0), "{lambda:?}");
    assert!(
        lambda.each.iter().all(|e| e.pickup_ms.is_some()),
        "{lambda:?}"
    );
    let md = markdown(&result);
    assert!(
        md.contains("| lambda |") && md.contains("| warm worker |"),
        "{md}"
    );
    assert!(md.contains("cold start"), "{md}");
}
