//! The SVG chart.

use super::markdown::num;
use super::{RunResult, Sample};
use std::fmt::{self, Write as _};

/// Chart geometry, pixels: two panels of `PANEL_H` sharing the time axis, the legend below.
const WIDTH: f64 = 960.0;
/// Room for the y tick labels and the rotated axis title.
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const PANEL_H: f64 = 220.0;
/// Room for the title and the top panel's caption.
const TOP1: f64 = 64.0;
/// The bottom panel starts below the top one and its caption.
const TOP2: f64 = TOP1 + PANEL_H + 48.0;
const BOTTOM2: f64 = TOP2 + PANEL_H;
/// Below the bottom panel: tick labels, the axis title, then one legend row per entry.
const LEGEND_TOP: f64 = BOTTOM2 + 62.0;
const LEGEND_ROW: f64 = 18.0;
/// Steps aimed at on the time axis and on each value axis (panels are wide and short).
const X_TICKS: f64 = 8.0;
const Y_TICKS: f64 = 5.0;

/// Intervals averaged for one throughput point: the sampling is coarse and a kill makes one
/// interval jump, so a light average keeps the line readable without hiding the dip.
const SMOOTH: usize = 3;

/// Line colours, one per run in order, then again. Red is kept for kills and orange for fault
/// windows.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];
const KILL_COLOUR: &str = "#d62728";
const FAULT_COLOUR: &str = "#ff7f0e";

/// An SVG chart of `results`: throughput and backlog over time, one line per run (labelled
/// with its worker count), kills and fault windows marked.
pub fn svg(results: &[RunResult]) -> String {
    let mut out = String::new();
    write_svg(&mut out, results).expect("writing to a String cannot fail");
    out
}

fn write_svg(out: &mut String, results: &[RunResult]) -> fmt::Result {
    let rates: Vec<Vec<(f64, f64)>> = results.iter().map(|r| throughput(&r.timeline)).collect();
    let backlogs: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            r.timeline
                .iter()
                .map(|s| (finite(s.t_s), s.backlog as f64))
                .collect()
        })
        .collect();
    let any_kills = results.iter().any(|r| !r.kills_at_s.is_empty());
    let any_faults = results.iter().any(|r| !r.fault_windows.is_empty());

    let times = results.iter().flat_map(|r| {
        let samples = r.timeline.iter().map(|s| s.t_s);
        let windows = r.fault_windows.iter().flat_map(|w| [w.0, w.1]);
        samples
            .chain(r.kills_at_s.iter().copied())
            .chain(windows)
            .chain([r.wall_s])
    });
    let x = Scale::new(times.map(finite).fold(0.0, f64::max), X_TICKS);
    let max_of =
        |series: &[Vec<(f64, f64)>]| series.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let y_rate = Scale::new(max_of(&rates), Y_TICKS);
    let y_backlog = Scale::new(max_of(&backlogs), Y_TICKS);

    let legend_rows = results.len() + usize::from(any_kills) + usize::from(any_faults);
    let height = LEGEND_TOP + legend_rows as f64 * LEGEND_ROW + 8.0;
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        out,
        r#"<text x="{LEFT}" y="28" font-size="18" font-weight="bold">ecr-sync load test: throughput and backlog</text>"#
    )?;

    // Back to front: fault bands, axes and grid, the lines, kills on top.
    for r in results {
        for (i, (from, to, what)) in r.fault_windows.iter().enumerate() {
            write_fault_window(out, &x, &r.scenario, i, (finite(*from), finite(*to)), what)?;
        }
    }
    let rate_axes = Axes {
        x: &x,
        y: &y_rate,
        top: TOP1,
    };
    let backlog_axes = Axes {
        x: &x,
        y: &y_backlog,
        top: TOP2,
    };
    let caption = format!("Throughput: jobs completed per second ({SMOOTH}-sample average)");
    write_panel(out, &rate_axes, &caption, "jobs/s", false)?;
    write_panel(out, &backlog_axes, "Backlog: jobs waiting", "jobs", true)?;
    for (i, r) in results.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let label = xml_escape(&r.label());
        write_series(out, "throughput", colour, &label, &rates[i], &rate_axes)?;
        write_series(out, "backlog", colour, &label, &backlogs[i], &backlog_axes)?;
    }
    for r in results {
        for t in r.kills_at_s.iter().copied().map(finite) {
            let px = x.px(t);
            writeln!(
                out,
                r#"<line class="kill" x1="{px:.1}" y1="{TOP1}" x2="{px:.1}" y2="{BOTTOM2}" stroke="{KILL_COLOUR}" stroke-width="1" stroke-dasharray="5 4"><title>{}: worker killed at {} s</title></line>"#,
                xml_escape(&r.scenario),
                num(t)
            )?;
        }
    }
    if rates.iter().chain(&backlogs).all(Vec::is_empty) {
        let cx = (LEFT + WIDTH - RIGHT) / 2.0;
        let cy = TOP1 + PANEL_H / 2.0;
        let what = if results.is_empty() {
            "No runs"
        } else {
            "No samples"
        };
        writeln!(
            out,
            r##"<text x="{cx:.1}" y="{cy:.1}" text-anchor="middle" fill="#777">{what}</text>"##
        )?;
    }
    write_legend(out, results, any_kills, any_faults)?;
    writeln!(out, "</svg>")
}

/// A panel's frame, grid, y ticks and captions; the x tick labels only under the bottom one.
fn write_panel(
    out: &mut String,
    axes: &Axes,
    caption: &str,
    unit: &str,
    x_labels: bool,
) -> fmt::Result {
    let Axes { x, y, top } = *axes;
    let right = WIDTH - RIGHT;
    let bottom = top + PANEL_H;
    writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{caption}</text>"#,
        top - 10.0
    )?;
    for v in y.ticks() {
        let py = y.py(v, top);
        writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            py + 4.0,
            y.label(v)
        )?;
    }
    for v in x.ticks() {
        let px = x.px(v);
        writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#f0f0f0"/><line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{}" stroke="#333"/>"##,
            bottom + 5.0
        )?;
        if x_labels {
            writeln!(
                out,
                r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
                bottom + 18.0,
                x.label(v)
            )?;
        }
    }
    writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="#333"/>"##,
        right - LEFT
    )?;
    let (ux, uy) = (LEFT - 52.0, top + PANEL_H / 2.0);
    writeln!(
        out,
        r#"<text x="{ux}" y="{uy}" transform="rotate(-90 {ux} {uy})" text-anchor="middle">{unit}</text>"#
    )?;
    if x_labels {
        writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">seconds since start</text>"#,
            (LEFT + right) / 2.0,
            bottom + 38.0
        )?;
    }
    Ok(())
}

/// One run's line in one panel: a polyline, or a dot when there is a single point.
fn write_series(
    out: &mut String,
    class: &str,
    colour: &str,
    label: &str,
    points: &[(f64, f64)],
    axes: &Axes,
) -> fmt::Result {
    match points {
        [] => Ok(()),
        [(t, v)] => {
            let (cx, cy) = axes.at(*t, *v);
            writeln!(
                out,
                r#"<circle class="{class}" cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"><title>{label}</title></circle>"#
            )
        }
        _ => {
            let coords: Vec<String> = points
                .iter()
                .map(|(t, v)| axes.at(*t, *v))
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            writeln!(
                out,
                r#"<polyline class="{class}" points="{}" fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"><title>{label}</title></polyline>"#,
                coords.join(" ")
            )
        }
    }
}

/// A fault window: a translucent band over both panels, labelled at the top. Labels of
/// neighbouring windows are staggered over three rows so that they overlap less.
fn write_fault_window(
    out: &mut String,
    x: &Scale,
    scenario: &str,
    i: usize,
    (from, to): (f64, f64),
    what: &str,
) -> fmt::Result {
    let (x0, x1) = (x.px(from.min(to)), x.px(from.max(to)));
    let w = (x1 - x0).max(1.0);
    let what = xml_escape(what);
    writeln!(
        out,
        r#"<g class="fault-window"><title>{}: {what} ({}–{} s)</title>"#,
        xml_escape(scenario),
        num(from),
        num(to)
    )?;
    for top in [TOP1, TOP2] {
        writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{top}" width="{w:.1}" height="{PANEL_H}" fill="{FAULT_COLOUR}" fill-opacity="0.15"/>"#
        )?;
    }
    writeln!(
        out,
        r##"<text x="{:.1}" y="{}" font-size="11" fill="#a04000">{what}</text></g>"##,
        x0 + 3.0,
        TOP1 + 14.0 + (i % 3) as f64 * 13.0
    )
}

fn write_legend(out: &mut String, results: &[RunResult], kills: bool, faults: bool) -> fmt::Result {
    let row_y = |row: usize| LEGEND_TOP + row as f64 * LEGEND_ROW;
    let (x0, x1, tx) = (LEFT, LEFT + 28.0, LEFT + 36.0);
    for (i, r) in results.iter().enumerate() {
        let (y, colour) = (row_y(i), PALETTE[i % PALETTE.len()]);
        writeln!(
            out,
            r#"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="{colour}" stroke-width="2.5"/><text x="{tx}" y="{}">{}</text>"#,
            y + 4.0,
            xml_escape(&r.label())
        )?;
    }
    let mut row = results.len();
    if kills {
        let y = row_y(row);
        writeln!(
            out,
            r#"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="{KILL_COLOUR}" stroke-dasharray="5 4"/><text x="{tx}" y="{}">worker killed</text>"#,
            y + 4.0
        )?;
        row += 1;
    }
    if faults {
        let y = row_y(row);
        writeln!(
            out,
            r#"<rect x="{x0}" y="{}" width="28" height="12" fill="{FAULT_COLOUR}" fill-opacity="0.15"/><text x="{tx}" y="{}">faults injected</text>"#,
            y - 6.0,
            y + 4.0
        )?;
    }
    Ok(())
}

/// Jobs completed per second between consecutive samples, placed at each interval's middle and
/// averaged over [`SMOOTH`] neighbouring intervals. Intervals that do not move forward in time
/// are skipped; fewer than two samples give no points.
fn throughput(timeline: &[Sample]) -> Vec<(f64, f64)> {
    let raw: Vec<(f64, f64)> = timeline
        .windows(2)
        .filter_map(|w| {
            let (t0, t1) = (finite(w[0].t_s), finite(w[1].t_s));
            let done = w[1].done.saturating_sub(w[0].done) as f64;
            (t1 > t0).then(|| ((t0 + t1) / 2.0, finite(done / (t1 - t0))))
        })
        .collect();
    (0..raw.len())
        .map(|i| {
            let lo = i.saturating_sub(SMOOTH / 2);
            let hi = (i + SMOOTH / 2 + 1).min(raw.len());
            let sum: f64 = raw[lo..hi].iter().map(|p| p.1).sum();
            (raw[i].0, sum / (hi - lo) as f64)
        })
        .collect()
}

/// One panel's coordinates: the shared time axis, the panel's value axis, and where it starts.
#[derive(Clone, Copy)]
struct Axes<'a> {
    x: &'a Scale,
    y: &'a Scale,
    top: f64,
}

impl Axes<'_> {
    /// The pixel of value `v` at time `t`.
    fn at(&self, t: f64, v: f64) -> (f64, f64) {
        (self.x.px(t), self.y.py(v, self.top))
    }
}

/// An axis from 0 to a round number at least the largest value, ticked every 1, 2 or 5 × 10ⁿ.
struct Scale {
    max: f64,
    step: f64,
}

impl Scale {
    /// Above this a value is nonsense, and the axis arithmetic must not overflow to infinity.
    const LIMIT: f64 = 1e15;

    /// An axis for values up to `max`, with about `ticks` steps (at most 2.5 × as many).
    fn new(max: f64, ticks: f64) -> Scale {
        // All zeros (or nothing) still get an axis, 0 to 1.
        let max = if max.is_finite() && max > 1e-9 {
            max.min(Self::LIMIT)
        } else {
            1.0
        };
        let raw = max / ticks;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude);
        // The small slack keeps 10.000000001 ÷ 2 from adding a tick.
        let ticks = (max / step - 1e-9).ceil().max(1.0);
        Scale {
            max: ticks * step,
            step,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.max / self.step).round() as usize;
        (0..=n).map(|i| i as f64 * self.step)
    }

    fn label(&self, v: f64) -> String {
        let decimals = if self.step >= 1.0 {
            0
        } else {
            (-self.step.log10().floor()) as usize
        };
        format!("{v:.decimals$}")
    }

    /// Horizontal pixel of time `t`, clamped to the plot.
    fn px(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (finite(t) / self.max).clamp(0.0, 1.0)
    }

    /// Vertical pixel of value `v` in the panel starting at `top`, clamped to the panel.
    fn py(&self, v: f64, top: f64) -> f64 {
        top + PANEL_H * (1.0 - (finite(v) / self.max).clamp(0.0, 1.0))
    }
}

/// `x`, or 0 when it is NaN or infinite: nothing drawn may print as `NaN`.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `s` as XML text or attribute value.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, done: u64) -> Sample {
        Sample {
            t_s,
            done,
            backlog: 0,
        }
    }

    #[test]
    fn throughput_is_per_interval_and_smoothed_over_three() {
        let timeline = [
            sample(0.0, 0),
            sample(1.0, 10),
            sample(2.0, 40),
            sample(4.0, 40),
            sample(5.0, 70),
        ];
        // Raw rates 10, 30, 0, 30 at 0.5, 1.5, 3, 4.5.
        let points = throughput(&timeline);
        assert_eq!(
            points,
            vec![(0.5, 20.0), (1.5, 40.0 / 3.0), (3.0, 20.0), (4.5, 15.0)]
        );
        assert!(throughput(&timeline[..1]).is_empty());
        // Time standing still or going back is skipped, not divided by.
        assert!(throughput(&[sample(3.0, 0), sample(3.0, 5), sample(2.0, 9)]).is_empty());
    }

    #[test]
    fn scale_ends_on_a_round_tick() {
        let s = Scale::new(87.0, 5.0);
        assert_eq!((s.max, s.step), (100.0, 20.0));
        assert_eq!(s.ticks().count(), 6);
        let s = Scale::new(0.0, 5.0);
        assert_eq!((s.max, s.step), (1.0, 0.2));
        assert_eq!(s.label(0.4), "0.4");
        let s = Scale::new(f64::NAN, 5.0);
        assert!(s.max.is_finite());
        assert!(Scale::new(f64::MAX, 5.0).max.is_finite());
        let s = Scale::new(30.0, 8.0);
        assert_eq!((s.max, s.step), (30.0, 5.0));
    }
}
