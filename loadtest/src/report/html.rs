//! The HTML report: one self-contained page, inline CSS and inline SVG (no
//! script, no external URL), with a timeline per cell (throughput, failures,
//! p99 on a log scale) sharing scales across cells, faults shaded, the moves'
//! jobs marked, and a table of the moves' figures.

use std::fmt::Write as _;

use super::{mode_text, ms, num, pct, top_errors, Report, Timeline};
use crate::stats::{Scope, SecondStats};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}\
h3{font-size:15px;margin:16px 0 4px}table{border-collapse:collapse;margin:6px 0}\
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#17702b;font-weight:600}\
.fail{color:#b00020;font-weight:600}.verdict{font-size:20px}.muted{color:#777}\
svg{display:block;background:#fff;border:1px solid #eee}\
svg text{font:11px system-ui,sans-serif;fill:#444}svg .fault-label{fill:#b00020;font-weight:600}\
svg .move-label{fill:#0f6b3a;font-weight:600}\
svg .axis{stroke:#bbb;stroke-width:1}svg .grid{stroke:#eee;stroke-width:1}";

// SVG geometry (user units = px).
const SVG_W: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 12.0;
/// Room above the panels for the fault labels.
const TOP: f64 = 36.0;
const PANEL_H: f64 = 90.0;
const GAP: f64 = 26.0;
const BOTTOM: f64 = 22.0;

fn svg_h() -> f64 {
    TOP + 3.0 * PANEL_H + 2.0 * GAP + BOTTOM
}

fn panel_top(k: usize) -> f64 {
    TOP + k as f64 * (PANEL_H + GAP)
}

/// The scales every timeline shares, so cells compare at a glance.
struct Scales {
    duration: f64,
    /// Max requests/s over the cell timelines (the `all` one has its own).
    cell_rps_max: f64,
    /// log10 range of the p99 panel.
    log_lo: f64,
    log_hi: f64,
}

impl Scales {
    fn of(r: &Report) -> Scales {
        let mut cell_max = 1.0f64;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for t in &r.timelines {
            for s in &t.seconds {
                if t.scope != Scope::All {
                    cell_max = cell_max.max(s.requests as f64);
                }
                for v in [s.p50_ms, s.p99_ms].into_iter().flatten() {
                    if v > 0.0 {
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                }
            }
        }
        let (log_lo, log_hi) = if lo.is_finite() {
            let a = lo.log10().floor();
            let b = hi.log10().ceil();
            (a, if b > a { b } else { a + 1.0 })
        } else {
            (0.0, 1.0)
        };
        Scales {
            duration: f64::from(r.duration_s.max(1)),
            cell_rps_max: cell_max,
            log_lo,
            log_hi,
        }
    }

    fn x(&self, second: f64) -> f64 {
        LEFT + second / self.duration * (SVG_W - LEFT - RIGHT)
    }
}

/// A "nice" y-axis maximum ≥ v: 1, 2 or 5 × 10^k.
fn nice_max(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn tick_step(duration: f64) -> u32 {
    [1u32, 2, 5, 10, 15, 30, 60, 120, 300, 600]
        .into_iter()
        .find(|&s| duration / f64::from(s) <= 15.0)
        .unwrap_or(1200)
}

/// A path through the points, broken where a value is missing.
fn broken_path(points: impl Iterator<Item = Option<(f64, f64)>>) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for p in points {
        match p {
            Some((x, y)) => {
                let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d
}

fn render_svg(r: &Report, t: &Timeline, sc: &Scales) -> String {
    let mut o = String::new();
    let h = svg_h();
    let _ = write!(
        o,
        "<svg class=\"timeline\" viewBox=\"0 0 {SVG_W} {h}\" width=\"{SVG_W}\" height=\"{h}\" role=\"img\" aria-label=\"timeline of {}\">",
        esc(&t.scope.to_string())
    );
    let bottom = panel_top(2) + PANEL_H;
    // The baseline and the faults, shaded behind all three panels.
    let b = &r.analysis.baseline;
    let _ = write!(
        o,
        "<rect class=\"baseline\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2a6fdb\" fill-opacity=\"0.06\"><title>baseline {} [{} s, {} s)</title></rect>\
         <text x=\"{:.1}\" y=\"{:.1}\">baseline</text>",
        sc.x(f64::from(b.start_s)),
        sc.x(f64::from(b.end_s)) - sc.x(f64::from(b.start_s)),
        bottom - TOP,
        esc(&b.name),
        b.start_s,
        b.end_s,
        sc.x(f64::from(b.start_s)) + 3.0,
        TOP - 22.0
    );
    for f in &r.analysis.faults {
        let w = &f.window;
        let (x0, x1) = (sc.x(f64::from(w.start_s)), sc.x(f64::from(w.end_s)));
        let mine = matches!(t.scope, Scope::Cell(c) if w.cells.contains(&c));
        let _ = write!(
            o,
            "<rect class=\"fault\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d0021b\" fill-opacity=\"{}\"><title>{} [{} s, {} s)</title></rect>\
             <text class=\"fault-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            (x1 - x0).max(1.0),
            bottom - TOP,
            if mine { "0.16" } else { "0.07" },
            esc(&w.label),
            w.start_s,
            w.end_s,
            x0 + 3.0,
            TOP - 22.0,
            esc(&w.label)
        );
    }
    // The moves' jobs: from the fault's start to the job's end, a green band
    // along the top of the panels with what it moved and how fast.
    for m in &r.moves {
        let Some(end) = m.ended_s else { continue };
        let (x0, x1) = (sc.x(m.started_s), sc.x(end));
        let what = match &m.job {
            Some(j) if m.done => format!(
                "{} done in {:.1} s, {:.1} MB/s",
                m.label,
                end - m.started_s,
                j.mb_per_s
            ),
            _ => format!("{} FAILED", m.label),
        };
        let _ = write!(
            o,
            "<rect class=\"move\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"6\" fill=\"{}\"><title>{}</title></rect>\
             <text class=\"move-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            (x1 - x0).max(1.0),
            if m.done { "#17a34a" } else { "#d0021b" },
            esc(&m.summary()),
            x0 + 3.0,
            TOP - 8.0,
            esc(&what)
        );
    }
    // Phase boundaries.
    for p in r.phases.iter().skip(1) {
        let x = sc.x(f64::from(p.start_s));
        let _ = write!(
            o,
            "<line class=\"phase\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#999\" stroke-dasharray=\"3,3\"><title>{}</title></line>",
            esc(&p.name)
        );
    }
    let rps_max = nice_max(if t.scope == Scope::All {
        t.seconds
            .iter()
            .map(|s| s.requests as f64)
            .fold(1.0, f64::max)
    } else {
        sc.cell_rps_max
    });
    let err_max = nice_max(
        t.seconds
            .iter()
            .map(|s| s.failures as f64)
            .fold(1.0, f64::max),
    );
    let mid = |s: &SecondStats| sc.x(f64::from(s.second) + 0.5);

    // Panel 1: requests/s (grey) and ok/s (green).
    let y0 = panel_top(0);
    panel_frame(
        &mut o,
        y0,
        "requests/s (grey all, green ok)",
        &num(Some(rps_max)),
        "0",
    );
    let ylin = |v: f64, max: f64, top: f64| top + PANEL_H - (v / max).min(1.0) * PANEL_H;
    for (field, color) in [(0, "#9a9a9a"), (1, "#17a34a")] {
        let d = broken_path(t.seconds.iter().map(|s| {
            let v = if field == 0 { s.requests } else { s.ok } as f64;
            Some((mid(s), ylin(v, rps_max, y0)))
        }));
        let _ = write!(
            o,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
        );
    }

    // Panel 2: failures/s, fast fails (orange) under other failures (red).
    let y1 = panel_top(1);
    panel_frame(
        &mut o,
        y1,
        "failures/s (orange fast 503, red other)",
        &num(Some(err_max)),
        "0",
    );
    for s in t.seconds.iter().filter(|s| s.failures > 0) {
        let (x0, x1) = (sc.x(f64::from(s.second)), sc.x(f64::from(s.second + 1)));
        let fast = s.fast_fails.min(s.failures) as f64;
        let other = (s.failures as f64) - fast;
        let y_fast = ylin(fast, err_max, y1);
        let y_all = ylin(fast + other, err_max, y1);
        let bw = (x1 - x0 - 0.5).max(0.5);
        if fast > 0.0 {
            let _ = write!(
                o,
                "<rect x=\"{x0:.1}\" y=\"{y_fast:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"#f59e0b\"/>",
                y1 + PANEL_H - y_fast
            );
        }
        if other > 0.0 {
            let _ = write!(
                o,
                "<rect x=\"{x0:.1}\" y=\"{y_all:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"#d0021b\"/>",
                y_fast - y_all
            );
        }
    }

    // Panel 3: p99 (dark blue) and p50 (light blue), log scale.
    let y2 = panel_top(2);
    let span = sc.log_hi - sc.log_lo;
    let ylog = |v: f64| {
        y2 + PANEL_H - ((v.max(1e-9).log10() - sc.log_lo) / span).clamp(0.0, 1.0) * PANEL_H
    };
    panel_frame(&mut o, y2, "latency ms, log (blue p99, light p50)", "", "");
    // A grid line per decade; labels on every decade while they fit.
    let label_every = if span > 4.0 { 2 } else { 1 };
    for (i, k) in (sc.log_lo as i32..=sc.log_hi as i32).enumerate() {
        let v = 10f64.powi(k);
        let y = ylog(v);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>",
            SVG_W - RIGHT
        );
        if i % label_every == 0 {
            let label = if k < 0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            };
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                LEFT - 4.0,
                y + 4.0
            );
        }
    }
    for (q, color) in [(50, "#93c5fd"), (99, "#1e40af")] {
        let d = broken_path(t.seconds.iter().map(|s| {
            let v = if q == 50 { s.p50_ms } else { s.p99_ms };
            v.map(|v| (mid(s), ylog(v)))
        }));
        let _ = write!(
            o,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
        );
    }

    // Time axis.
    let step = tick_step(sc.duration);
    let mut s = 0;
    while f64::from(s) <= sc.duration {
        let x = sc.x(f64::from(s));
        let _ = write!(
            o,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{bottom:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{s}s</text>",
            bottom + 4.0,
            bottom + 16.0
        );
        s += step;
    }
    o.push_str("</svg>");
    o
}

fn panel_frame(o: &mut String, top: f64, title: &str, max_label: &str, min_label: &str) {
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        top + PANEL_H,
        top + PANEL_H,
        SVG_W - RIGHT,
        top + PANEL_H,
        LEFT - 4.0,
        top + 9.0,
        esc(max_label),
        LEFT - 4.0,
        top + PANEL_H,
        esc(min_label),
        LEFT + 4.0,
        top - 3.0,
        esc(title)
    );
}

/// A table; columns listed in `left` are left-aligned (text), the rest right (numbers).
fn html_table(o: &mut String, head: &[&str], rows: &[Vec<String>], left: &[usize]) {
    o.push_str("<table><tr>");
    for (i, h) in head.iter().enumerate() {
        let class = if left.contains(&i) {
            " class=\"l\""
        } else {
            ""
        };
        let _ = write!(o, "<th{class}>{}</th>", esc(h));
    }
    o.push_str("</tr>");
    for r in rows {
        o.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if left.contains(&i) {
                " class=\"l\""
            } else {
                ""
            };
            // Cells are pre-escaped except the PASS/FAIL marker spans.
            let _ = write!(o, "<td{class}>{c}</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
}

fn verdict_span(pass: bool) -> String {
    if pass {
        "<span class=\"pass\">PASS</span>".to_owned()
    } else {
        "<span class=\"fail\">FAIL</span>".to_owned()
    }
}

/// A self-contained HTML page: one SVG timeline per scope (each cell, then
/// listings and all), fault windows shaded, and the tables of the terminal
/// summary. No script, stylesheet link, image or font from anywhere.
pub fn render_html(r: &Report) -> String {
    let s = &r.scenario;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cellkv loadtest: {}</title><style>{CSS}</style></head><body>",
        esc(&s.name)
    );
    let _ = write!(
        o,
        "<h1>cellkv loadtest: {}</h1><p>{}</p><p class=\"muted\">seed {}, {}, {} s, {} cells</p><p class=\"verdict\">{}</p>",
        esc(&s.name),
        esc(&s.description),
        s.seed,
        esc(&mode_text(&s.mode)),
        r.duration_s,
        r.cells.len(),
        verdict_span(r.passed)
    );

    o.push_str("<h2>SLOs</h2>");
    let rows: Vec<Vec<String>> = r
        .slo
        .iter()
        .map(|x| {
            vec![
                verdict_span(x.pass),
                esc(&x.name),
                esc(&x.target),
                esc(&num(x.actual)),
                esc(&x.note),
            ]
        })
        .collect();
    html_table(
        &mut o,
        &["", "SLO", "target", "actual", "note"],
        &rows,
        &[0, 1, 4],
    );

    o.push_str("<h2>Timelines</h2><p class=\"muted\">Shaded red: fault windows (darker on the faulted cell); blue: the baseline. Requests count in the second they were (meant to be) sent.</p>");
    let sc = Scales::of(r);
    for t in &r.timelines {
        let faulted_in: Vec<&str> = r
            .analysis
            .faults
            .iter()
            .filter(|f| matches!(t.scope, Scope::Cell(c) if f.window.cells.contains(&c)))
            .map(|f| f.window.label.as_str())
            .collect();
        let note = if faulted_in.is_empty() {
            String::new()
        } else {
            format!(
                " <span class=\"fail\">faulted: {}</span>",
                esc(&faulted_in.join(", "))
            )
        };
        let _ = write!(o, "<h3>{}{note}</h3>", esc(&t.scope.to_string()));
        o.push_str(&render_svg(r, t, &sc));
    }

    o.push_str("<h2>Isolation</h2>");
    if r.analysis.faults.is_empty() {
        o.push_str("<p class=\"muted\">No faults in this scenario.</p>");
    }
    for f in &r.analysis.faults {
        let w = &f.window;
        let _ = write!(
            o,
            "<h3>{} [{} s, {} s)</h3><p>keys with errors: {} of {} ({}%), bound {:.3}%</p>",
            esc(&w.label),
            w.start_s,
            w.end_s,
            f.keys.failed,
            f.keys.touched,
            pct(f.error_key_share),
            f.error_key_bound * 100.0
        );
        let mut rows: Vec<Vec<String>> = f
            .healthy
            .iter()
            .map(|h| {
                vec![
                    format!("cell {}", h.cell),
                    "healthy".to_owned(),
                    pct(h.during.availability),
                    ms(h.during.p99_ms),
                    ms(h.baseline.p99_ms),
                    h.p99_ratio
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]
            })
            .collect();
        rows.extend(f.faulted.iter().map(|c| {
            vec![
                format!("cell {}", c.cell),
                "<span class=\"fail\">faulted</span>".to_owned(),
                pct(c.during.availability),
                ms(c.during.p99_ms),
                ms(c.baseline.p99_ms),
                "-".into(),
                ms(c.fast_fail_p99_ms),
                ms(c.time_to_detect_ms),
                c.time_to_recover_s
                    .map_or_else(|| "never".to_owned(), |t| format!("{t} s")),
            ]
        }));
        html_table(
            &mut o,
            &[
                "cell",
                "role",
                "avail %",
                "p99 ms",
                "baseline p99",
                "p99 ratio",
                "fast-fail p99",
                "detect ms",
                "recover",
            ],
            &rows,
            &[0, 1],
        );
    }

    if !r.moves.is_empty() {
        o.push_str("<h2>Moves</h2><p class=\"muted\">Jobs of the control server, as its API reports them. Rates are over the time the job ran (not paused); the write pause is per batch, from fence to release.</p>");
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let rows: Vec<Vec<String>> = r
            .moves
            .iter()
            .map(|m| {
                let j = m.job.as_ref();
                let f = |g: &dyn Fn(&client::admin::JobFigures) -> String| {
                    j.map_or_else(|| "-".to_owned(), g)
                };
                vec![
                    esc(&m.label),
                    f(&|j| esc(&j.job)),
                    if m.done {
                        verdict_span(true).replace("PASS", "done")
                    } else {
                        format!(
                            "{} {}",
                            verdict_span(false),
                            esc(m.error.as_deref().unwrap_or(""))
                        )
                    },
                    f(&|j| format!("{}/{}", j.ranges_done, j.ranges_total)),
                    f(&|j| j.keys_copied.to_string()),
                    f(&|j| format!("{:.1}", j.bytes_copied as f64 / f64::from(1u32 << 20))),
                    m.ended_s
                        .map_or_else(|| "-".to_owned(), |e| format!("{:.1}", e - m.started_s)),
                    f(&|j| format!("{:.1}", j.active_s)),
                    f(&|j| format!("{:.1}", j.mb_per_s)),
                    f(&|j| format!("{:.0}", j.keys_per_s)),
                    f(&|j| opt(j.pause_max_ms)),
                    f(&|j| opt(j.pause_p99_ms)),
                ]
            })
            .collect();
        html_table(
            &mut o,
            &[
                "move",
                "job",
                "status",
                "ranges",
                "keys",
                "MiB",
                "took s",
                "active s",
                "MB/s",
                "keys/s",
                "pause max ms",
                "pause p99 ms",
            ],
            &rows,
            &[0, 1, 2],
        );
    }

    o.push_str("<h2>Phases</h2>");
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let m = &row.summary;
            vec![
                esc(&row.phase),
                esc(&row.scope.to_string()),
                m.requests.to_string(),
                format!("{:.1}", m.throughput_rps),
                pct(m.availability),
                ms(m.p50_ms),
                ms(m.p99_ms),
                ms(m.p999_ms),
                esc(&top_errors(&m.outcomes, 4)),
            ]
        })
        .collect();
    html_table(
        &mut o,
        &[
            "phase", "scope", "requests", "req/s", "avail %", "p50 ms", "p99 ms", "p99.9 ms",
            "errors",
        ],
        &rows,
        &[0, 1, 8],
    );

    let _ = write!(
        o,
        "<h2>Lost writes</h2><p>{} lost of {} acknowledged keys read back ({} unverified).</p>",
        r.lost_writes.len(),
        r.writes_checked,
        r.writes_unverified
    );
    if !r.lost_writes.is_empty() {
        let rows: Vec<Vec<String>> = r
            .lost_writes
            .iter()
            .map(|l| {
                vec![
                    esc(&format!("{:?}", l.kind)),
                    esc(&l.bucket),
                    esc(&l.key),
                    format!("{} {}", l.acked.version, esc(&l.acked.etag)),
                    l.found.as_ref().map_or_else(
                        || "nothing".to_owned(),
                        |f| format!("{} {}", f.version, esc(&f.etag)),
                    ),
                ]
            })
            .collect();
        html_table(
            &mut o,
            &["kind", "bucket", "key", "acked", "found"],
            &rows,
            &[0, 1, 2, 3, 4],
        );
    }
    if let Some(l) = &r.linearizability {
        let _ = write!(o, "<h2>Linearizability</h2><p>{}</p>", esc(&l.summary()));
        if let Some(s) = &l.sampled {
            let _ = write!(o, "<p class=\"muted\">{}</p>", esc(s));
        }
        if !l.outcomes.is_empty() {
            let counts: Vec<String> = l.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = write!(
                o,
                "<p class=\"muted\">Operations by outcome: {}. Failed ones had no effect and are left out; unknown ones may have taken effect any time after they were sent.</p>",
                esc(&counts.join(", "))
            );
        }
        for v in &l.violations {
            let _ = write!(
                o,
                "<h3><span class=\"fail\">not linearizable</span> {} ({} operations)</h3><pre>{}</pre>",
                esc(&v.key),
                v.ops,
                esc(&v.explanation)
            );
        }
        if !l.undecided.is_empty() {
            let rows: Vec<Vec<String>> = l
                .undecided
                .iter()
                .map(|(k, why)| vec![esc(k), esc(why)])
                .collect();
            html_table(&mut o, &["undecided key", "why"], &rows, &[0, 1]);
        }
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_helpers() {
        assert_eq!(nice_max(0.5), 1.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
        assert_eq!(tick_step(60.0), 5);
        assert_eq!(tick_step(600.0), 60);
        assert_eq!(
            esc("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(
            broken_path([Some((1.0, 2.0)), Some((3.0, 4.0)), None, Some((5.0, 6.0))].into_iter()),
            "M1.0,2.0 L3.0,4.0 M5.0,6.0 "
        );
    }
}
