//! The Markdown summary.

use super::RunResult;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// Shown where a value does not apply (no AWS on a `sync` run), was not measured (AWS calls on
/// given resources) or is not finite.
const DASH: &str = "–";

/// Lost, corrupt, stuck and dead-lettered items listed per run; the rest is counted ("and N
/// more"). The summary is for a person; the JSON keeps every item.
const LIST_LIMIT: usize = 20;

/// The table's columns, in the order [`table_row`] fills them.
const COLUMNS: [&str; 15] = [
    "Scenario",
    "Mode",
    "Workers × conc.",
    "Tags",
    "Jobs emitted",
    "Wall s",
    "Plan s",
    "Jobs/s",
    "MB/s",
    "Latency p50 / p95 / p99 ms",
    "Requests/tag",
    "AWS per job (SQS, DynamoDB writes)",
    "Amplification",
    "Peak RSS MiB",
    "Faults injected",
];

/// A Markdown summary of `results`: one table row per run, then each run's verdict.
pub fn markdown(results: &[RunResult]) -> String {
    let mut out = String::new();
    write_markdown(&mut out, results).expect("writing to a String cannot fail");
    out
}

fn write_markdown(out: &mut String, results: &[RunResult]) -> fmt::Result {
    writeln!(out, "# ecr-sync load test\n")?;
    if results.is_empty() {
        return writeln!(out, "No runs.");
    }
    writeln!(out, "| {} |", COLUMNS.join(" | "))?;
    writeln!(out, "|{}", "---|".repeat(COLUMNS.len()))?;
    for r in results {
        writeln!(out, "| {} |", table_row(r).join(" | "))?;
    }
    for r in results {
        write_verdict(out, r)?;
    }
    Ok(())
}

fn table_row(r: &RunResult) -> [String; COLUMNS.len()] {
    let l = &r.latency_ms;
    [
        md_escape(&r.scenario),
        md_escape(&r.mode),
        format!("{} × {}", r.workers, r.concurrency),
        r.tags.to_string(),
        r.jobs_emitted.to_string(),
        num(r.wall_s),
        // `sync` does not time planning separately and reports 0.
        if r.plan_s > 0.0 {
            num(r.plan_s)
        } else {
            DASH.into()
        },
        num(r.jobs_per_s),
        num(r.mb_per_s),
        format!("{} / {} / {}", num(l.p50), num(l.p95), num(l.p99)),
        r.requests_per_tag.map_or(DASH.into(), num),
        r.aws_per_job.map_or(DASH.into(), |a| {
            format!("{}, {}", num(a.sqs_requests), num(a.dynamodb_writes))
        }),
        r.amplification.map_or(DASH.into(), |a| format!("{a:.2}")),
        by_kind(&r.peak_rss_mib, |mib| num(*mib), DASH),
        by_kind(&r.faults, u64::to_string, "none"),
    ]
}

fn write_verdict(out: &mut String, r: &RunResult) -> fmt::Result {
    let v = &r.verdict;
    let status = if v.ok() { "OK" } else { "FAILED" };
    writeln!(out, "\n## {} — {status}\n", md_escape(&r.label()))?;
    if !r.resources.is_empty() {
        writeln!(out, "- Resources: {}", md_escape(&r.resources))?;
    }
    writeln!(out, "- Checked: {} tags", v.checked)?;
    if !r.jobs.is_empty() {
        writeln!(out, "- Jobs: {}", by_kind(&r.jobs, u64::to_string, DASH))?;
    }
    write_items(out, "Lost", &v.lost)?;
    write_items(out, "Corrupt", &v.corrupt)?;
    write_items(out, "Stuck", &v.stuck)?;
    match v.duplicated {
        Some(n) => writeln!(out, "- Duplicated: {n}")?,
        None => writeln!(out, "- Duplicated: not measured")?,
    }
    if v.dead_lettered.is_empty() {
        writeln!(out, "- Dead-lettered: none")?;
    } else {
        writeln!(out, "- Dead-lettered ({}):", v.dead_lettered.len())?;
        for entry in v.dead_lettered.iter().take(LIST_LIMIT) {
            writeln!(out, "  - {}", md_escape(entry))?;
        }
        if let Some(more) = v
            .dead_lettered
            .len()
            .checked_sub(LIST_LIMIT)
            .filter(|n| *n > 0)
        {
            writeln!(out, "  - and {more} more")?;
        }
    }
    let agrees = if v.ledger_agrees { "yes" } else { "**no**" };
    writeln!(out, "- Ledger agrees with the registries: {agrees}")?;
    if let Some(c) = &r.compare {
        writeln!(
            out,
            "- {}: {} s, exit {}; ecr-sync {}× its time",
            md_escape(&c.tool),
            num(c.wall_s),
            c.exit_code,
            num(c.ratio)
        )?;
    }
    if let Some(share) = r.moto_cpu_share.filter(|s| s.is_finite()) {
        writeln!(
            out,
            "- moto CPU: {:.0} % of the wall time (near 100 % moto, not ecr-sync, is the \
             bottleneck)",
            share * 100.0
        )?;
    }
    Ok(())
}

/// `- Lost (23): `a`, `b`, …, and 3 more`, or `- Lost: none`.
fn write_items(out: &mut String, name: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return writeln!(out, "- {name}: none");
    }
    let shown: Vec<String> = items
        .iter()
        .take(LIST_LIMIT)
        .map(|s| code_span(s))
        .collect();
    write!(out, "- {name} ({}): {}", items.len(), shown.join(", "))?;
    if items.len() > LIST_LIMIT {
        write!(out, ", and {} more", items.len() - LIST_LIMIT)?;
    }
    writeln!(out)
}

/// `planner 48.5, worker 130` (a map's entries in key order), or `empty`.
fn by_kind<V>(map: &BTreeMap<String, V>, value: impl Fn(&V) -> String, empty: &str) -> String {
    if map.is_empty() {
        return empty.into();
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} {}", md_escape(k), value(v)))
        .collect();
    parts.join(", ")
}

/// A number with the precision its size deserves — 1234, 123, 12.3, 1.23 — or a dash.
pub(super) fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        DASH.into()
    } else if a == 0.0 {
        "0".into()
    } else if a >= 99.95 {
        format!("{x:.0}")
    } else if a >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `s` as Markdown text on one line: characters that would start formatting, a link, HTML or
/// a table cell are backslash-escaped. `_` is left alone: inside a word (`registry_5xx`) it
/// never means emphasis, and escaping it would make the plain text hard to read.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '&' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// `s` as a Markdown code span, fenced by one more backtick than its longest run of them.
fn code_span(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_is_escaped_and_code_spans_are_fenced() {
        assert_eq!(md_escape("a|b *c* <d>\nx_y"), r"a\|b \*c\* \<d\> x_y");
        assert_eq!(code_span("a/b:1"), "`a/b:1`");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x"), "`` `x ``");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(f64::NAN), DASH);
    }
}
