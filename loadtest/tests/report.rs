//! The report's renderings, from results built by hand: the Markdown a person reads, the SVG
//! chart, and the JSON round trip.

use std::collections::BTreeMap;

use ecr_sync_loadtest::report::{
    markdown, svg, AwsPerJob, Compare, Percentiles, RunResult, Sample, Verdict,
};

/// A clean fleet run with 2 workers, compared with skopeo.
fn clean_run() -> RunResult {
    let timeline = (0..20)
        .map(|i| {
            let done = (i * 22).min(400);
            Sample {
                t_s: i as f64,
                done,
                backlog: 400 - done,
            }
        })
        .collect();
    RunResult {
        scenario: "a-clean".into(),
        mode: "fleet".into(),
        resources: "local stack".into(),
        workers: 2,
        concurrency: 8,
        tags: 400,
        wall_s: 20.0,
        plan_s: 1.5,
        jobs: BTreeMap::from([("succeeded".into(), 400)]),
        jobs_emitted: 400,
        jobs_per_s: 20.0,
        mb_per_s: 45.63,
        latency_ms: Percentiles {
            p50: 120.4,
            p95: 340.0,
            p99: 561.7,
        },
        requests_per_tag: Some(3.25),
        blob_requests: Some(2400),
        aws_per_job: Some(AwsPerJob {
            sqs_requests: 4.1,
            dynamodb_writes: 2.0,
        }),
        amplification: Some(1.0234),
        peak_rss_mib: BTreeMap::from([("planner".into(), 48.5), ("worker".into(), 130.2)]),
        faults: BTreeMap::new(),
        kills_at_s: vec![],
        fault_windows: vec![],
        verdict: Verdict {
            checked: 400,
            ledger_agrees: true,
            ..Verdict::default()
        },
        timeline,
        compare: Some(Compare {
            tool: "skopeo".into(),
            wall_s: 40.0,
            exit_code: 0,
            ratio: 0.5,
        }),
        moto_cpu_share: Some(0.42),
    }
}

/// A chaos run with 8 workers: two kills, one fault window (its label needs escaping), and a
/// verdict that fails.
fn chaos_run() -> RunResult {
    // Steady 30 jobs/s, stalling after the first kill.
    let timeline = (0..21)
        .map(|i| {
            let t = i as f64 * 1.5;
            let done = if (5..8).contains(&i) {
                150
            } else {
                (i * 30).min(600)
            };
            Sample {
                t_s: t,
                done,
                backlog: 600 - done,
            }
        })
        .collect();
    RunResult {
        scenario: "b-chaos".into(),
        mode: "fleet".into(),
        resources: "given: src.example → dst.example".into(),
        workers: 8,
        concurrency: 4,
        tags: 600,
        wall_s: 30.0,
        plan_s: 2.25,
        jobs: BTreeMap::from([("dead".into(), 1), ("succeeded".into(), 575)]),
        jobs_emitted: 600,
        jobs_per_s: 19.2,
        mb_per_s: 8.0,
        latency_ms: Percentiles {
            p50: 95.0,
            p95: 2400.0,
            p99: 8100.0,
        },
        requests_per_tag: None,
        blob_requests: Some(3600),
        aws_per_job: None,
        amplification: None,
        peak_rss_mib: BTreeMap::from([("worker".into(), 140.0)]),
        faults: BTreeMap::from([("kills".into(), 2), ("registry_5xx".into(), 37)]),
        kills_at_s: vec![7.5, 18.0],
        fault_windows: vec![(9.0, 15.0, "registry 5xx <&> \"slow\"".into())],
        verdict: Verdict {
            checked: 600,
            present: 576,
            lost: (0..23).map(|i| format!("b/app{i}:v1")).collect(),
            corrupt: vec![],
            duplicated: Some(2),
            stuck: vec!["b/app99:v3".into()],
            dead_lettered: vec!["permanent: manifest unknown (404) for b/app7:v2".into()],
            ledger_agrees: false,
        },
        timeline,
        compare: None,
        moto_cpu_share: None,
    }
}

#[test]
fn markdown_has_a_row_per_run_and_each_verdict() {
    let md = markdown(&[clean_run(), chaos_run()]);
    println!("{md}");
    let lines: Vec<&str> = md.lines().collect();

    assert!(md.starts_with("# ecr-sync load test\n"));
    let header =
        "| Scenario | Mode | Workers × conc. | Tags | Jobs emitted | Wall s | Plan s | Jobs/s \
                  | MB/s | Latency p50 / p95 / p99 ms | Requests/tag | AWS per job (SQS, DynamoDB \
                  writes) | Amplification | Peak RSS MiB | Faults injected |";
    let at = lines
        .iter()
        .position(|l| *l == header)
        .expect("the table header");
    assert_eq!(lines[at + 1], format!("|{}", "---|".repeat(15)));
    assert_eq!(
        lines[at + 2],
        "| a-clean | fleet | 2 × 8 | 400 | 400 | 20.0 | 1.50 | 20.0 | 45.6 | 120 / 340 / 562 \
         | 3.25 | 4.10, 2.00 | 1.02 | planner 48.5, worker 130 | none |"
    );
    assert_eq!(
        lines[at + 3],
        "| b-chaos | fleet | 8 × 4 | 600 | 600 | 30.0 | 2.25 | 19.2 | 8.00 | 95.0 / 2400 / 8100 \
         | – | – | – | worker 140 | kills 2, registry_5xx 37 |"
    );

    // The clean run: OK, the comparison and moto's share.
    assert!(lines.contains(&"## a-clean: fleet, 2 workers — OK"));
    assert!(lines.contains(&"- Resources: local stack"));
    assert!(lines.contains(&"- Resources: given: src.example → dst.example"));
    assert!(lines.contains(&"- skopeo: 40.0 s, exit 0; ecr-sync 0.50× its time"));
    assert!(md.contains("- moto CPU: 42 % of the wall time (near 100 % moto"));
    assert!(lines.contains(&"- Lost: none"));

    // The chaos run: FAILED, 20 lost tags listed and the rest counted.
    assert!(lines.contains(&"## b-chaos: fleet, 8 workers — FAILED"));
    let lost = lines
        .iter()
        .find(|l| l.starts_with("- Lost (23): "))
        .expect("the lost line");
    assert!(lost.contains("`b/app0:v1`, `b/app1:v1`"));
    assert!(lost.contains("`b/app19:v1`, and 3 more"));
    assert!(!lost.contains("b/app20:v1"));
    assert!(lines.contains(&"- Stuck (1): `b/app99:v3`"));
    assert!(lines.contains(&"- Corrupt: none"));
    assert!(lines.contains(&"- Duplicated: 2"));
    assert!(lines.contains(&"- Dead-lettered (1):"));
    assert!(lines.contains(&"  - permanent: manifest unknown (404) for b/app7:v2"));
    assert!(lines.contains(&"- Ledger agrees with the registries: **no**"));
    assert!(lines.contains(&"- Jobs: dead 1, succeeded 575"));
    // Only the clean run has a comparison.
    assert_eq!(md.matches("× its time").count(), 1);
}

#[test]
fn markdown_of_nothing_says_so() {
    assert_eq!(markdown(&[]), "# ecr-sync load test\n\nNo runs.\n");
}

#[test]
fn svg_draws_a_line_per_run_per_panel_kills_and_fault_windows() {
    let out = svg(&[clean_run(), chaos_run()]);
    assert_valid_svg(&out);
    assert_eq!(out.matches(r#"<polyline class="throughput""#).count(), 2);
    assert_eq!(out.matches(r#"<polyline class="backlog""#).count(), 2);
    assert_eq!(out.matches(r#"<line class="kill""#).count(), 2);
    for kill in out
        .lines()
        .filter(|l| l.starts_with(r#"<line class="kill""#))
    {
        assert!(kill.contains("stroke-dasharray"), "{kill}");
    }
    assert_eq!(out.matches(r#"<g class="fault-window">"#).count(), 1);
    assert!(out.contains("registry 5xx &lt;&amp;&gt; &quot;slow&quot;"));
    assert!(!out.contains("<&>"));
    assert!(out.contains(">a-clean: fleet, 2 workers</text>"));
    assert!(out.contains(">b-chaos: fleet, 8 workers</text>"));
    assert!(out.contains("seconds since start"));

    if let Ok(path) = std::env::var("LOADTEST_SAMPLE_SVG") {
        std::fs::write(path, &out).unwrap();
    }
}

#[test]
fn svg_of_empty_short_and_flat_runs_is_valid() {
    let empty = svg(&[]);
    assert_valid_svg(&empty);
    assert!(!empty.contains("<polyline"));
    assert!(empty.contains("No runs"));

    let bare = |scenario: &str, workers, timeline| RunResult {
        scenario: scenario.into(),
        mode: "sync".into(),
        workers,
        timeline,
        ..RunResult::default()
    };
    let none = bare("none", 1, vec![]);
    let one = bare(
        "one",
        1,
        vec![Sample {
            t_s: 3.0,
            done: 5,
            backlog: 7,
        }],
    );
    let flat = bare("flat", 2, vec![Sample::default(); 4]);
    assert_valid_svg(&svg(std::slice::from_ref(&none)));
    let out = svg(&[none, one, flat]);
    assert_valid_svg(&out);
    // One sample: a dot for the backlog, no throughput.
    assert_eq!(out.matches(r#"<circle class="backlog""#).count(), 1);
    assert!(!out.contains(r#"class="throughput""#));
    // All-zero samples at t = 0: a flat backlog line, no rate (no time passed).
    assert_eq!(out.matches(r#"<polyline class="backlog""#).count(), 1);
    assert!(out.contains(">one: sync, 1 worker</text>"));

    // The Markdown of such runs renders too.
    let md = markdown(&[RunResult::default()]);
    assert!(md.contains("— FAILED")); // the ledger was never compared
}

#[test]
fn percentiles_are_nearest_rank() {
    // 1..=100, reversed so that `of` has to sort.
    let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let p = Percentiles::of(&mut values);
    assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));

    let p = Percentiles::of(&mut [7.0, 1.0, 3.0]);
    assert_eq!((p.p50, p.p95, p.p99), (3.0, 7.0, 7.0));

    let p = Percentiles::of(&mut []);
    assert_eq!((p.p50, p.p95, p.p99), (0.0, 0.0, 0.0));
}

#[test]
fn run_result_round_trips_through_json() {
    let run = chaos_run();
    let json = serde_json::to_string(&run).unwrap();
    let back: RunResult = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert_eq!(back.verdict.lost.len(), 23);
    assert_eq!(back.fault_windows[0].2, "registry 5xx <&> \"slow\"");
    assert_eq!(back.timeline.len(), 21);
    assert!(back.compare.is_none());
    let clean: RunResult =
        serde_json::from_str(&serde_json::to_string(&clean_run()).unwrap()).unwrap();
    assert_eq!(clean.compare.unwrap().ratio, 0.5);
}

/// Checks what a browser needs: one `<svg>` root, every element closed in order, attribute
/// quotes paired, `&` only in entities, and no `NaN` or infinity among the numbers.
fn assert_valid_svg(svg: &str) {
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(
        !svg.contains("NaN") && !svg.to_lowercase().contains("inf"),
        "{svg}"
    );

    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        assert_entities(&rest[..lt]);
        let gt = lt + rest[lt..].find('>').expect("a tag left open");
        let tag = &rest[lt + 1..gt];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unpaired quotes in <{tag}>"
        );
        assert!(!tag.contains('<'), "'<' inside <{tag}>");
        assert_entities(tag);
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop(),
                Some(name.trim()),
                "</{name}> closes the wrong element"
            );
        } else {
            if open.is_empty() {
                roots += 1;
            }
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            assert!(!name.is_empty(), "an empty tag");
            if !tag.ends_with('/') {
                open.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    assert_eq!(roots, 1, "one root element");
    assert!(rest.trim().is_empty());
}

fn assert_entities(text: &str) {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e)),
            "a bare '&' in {text:?}"
        );
    }
}
