//! The end-of-run check, independent of the ledger: every generated tag is read at the
//! destination and compared with the source digest; a missing tag is lost unless a
//! dead-lettered job explains it.

use crate::generate::Generated;
use crate::report::Verdict;
use crate::stack::Endpoint;
use futures_util::StreamExt;

/// A dead-lettered job, as the DLQ lists it.
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// `host/repo:tag` at the source.
    pub source: String,
    /// Error class.
    pub class: String,
    /// Reason.
    pub reason: String,
    /// The job's state in the ledger, if it has one.
    pub state: Option<String>,
    /// Its attempts in the ledger.
    pub attempts: u64,
}

/// What a dead letter is, in one line: SQS's redrive moves a message after `maxReceiveCount`
/// receives without the worker's class and reason; if the ledger says the job succeeded
/// anyway (another delivery copied it), the entry is noise for the DLQ alarm, not a loss.
fn explain(d: &DeadLetter) -> String {
    match d.state.as_deref() {
        Some("succeeded" | "skipped" | "superseded") => format!(
            "{}: redriven by SQS after the job {} (attempts {}); harmless",
            d.source,
            d.state.as_deref().unwrap_or_default(),
            d.attempts
        ),
        state => format!(
            "{}: {} ({}); ledger state {}",
            d.source,
            d.class,
            d.reason,
            state.unwrap_or("none")
        ),
    }
}

impl DeadLetter {
    /// Whether the job behind it ended well (the message is noise).
    pub fn harmless(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some("succeeded" | "skipped" | "superseded")
        )
    }
}

/// Reads every generated tag at `dst` (16 at a time) and sorts out what is missing or wrong; a
/// tag that cannot be read is reported stuck, with why. `ledger_agrees` is left for the
/// caller, which knows the ledger.
pub async fn verify(dst: &Endpoint, generated: &Generated, dead: &[DeadLetter]) -> Verdict {
    let found: Vec<anyhow::Result<Option<String>>> = futures_util::stream::iter(&generated.images)
        .map(|i| dst.digest(&i.repo, &i.tag))
        .buffered(16)
        .collect()
        .await;
    let mut v = Verdict {
        checked: generated.images.len() as u64,
        dead_lettered: dead.iter().map(explain).collect(),
        ..Default::default()
    };
    for (image, digest) in generated.images.iter().zip(found) {
        let name = format!("{}:{}", image.repo, image.tag);
        match digest {
            Err(e) => v.stuck.push(format!("{e:#}")),
            Ok(Some(d)) if d == image.digest => v.present += 1,
            Ok(Some(d)) => v
                .corrupt
                .push(format!("{name} holds {d}, not {}", image.digest)),
            Ok(None) => {
                let suffix = format!("/{name}");
                // A dead-lettered job explains a missing tag; a redriven message of a job
                // that succeeded does not.
                let explained = dead
                    .iter()
                    .any(|d| d.source.ends_with(&suffix) && !d.harmless());
                if !explained {
                    v.lost.push(name);
                }
            }
        }
    }
    v
}
