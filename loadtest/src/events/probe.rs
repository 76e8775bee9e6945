//! What both paths share: pushing an image and sending its push event, polling the destination
//! until the tag holds the digest, the consumer process (function or worker) and its log.

use super::{EventLatency, EventPath, ECR_SOURCE, LIMIT};
use crate::stack::{Endpoint, Stack};
use anyhow::{bail, Context};
use ecr_sync::fleet::queue::Queue;
use ecr_sync_testkit::events::ecr_push_event;
use ecr_sync_testkit::seed;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// An event sent: its image, and when.
pub(super) struct Sent {
    pub repo: &'static str,
    pub tag: String,
    pub digest: String,
    pub body: String,
    pub at: Instant,
    pub wall: SystemTime,
}

/// Pushes image `i` of `path` (tag `e{i}`, one 5,000-byte layer of noise no other image has)
/// and sends its push event to `queue`.
pub(super) async fn push_and_send(
    stack: &Stack,
    queue: &Queue,
    path: EventPath,
    i: usize,
) -> anyhow::Result<Sent> {
    let repo = path.repo();
    let tag = format!("e{i}");
    let noise = match path {
        EventPath::Lambda => 1_000_000,
        EventPath::WarmWorker => 2_000_000,
    } + i as u64;
    let layer = seed::noise(noise, 5000);
    let pushed = stack
        .source
        .seeder()
        .image(repo, Some(&tag), vec![layer], &[], ("linux", "amd64"))
        .await
        .with_context(|| format!("cannot push {repo}:{tag}"))?;
    let body = ecr_push_event(repo, &tag, &pushed.digest, &format!("loadtest-{repo}-{i}"));
    let (at, wall) = (Instant::now(), SystemTime::now());
    queue
        .send(&body, &[])
        .await
        .with_context(|| format!("cannot send the push event of {repo}:{tag}"))?;
    Ok(Sent {
        repo,
        tag,
        digest: pushed.digest,
        body,
        at,
        wall,
    })
}

/// The local destination registry, reached directly.
pub(super) fn destination(stack: &Stack) -> anyhow::Result<Endpoint> {
    let local = stack.local().context("the local stack")?;
    Ok(Endpoint::plain(local.dst.host(), local.dst.url()))
}

/// Polls `dst` every `poll` until `sent`'s tag holds its digest, failing early if `consumer`
/// exits; returns the event's timings.
pub(super) async fn until_copied(
    stack: &Stack,
    dst: &Endpoint,
    sent: &Sent,
    poll: Duration,
    consumer: &Consumer,
) -> anyhow::Result<EventLatency> {
    let mut missing = sent.at;
    let mut refused = Vec::new();
    loop {
        let asked = Instant::now();
        match dst.digest(sent.repo, &sent.tag).await {
            Ok(Some(d)) if d == sent.digest => {
                return Ok(EventLatency {
                    tag: sent.tag.clone(),
                    digest: sent.digest.clone(),
                    latency_ms: ms(Instant::now() - sent.at),
                    missing_ms: ms(missing - sent.at),
                    pickup_ms: None,
                    accepted_ms: None,
                    refused_reads: refused.len() as u64,
                });
            }
            Ok(_) => {}
            // See `EventLatency::refused_reads`.
            Err(e) => refused.push(format!("{e:#}")),
        }
        missing = asked;
        consumer.running()?;
        if sent.at.elapsed() > LIMIT {
            bail!(
                "{}:{} was not copied within {} s of its push event ({} reads of the tag refused, the last: {}); the logs say:\n{}",
                sent.repo,
                sent.tag,
                LIMIT.as_secs(),
                refused.len(),
                refused.last().map_or("none", String::as_str),
                stack.log_lines_about(&format!("{}:{}", sent.repo, sent.tag))
            );
        }
        tokio::time::sleep(poll).await;
    }
}

/// Checks `done` every `every` until it holds, for at most [`LIMIT`]; the error names `what`
/// and adds `why()`.
pub(super) async fn until(
    what: &str,
    every: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
    why: impl Fn() -> String,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > LIMIT {
            bail!("waited {} s for {what}: {}", LIMIT.as_secs(), why());
        }
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// The function or the warm worker: an `ecr-sync-worker` process with its text log in the
/// stack's directory; killed when dropped.
pub(super) struct Consumer {
    name: &'static str,
    /// Behind a lock so that checking on it needs no exclusive borrow.
    child: Mutex<Child>,
    log: PathBuf,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Consumer {
    /// Starts `ecr-sync-worker` with the stack's environment, AWS reached directly at moto
    /// (not through the counting proxy), text logs into `log`; `setup` adds arguments and
    /// environment.
    pub fn start(
        stack: &Stack,
        name: &'static str,
        log: &str,
        setup: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Consumer> {
        let local = stack.local().context("the local stack")?;
        let log = stack.dir.path().join(log);
        let mut command = stack.command("ecr-sync-worker");
        command
            .envs(local.moto.env())
            .env("ECR_SYNC_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        setup(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start ecr-sync-worker as the {name}"))?;
        Ok(Consumer {
            name,
            child: Mutex::new(child),
            log,
        })
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for an error.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// An error if it has exited (with how, and the end of its log).
    pub fn running(&self) -> anyhow::Result<()> {
        let exited = self.child.lock().unwrap().try_wait()?;
        if let Some(status) = exited {
            bail!(
                "the {} exited ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }
}

/// When the consumer logged `push event accepted` for `repo:tag` (the first time), from the
/// RFC 3339 timestamp that starts each text log line.
pub(super) fn accepted_at(log: &str, repo: &str, tag: &str) -> Option<SystemTime> {
    let source = format!("source={ECR_SOURCE}/{repo}:{tag}");
    let line = log
        .lines()
        .find(|l| l.contains("push event accepted") && l.split_whitespace().any(|w| w == source))?;
    let stamp = line.split_whitespace().next()?;
    let at =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// A duration in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
