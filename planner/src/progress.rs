//! The live progress line, redrawn on stderr while a sync runs on a terminal.

use ecr_sync::sync::Progress;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// Draws `progress` until the returned handle is stopped.
pub struct ProgressLine {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressLine {
    pub fn start(progress: Arc<Progress>) -> ProgressLine {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last_bytes = 0u64;
            let mut last = Instant::now();
            let mut rate = 0.0;
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(REDRAW) => {}
                }
                let bytes = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
                let dt = last.elapsed().as_secs_f64();
                if dt > 0.0 {
                    rate = 0.7 * rate + 0.3 * (bytes - last_bytes) as f64 / dt;
                }
                last_bytes = bytes;
                last = Instant::now();
                let line = format!(
                    "{} | {}/s | {:.0}s",
                    progress.line(),
                    ecr_sync::sync::human_bytes(rate as u64),
                    started.elapsed().as_secs_f64()
                );
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        });
        ProgressLine { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
