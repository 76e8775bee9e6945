//! The live progress bar of `sync` on a terminal (stderr), drawn with `indicatif`:
//!
//! ```text
//! 12s [#########>---------------] 120/500 jobs, 2 failed, 1.2 GiB at 35.2 MiB/s, ETA 40s
//! ```
//!
//! Jobs planned grow while repositories are listed, so the bar's length (and the ETA, which
//! indicatif estimates from jobs done per second) is "what is known so far". Log lines (the
//! `warn` and `error` events shown while the bar is up) go through [`SyncBar::log_writer`], which
//! clears the bar, prints the line and draws the bar again below it.

use ecr_sync::sync::{human_bytes, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the counters are read into the bar. indicatif itself draws at most 20 times a second.
const REFRESH: Duration = Duration::from_millis(100);
/// Time constant of the byte rate's moving average: long enough that the rate does not jump with
/// every blob that completes, short enough to follow a change of pace within a few seconds.
const RATE_WINDOW: Duration = Duration::from_secs(3);
const TEMPLATE: &str = "{elapsed:>4} [{bar:25}] {pos}/{len} jobs, {msg}, ETA {eta}";

/// The bar. Created hidden (so log lines before the run starts print as plain lines), drawn from
/// [`SyncBar::start`] until [`BarTask::finish`].
#[derive(Clone)]
pub struct SyncBar {
    bar: ProgressBar,
}

impl Default for SyncBar {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncBar {
    /// A hidden bar; see [`SyncBar::start`].
    pub fn new() -> SyncBar {
        // No length until the first tags are selected: indicatif draws a zero-length bar full.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(TEMPLATE)
                .expect("the template is valid")
                .progress_chars("#>-"),
        );
        bar.set_message(stats(0, 0, 0.0));
        SyncBar { bar }
    }

    /// What tracing writes log lines to (see [`ecr_sync::console::init_logging_to`]): each line
    /// is printed with the bar suspended, so it lands above the bar, never through it.
    pub fn log_writer(&self) -> impl Fn() -> AboveBar + Send + Sync + 'static {
        let bar = self.bar.clone();
        move || AboveBar(bar.clone())
    }

    /// Shows the bar on stderr and keeps it in step with `progress` until the returned task is
    /// finished.
    pub fn start(&self, progress: Arc<Progress>) -> BarTask {
        let bar = self.bar.clone();
        bar.reset(); // elapsed time and ETA from now, not from when the config was being loaded
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut rate = ByteRate::new(Instant::now());
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                let bytes = progress.bytes.load(Ordering::Relaxed);
                let per_sec = rate.update(bytes, Instant::now());
                let planned = progress.planned.load(Ordering::Relaxed);
                if planned > 0 {
                    bar.set_length(planned);
                }
                bar.set_position(progress.done.load(Ordering::Relaxed));
                bar.set_message(stats(
                    progress.failed.load(Ordering::Relaxed),
                    bytes,
                    per_sec,
                ));
            }
            // The summary printed next says it all; a finished bar would only repeat it.
            bar.finish_and_clear();
            bar.set_draw_target(ProgressDrawTarget::hidden());
        });
        BarTask { stop, task }
    }
}

/// The running bar; [`BarTask::finish`] clears it.
pub struct BarTask {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BarTask {
    /// Stops updating and clears the bar from the screen.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A log writer that prints above the bar: the bar is cleared, the bytes written to stderr, and
/// the bar drawn again (a plain stderr write while the bar is hidden).
pub struct AboveBar(ProgressBar);

impl Write for AboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The bar's message: `2 failed, 1.2 GiB at 35.2 MiB/s`.
fn stats(failed: u64, bytes: u64, per_sec: f64) -> String {
    format!(
        "{failed} failed, {} at {}/s",
        human_bytes(bytes),
        human_bytes(per_sec as u64)
    )
}

/// Bytes per second, as an exponential moving average over [`RATE_WINDOW`].
struct ByteRate {
    last_bytes: u64,
    last: Instant,
    per_sec: f64,
}

impl ByteRate {
    fn new(now: Instant) -> ByteRate {
        ByteRate {
            last_bytes: 0,
            last: now,
            per_sec: 0.0,
        }
    }

    fn update(&mut self, bytes: u64, now: Instant) -> f64 {
        let dt = now.duration_since(self.last).as_secs_f64();
        if dt > 0.0 {
            let sample = bytes.saturating_sub(self.last_bytes) as f64 / dt;
            let weight = 1.0 - (-dt / RATE_WINDOW.as_secs_f64()).exp();
            self.per_sec += weight * (sample - self.per_sec);
            self.last_bytes = bytes;
            self.last = now;
        }
        self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_read_as_a_phrase() {
        assert_eq!(stats(2, 1536, 2048.0), "2 failed, 1.5 KiB at 2.0 KiB/s");
    }

    #[test]
    fn the_rate_follows_a_steady_stream() {
        let t0 = Instant::now();
        let mut rate = ByteRate::new(t0);
        let mut per_sec = 0.0;
        for i in 1..=300u64 {
            per_sec = rate.update(i * 100_000, t0 + REFRESH * i as u32);
        }
        // 100 kB per 100 ms for 30 s (ten time constants): within 0.1 % of 1 MB/s.
        assert!((per_sec - 1_000_000.0).abs() < 1_000.0, "{per_sec}");
    }
}
