//! What `ecr-sync sync` shows a person: plain log lines when stderr is not a terminal, a progress
//! bar with warnings and errors printed above it when it is (run under a pseudo-terminal with
//! util-linux `script`).

mod common;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};

/// Tags of `good/app` the tests copy.
const TAGS: [&str; 3] = ["v1", "v2", "v3"];

/// A source and a destination registry, `good/app` with [`TAGS`] in the source, and `bad/bytes:v1`
/// behind a proxy that corrupts every blob (so its job fails with `digest_mismatch`).
struct Setup {
    src: RegistryProcess,
    dst: RegistryProcess,
    corrupt: proxy::Proxy,
}

async fn setup() -> Setup {
    let src = RegistryProcess::start(RegistryOpts::default()).await;
    let dst = RegistryProcess::start(RegistryOpts::default()).await;
    let corrupt = proxy::Proxy::start(
        &src.url(),
        proxy::Faults {
            corrupt_blobs: true,
            ..Default::default()
        },
    )
    .await;
    let s = seed::Seeder::new(reqwest::Client::new(), &src.url(), None);
    for (i, tag) in TAGS.iter().enumerate() {
        s.image(
            "good/app",
            Some(tag),
            vec![seed::noise(100 + i as u64, 4096)],
            &[],
            ("linux", "amd64"),
        )
        .await
        .unwrap();
    }
    s.image(
        "bad/bytes",
        Some("v1"),
        vec![seed::noise(7, 4096)],
        &[],
        ("linux", "amd64"),
    )
    .await
    .unwrap();
    Setup { src, dst, corrupt }
}

impl Setup {
    /// `good/app`, plus `bad/bytes` through the corrupting proxy when `with_failure`.
    fn config(&self, with_failure: bool) -> serde_json::Value {
        let mut repos = vec![json!({ "source": format!("{}/good/app", self.src.host()) })];
        if with_failure {
            repos.push(json!({ "source": format!("{}/bad/bytes", self.corrupt.host()) }));
        }
        json!({
            "repos": repos,
            "destination_registry": self.dst.host(),
            "registries": {
                self.src.host(): { "plain_http": true },
                self.corrupt.host(): { "plain_http": true },
                self.dst.host(): { "plain_http": true }
            }
        })
    }
}

/// What a terminal would show of `raw` at the end: per line, the text after the last carriage
/// return or erase-line (what a redraw leaves), without colour and other escape sequences.
fn screen_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|line| {
            // A pseudo-terminal ends lines with CR LF.
            let line = line.strip_suffix('\r').unwrap_or(line);
            let shown = line.rsplit('\r').next().unwrap_or("");
            let shown = shown.rsplit("\x1b[2K").next().unwrap_or("");
            strip_escapes(shown)
        })
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Every piece of text drawn on a line between carriage returns and erase-lines, including bar
/// frames that a later redraw replaced.
fn drawn(raw: &str) -> Vec<String> {
    raw.split(['\n', '\r'])
        .flat_map(|l| l.split("\x1b[2K"))
        .map(strip_escapes)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// `s` without ANSI CSI sequences (`ESC [ … final byte`).
fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_each_copied_image_is_one_plain_log_line_and_there_is_no_bar() {
    let s = setup().await;
    let run = Workdir::new().sync(&s.config(false), &[], &[]);
    run.assert_code(0);
    assert_eq!(run.count("copied"), TAGS.len() as u64);

    let copied: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" copied ") && l.contains(" -> "))
        .collect();
    assert_eq!(copied.len(), TAGS.len(), "stderr:\n{}", run.stderr);
    for tag in TAGS {
        let dst = format!("{}/good/app:{tag} ", s.dst.host());
        let lines: Vec<_> = copied.iter().filter(|l| l.contains(&dst)).collect();
        assert_eq!(lines.len(), 1, "one line for {dst}:\n{}", run.stderr);
        let line = lines[0];
        assert!(line.contains(" INFO "), "{line}");
        assert!(
            line.contains(&format!("copied {}/good/app:{tag} -> ", s.src.host())),
            "{line}"
        );
        // The job's span (debug level) does not prefix the line.
        assert!(!line.contains("job_id") && !line.contains("job{"), "{line}");
    }
    for out in [&run.stderr, &run.stdout] {
        assert!(!out.contains('\x1b'), "no escape codes:\n{out}");
        assert!(!out.contains('\r'), "no redrawn line:\n{out}");
        assert!(!out.contains(" jobs, "), "no progress bar:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_bar_is_drawn_and_a_failed_job_is_an_error_line_above_it() {
    let s = setup().await;
    let w = Workdir::new();
    let cfg = w.write_config(&s.config(true));
    let ledger = w.path("ledger.db");
    let report = w.path("report.json");
    // `script` runs the command on a pseudo-terminal and copies everything it shows to stdout;
    // a wide terminal keeps the bar on one line.
    let command = format!(
        "stty cols 200 rows 40; exec '{}' sync --config '{}' --ledger '{}' --report '{}'",
        env!("CARGO_BIN_EXE_ecr-sync"),
        cfg.display(),
        ledger.display(),
        report.display()
    );
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("ECR_SYNC_FAST_RETRY", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` is installed");
    let raw = String::from_utf8_lossy(&out.stdout);
    let code = out.status.code();
    assert_eq!(code, Some(1), "one job failed:\n{raw:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["copied"], TAGS.len());
    assert_eq!(report["failed"], 1);

    // The bar was drawn: jobs done/planned, the failed count, bytes and rate, the ETA. (Which
    // counts it showed depends on timing: the run takes a few hundred milliseconds.)
    let bar = drawn(&raw)
        .into_iter()
        .find(|l| l.contains(" jobs, "))
        .unwrap_or_else(|| panic!("no progress bar drawn:\n{raw:?}"));
    let counter = bar.split(" jobs, ").next().unwrap();
    let counter = counter.rsplit(' ').next().unwrap();
    let (done, planned) = counter.split_once('/').expect("jobs done/planned");
    assert!(
        done.parse::<u64>().is_ok() && planned.parse::<u64>().is_ok(),
        "{bar}"
    );
    assert!(
        bar.contains(" failed, ") && bar.contains("/s, ETA "),
        "{bar}"
    );

    // The failed job's ERROR line stands on its own line, not mixed into the bar, and the
    // copied jobs' INFO lines are not shown while the bar is up.
    let lines = screen_lines(&raw);
    let error_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("bad/bytes:v1 -> "))
        .collect();
    assert_eq!(error_lines.len(), 1, "one ERROR line:\n{lines:#?}");
    let error = error_lines[0];
    assert!(
        error.contains("failed ") && error.contains("digest_mismatch"),
        "{error}"
    );
    assert!(
        !error.contains(" jobs, "),
        "not drawn through the bar: {error}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "info lines are quiet under the bar:\n{lines:#?}"
    );
    // The bar is cleared at the end: the last thing on screen is the summary.
    let last = lines.last().expect("some output");
    assert!(
        last.contains(&format!("{} copied, 0 up to date, 1 failed", TAGS.len())),
        "{lines:#?}"
    );
}
