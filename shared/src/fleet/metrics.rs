//! CloudWatch embedded metric format (EMF): one JSON line per finished job on stdout. In ECS the
//! awslogs driver ships stdout to CloudWatch Logs, which turns these lines into metrics in the
//! `ecr-sync` namespace, so alarms and dashboards need no agent.
//!
//! Metrics, by `Outcome` (`succeeded`, `skipped`, `superseded`, `conflict`, `failed`, `dead`,
//! `released`): `Jobs` (count), `Bytes` (bytes), `JobDuration` (milliseconds).

use crate::vocab::JobEvent;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The CloudWatch namespace.
pub const NAMESPACE: &str = "ecr-sync";

/// The EMF line for one finished job.
pub fn job_line(
    outcome: JobEvent,
    bytes: u64,
    duration_ms: u64,
    run_id: &str,
    job_id: &str,
) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    serde_json::json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Outcome"]],
                "Metrics": [
                    {"Name": "Jobs", "Unit": "Count"},
                    {"Name": "Bytes", "Unit": "Bytes"},
                    {"Name": "JobDuration", "Unit": "Milliseconds"},
                ],
            }],
        },
        "Outcome": outcome.as_str(),
        "Jobs": 1,
        "Bytes": bytes,
        "JobDuration": duration_ms,
        "run_id": run_id,
        "job_id": job_id,
    })
    .to_string()
}

/// Writes the EMF line for one finished job to stdout.
pub fn emit_job(outcome: JobEvent, bytes: u64, duration_ms: u64, run_id: &str, job_id: &str) {
    let line = job_line(outcome, bytes, duration_ms, run_id, job_id);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_emf_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&job_line(JobEvent::Succeeded, 42, 7, "r", "j")).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"][0][0], "Outcome");
        for m in directive["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "{name} has no value");
        }
        assert_eq!(v["Bytes"], 42);
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
}
