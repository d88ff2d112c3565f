//! `--report FILE.html`: one self-contained HTML page of a run (or of several replicas of a
//! run): settings and verdict at the top, then charts of the time series (`series`) against
//! run time, with the ramp and the pass/fail threshold marked.
//!
//! The charts are inline SVG written here, with no script, font, image or style from
//! anywhere else, so the page opens offline. The output depends only on the [`ReportInput`]:
//! no clock, no randomness, maps iterated in key order, numbers printed with fixed precision,
//! so the same series gives the same bytes (tested against a recorded series).

use std::fmt::Write as _;

use crate::series::{Point, RunInfo, Series, SeriesDoc};

/// Everything a report shows: one run, one or more replicas (swarm processes) of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    pub run: RunInfo,
    /// One line per replica where a chart compares them; a single replica draws one line per
    /// kind instead.
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub name: String,
    pub series: Series,
}

impl ReportInput {
    /// The report of one swarm process, from its `--series-json` document.
    pub fn single(doc: SeriesDoc) -> ReportInput {
        ReportInput {
            run: doc.run,
            replicas: vec![Replica {
                name: "swarm".into(),
                series: doc.series,
            }],
        }
    }
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 250.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 30.0;
/// Line colours, in order (colour-blind friendly, Okabe–Ito and Tableau).
const PALETTE: [&str; 10] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f", "#bcbd22",
    "#8c564b", "#000000",
];

/// How a chart's values read.
#[derive(Clone, Copy)]
enum Unit {
    Count,
    PerSecond,
    BitsPerSecond,
    Millis,
    Percent,
}

struct Line {
    label: String,
    /// (run time in seconds, value); None breaks the line.
    points: Vec<(f64, Option<f64>)>,
    dashed: bool,
}

struct Chart {
    id: String,
    title: String,
    note: String,
    unit: Unit,
    lines: Vec<Line>,
    /// A horizontal pass/fail line: (value, label).
    threshold: Option<(f64, String)>,
    /// Drawn only when it has values (an extra that may not be measured in a run).
    optional: bool,
}

/// The page.
pub fn render(input: &ReportInput) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let run = &input.run;
    let t0 = input
        .replicas
        .iter()
        .map(|r| r.series.started_unix_ms)
        .min()
        .unwrap_or(0);
    let charts = charts(input, t0);
    let t_end = charts
        .iter()
        .flat_map(|c| c.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)))
        .fold(run.duration_s.max(1.0), f64::max);
    let ramp_end = ramp_end_s(run);

    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<title>hls-swarm report: {} — {}</title>",
        esc(&run.url),
        if run.passed { "PASS" } else { "FAIL" }
    );
    o.push_str(STYLE);
    o.push_str("</head>\n<body>\n");
    header(&mut o, input, t0);
    for c in &charts {
        chart(&mut o, c, t_end, ramp_end);
    }
    o.push_str(
        "<footer>Written by hls-swarm. Each point covers one interval of the run (see \
         <code>--series-json</code>); rates are per second of that interval, latencies its \
         p50/p99. The shaded band is the ramp (viewers still starting).</footer>\n",
    );
    o.push_str("</body>\n</html>\n");
    o
}

const STYLE: &str = "<style>
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1000px;color:#1a1a1a;background:#fff;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 2px}
.url{color:#444;font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:13px;word-break:break-all}
.verdict{display:inline-block;font-weight:700;font-size:18px;padding:4px 12px;border-radius:4px;color:#fff;margin:10px 0}
.pass{background:#1a7f37}.fail{background:#cf222e}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{padding:2px 12px 2px 0;text-align:left;vertical-align:top}th{color:#555;font-weight:500}
.cols{display:flex;gap:40px;flex-wrap:wrap}
.note{color:#555;font-size:12px;margin:0 0 4px}
svg{display:block;font-size:11px;font-family:inherit}
svg .grid{stroke:#e5e5e5;stroke-width:1}svg .axis{stroke:#888;stroke-width:1}
svg .ramp{fill:#f0f0f0}svg .threshold{stroke:#cf222e;stroke-width:1.5;stroke-dasharray:6 4}
svg .tl{fill:#cf222e}svg .rl{fill:#888}
svg path{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
.legend{font-size:12px;margin:2px 0 0 72px}.legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
footer{color:#777;font-size:12px;margin-top:32px}
</style>
";

fn header(o: &mut String, input: &ReportInput, t0: u64) {
    let run = &input.run;
    o.push_str("<header>\n<h1>hls-swarm load test</h1>\n");
    let _ = writeln!(o, "<div class=\"url\">{}</div>", esc(&run.url));
    let _ = writeln!(
        o,
        "<div class=\"verdict {}\" id=\"verdict\">{}: error rate {} (limit {})</div>",
        if run.passed { "pass" } else { "fail" },
        if run.passed { "PASS" } else { "FAIL" },
        pct(run.error_rate),
        pct(run.max_error_rate)
    );
    let peak = input
        .replicas
        .iter()
        .map(|r| r.series.points.iter().map(|p| p.viewers).max().unwrap_or(0))
        .sum::<i64>();
    let stalls: u64 = input
        .replicas
        .iter()
        .flat_map(|r| r.series.points.iter().map(|p| p.stalls))
        .sum();
    let bytes: u64 = input
        .replicas
        .iter()
        .flat_map(|r| r.series.points.iter().map(|p| p.bytes.total()))
        .sum();
    o.push_str("<div class=\"cols\">\n<table>\n");
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row(o, "started", utc(t0));
    row(
        o,
        "ran",
        format!("{} (stopped by {})", secs(run.duration_s), run.stopped_by),
    );
    row(
        o,
        "viewers",
        format!("{} (peak {peak} active)", run.clients),
    );
    row(
        o,
        "ramp",
        format!(
            "{} viewers/s{}: until {}",
            num(run.ramp_rate),
            if run.ramp_jitter_s > 0.0 {
                format!(" + up to {} jitter", secs(run.ramp_jitter_s))
            } else {
                String::new()
            },
            secs(ramp_end_s(run))
        ),
    );
    row(
        o,
        "requests",
        format!("{} ({} errors)", run.requests, run.errors),
    );
    row(o, "received", crate::summary::human_bytes(bytes));
    row(o, "stalls", stalls.to_string());
    if input.replicas.len() > 1 {
        let names: Vec<&str> = input.replicas.iter().map(|r| r.name.as_str()).collect();
        row(o, "replicas", names.join(", "));
    }
    o.push_str("</table>\n<table>\n");
    for (k, v) in &run.settings {
        row(o, k, v.clone());
    }
    o.push_str("</table>\n</div>\n</header>\n");
}

/// When the last viewer has started: (clients − 1) / rate + jitter.
fn ramp_end_s(run: &RunInfo) -> f64 {
    if run.ramp_rate <= 0.0 {
        return 0.0;
    }
    (run.clients.saturating_sub(1)) as f64 / run.ramp_rate + run.ramp_jitter_s
}

/// What a line shows of each point (None: nothing to show, the line breaks).
type ValueOf<'a> = dyn Fn(&Point) -> Option<f64> + 'a;

fn charts(input: &ReportInput, t0: u64) -> Vec<Chart> {
    let multi = input.replicas.len() > 1;
    let label = |r: &Replica, what: &str| {
        if multi {
            format!("{} {what}", r.name)
        } else {
            what.to_string()
        }
    };
    // (run time of the point's middle, point) per replica, aligned on the earliest start.
    let at = |r: &Replica, p: &Point| {
        (r.series.started_unix_ms.saturating_sub(t0)) as f64 / 1000.0 + p.t_s + p.dur_s / 2.0
    };
    let rate = |p: &Point, n: u64| {
        if p.dur_s > 0.0 {
            Some(n as f64 / p.dur_s)
        } else {
            None
        }
    };
    let lines = |whats: &[(&str, &ValueOf)]| -> Vec<Line> {
        let mut out = Vec::new();
        for r in &input.replicas {
            for (what, f) in whats {
                out.push(Line {
                    label: label(r, what),
                    points: r.series.points.iter().map(|p| (at(r, p), f(p))).collect(),
                    dashed: false,
                });
            }
        }
        out
    };
    let mut charts = Vec::new();

    charts.push(Chart {
        id: "viewers".into(),
        title: "Viewers".into(),
        note: "active: viewer tasks running (also while waiting to reconnect); watching: in a \
               session that loaded its playlists"
            .into(),
        unit: Unit::Count,
        lines: lines(&[
            ("active", &|p| Some(p.viewers as f64)),
            ("watching", &|p| Some(p.watching as f64)),
        ]),
        threshold: None,
        optional: false,
    });
    charts.push(Chart {
        id: "requests".into(),
        title: "Requests per second".into(),
        note: "by what they fetched; every attempt counts, failed ones too".into(),
        unit: Unit::PerSecond,
        lines: lines(&[
            ("segment", &|p| rate(p, p.requests.segment)),
            ("playlist", &|p| rate(p, p.requests.playlist)),
            ("master", &|p| rate(p, p.requests.master)),
        ]),
        threshold: None,
        optional: false,
    });
    charts.push(Chart {
        id: "throughput".into(),
        title: "Throughput".into(),
        note: "body bytes received, as bits per second".into(),
        unit: Unit::BitsPerSecond,
        lines: lines(&[
            ("segment", &|p| rate(p, p.bytes.segment * 8)),
            ("playlist", &|p| rate(p, p.bytes.playlist * 8)),
            ("master", &|p| rate(p, p.bytes.master * 8)),
        ]),
        threshold: None,
        optional: false,
    });
    charts.push(Chart {
        id: "error-rate".into(),
        title: "Error rate".into(),
        note: "failed attempts / attempts in each interval (at most 100 %); the dashed line \
               is the run's pass/fail limit (over the whole run)"
            .into(),
        unit: Unit::Percent,
        lines: lines(&[("errors / requests", &|p| {
            let (e, r) = (p.errors.total(), p.requests.total());
            match (e, r) {
                (0, 0) => None,
                (_, 0) => Some(100.0),
                // A timeout fails in a later interval than it started in: at most 100 %.
                _ => Some((e as f64 * 100.0 / r as f64).min(100.0)),
            }
        })]),
        threshold: Some((
            input.run.max_error_rate * 100.0,
            format!("limit {}", pct(input.run.max_error_rate)),
        )),
        optional: false,
    });
    // Errors by kind: only the kinds that occurred, in name order.
    let mut kinds: Vec<&str> = input
        .replicas
        .iter()
        .flat_map(|r| r.series.points.iter())
        .flat_map(|p| p.error_kinds.keys().map(String::as_str))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut err_lines = Vec::new();
    for r in &input.replicas {
        for k in &kinds {
            err_lines.push(Line {
                label: label(r, k),
                points: r
                    .series
                    .points
                    .iter()
                    .map(|p| (at(r, p), rate(p, *p.error_kinds.get(*k).unwrap_or(&0))))
                    .collect(),
                dashed: false,
            });
        }
    }
    charts.push(Chart {
        id: "errors".into(),
        title: "Errors per second by kind".into(),
        note: if kinds.is_empty() {
            "no errors in this run".into()
        } else {
            "failed request attempts, by why they failed".into()
        },
        unit: Unit::PerSecond,
        lines: err_lines,
        threshold: None,
        optional: false,
    });
    charts.push(Chart {
        id: "stalls".into(),
        title: "Stalls, reconnects, skipped segments".into(),
        note: "per second; a stall is a segment that arrived after the viewer's buffer ran out"
            .into(),
        unit: Unit::PerSecond,
        lines: lines(&[
            ("stalls", &|p| rate(p, p.stalls)),
            ("reconnects", &|p| rate(p, p.reconnects)),
            ("skipped", &|p| rate(p, p.segments_skipped)),
        ]),
        threshold: None,
        optional: false,
    });
    let mut lat = lines(&[
        ("p50", &|p| p.segment_latency_ms.p50),
        ("p99", &|p| p.segment_latency_ms.p99),
    ]);
    for (i, l) in lat.iter_mut().enumerate() {
        l.dashed = i % 2 == 1 && multi;
    }
    charts.push(Chart {
        id: "segment-latency".into(),
        title: "Segment download time".into(),
        note: "request to last body byte, of the downloads that finished in each interval".into(),
        unit: Unit::Millis,
        lines: lat,
        threshold: None,
        optional: false,
    });
    // Extra distributions (for example latency behind live), by key.
    let mut extras: Vec<(String, String, String)> = input
        .replicas
        .iter()
        .flat_map(|r| r.series.extras.iter())
        .map(|e| (e.key.clone(), e.label.clone(), e.unit.clone()))
        .collect();
    extras.sort();
    extras.dedup_by(|a, b| a.0 == b.0);
    for (key, title, unit) in extras {
        let p50 = |p: &Point| p.extra.get(&key).and_then(|q| q.p50);
        let p99 = |p: &Point| p.extra.get(&key).and_then(|q| q.p99);
        let ls = lines(&[("p50", &p50), ("p99", &p99)]);
        let measured = ls.iter().any(|l| l.points.iter().any(|p| p.1.is_some()));
        charts.push(Chart {
            id: format!("extra-{}", key.replace('_', "-")),
            title,
            note: if measured {
                format!("p50 and p99 per interval ({unit})")
            } else {
                "not measured in this run".into()
            },
            unit: if unit == "ms" {
                Unit::Millis
            } else {
                Unit::Count
            },
            lines: ls,
            threshold: None,
            optional: true,
        });
    }
    // Per variant.
    let names = short_names(
        &input
            .replicas
            .iter()
            .flat_map(|r| r.series.variants.iter().cloned())
            .collect::<Vec<_>>(),
    );
    let per_variant = |f: &dyn Fn(&Point, usize) -> Option<f64>| {
        let mut out = Vec::new();
        for r in &input.replicas {
            for (vi, url) in r.series.variants.iter().enumerate() {
                let name = names
                    .iter()
                    .find(|(u, _)| u == url)
                    .map(|(_, n)| n.as_str())
                    .unwrap_or(url);
                out.push(Line {
                    label: label(r, name),
                    points: r
                        .series
                        .points
                        .iter()
                        .map(|p| (at(r, p), f(p, vi)))
                        .collect(),
                    dashed: false,
                });
            }
        }
        out
    };
    if input.replicas.iter().any(|r| !r.series.variants.is_empty()) {
        charts.push(Chart {
            id: "variant-watching".into(),
            title: "Watching viewers per variant".into(),
            note: String::new(),
            unit: Unit::Count,
            lines: per_variant(&|p, i| p.variants.get(i).map(|v| v.watching as f64)),
            threshold: None,
            optional: false,
        });
        charts.push(Chart {
            id: "variant-throughput".into(),
            title: "Segment throughput per variant".into(),
            note: "bytes of the segments downloaded, as bits per second".into(),
            unit: Unit::BitsPerSecond,
            lines: per_variant(&|p, i| p.variants.get(i).and_then(|v| rate(p, v.bytes * 8))),
            threshold: None,
            optional: false,
        });
        charts.push(Chart {
            id: "variant-errors".into(),
            title: "Errors per second per variant".into(),
            note: "failed segment attempts and media playlist loads".into(),
            unit: Unit::PerSecond,
            lines: per_variant(&|p, i| p.variants.get(i).and_then(|v| rate(p, v.errors))),
            threshold: None,
            optional: false,
        });
        charts.push(Chart {
            id: "variant-latency".into(),
            title: "Segment download time p99 per variant".into(),
            note: String::new(),
            unit: Unit::Millis,
            lines: per_variant(&|p, i| p.variants.get(i).and_then(|v| v.segment_latency_ms.p99)),
            threshold: None,
            optional: false,
        });
    }
    charts
}

/// Short names for variant URLs: what differs between them (`720p` for
/// `http://o/720p/stream.m3u8` beside `http://o/1080p/stream.m3u8`); a lone URL keeps its
/// path's last two parts.
fn short_names(urls: &[String]) -> Vec<(String, String)> {
    let mut uniq: Vec<&String> = urls.iter().collect();
    uniq.sort();
    uniq.dedup();
    if uniq.len() == 1 {
        let u = uniq[0];
        let path = u.splitn(4, '/').nth(3).unwrap_or(u);
        return vec![(u.clone(), path.to_string())];
    }
    let parts: Vec<Vec<&str>> = uniq.iter().map(|u| u.split('/').collect()).collect();
    let min = parts.iter().map(Vec::len).min().unwrap_or(0);
    let pre = (0..min)
        .take_while(|&i| parts.iter().all(|p| p[i] == parts[0][i]))
        .count();
    let suf = (0..min - pre)
        .take_while(|&i| {
            parts
                .iter()
                .all(|p| p[p.len() - 1 - i] == parts[0][parts[0].len() - 1 - i])
        })
        .count();
    uniq.iter()
        .zip(&parts)
        .map(|(u, p)| {
            let mid = p[pre..p.len() - suf].join("/");
            (
                (*u).clone(),
                if mid.is_empty() { (*u).clone() } else { mid },
            )
        })
        .collect()
}

fn chart(o: &mut String, c: &Chart, t_end: f64, ramp_end: f64) {
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let ymax_data = c
        .lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let ymax_data = match &c.threshold {
        Some((v, _)) => ymax_data.max(*v),
        None => ymax_data,
    };
    let (ystep, ymax) = nice_axis(ymax_data);
    let (xstep, _) = nice_time_step(t_end);
    let x = |t: f64| LEFT + t / t_end * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;

    let _ = writeln!(o, "<section id=\"{}\">", esc(&c.id));
    let _ = writeln!(o, "<h2>{}</h2>", esc(&c.title));
    if !c.note.is_empty() {
        let _ = writeln!(o, "<p class=\"note\">{}</p>", esc(&c.note));
    }
    if c.optional
        && c.lines
            .iter()
            .all(|l| l.points.iter().all(|p| p.1.is_none()))
    {
        o.push_str("</section>\n");
        return;
    }
    let _ = writeln!(
        o,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(&c.title)
    );
    // The ramp band, behind everything.
    if ramp_end > 0.0 {
        let w = (x(ramp_end.min(t_end)) - LEFT).max(0.0);
        let _ = writeln!(
            o,
            "<rect class=\"ramp\" x=\"{LEFT:.1}\" y=\"{TOP:.1}\" width=\"{w:.1}\" height=\"{ph:.1}\"><title>ramp: viewers starting until {}</title></rect>",
            secs(ramp_end)
        );
        // Named where there is room for the word; a near-instant ramp is only a sliver.
        if w >= 32.0 {
            let _ = writeln!(
                o,
                "<text class=\"rl\" x=\"{:.1}\" y=\"{:.1}\">ramp</text>",
                LEFT + 4.0,
                TOP + 12.0
            );
        }
    }
    // Grid and y labels.
    let mut v = 0.0;
    while v <= ymax + ystep * 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            o,
            "<line class=\"grid\" x1=\"{LEFT:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            esc(&fmt_value(v, c.unit, ystep))
        );
        v += ystep;
    }
    // X ticks.
    let mut t = 0.0;
    while t <= t_end + 1e-9 {
        let xx = x(t);
        let _ = writeln!(
            o,
            "<line class=\"axis\" x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\"/><text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 16.0,
            clock(t)
        );
        t += xstep;
    }
    let _ = writeln!(
        o,
        "<line class=\"axis\" x1=\"{LEFT:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">run time</text>",
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        LEFT + pw,
        TOP + ph + 28.0
    );
    if let Some((v, label)) = &c.threshold {
        let yy = y(*v);
        let _ = writeln!(
            o,
            "<line class=\"threshold\" x1=\"{LEFT:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\"><title>{}</title></line><text class=\"tl\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            esc(label),
            LEFT + pw - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    for (i, l) in c.lines.iter().enumerate() {
        let d = path_data(&l.points, x, y, pw);
        if d.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "<path class=\"line\" d=\"{d}\" stroke=\"{}\"{}><title>{}</title></path>",
            PALETTE[i % PALETTE.len()],
            if l.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            },
            esc(&l.label)
        );
    }
    o.push_str("</svg>\n<div class=\"legend\">");
    for (i, l) in c.lines.iter().enumerate() {
        let _ = write!(
            o,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            esc(&l.label)
        );
    }
    if c.threshold.is_some() {
        o.push_str("<span><i style=\"background:#cf222e\"></i>pass/fail limit</span>");
    }
    o.push_str("</div>\n</section>\n");
}

/// SVG path data; a None value breaks the line. With more points than pixels, each pixel
/// column keeps its lowest and highest value (so spikes stay visible).
fn path_data(
    points: &[(f64, Option<f64>)],
    x: impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    plot_width: f64,
) -> String {
    let mut pts: Vec<Option<(f64, f64)>> = points
        .iter()
        .map(|(t, v)| v.map(|v| (x(*t), y(v))))
        .collect();
    if pts.len() as f64 > plot_width {
        let mut out: Vec<Option<(f64, f64)>> = Vec::new();
        let mut col: Vec<(f64, f64)> = Vec::new();
        let flush = |col: &mut Vec<(f64, f64)>, out: &mut Vec<Option<(f64, f64)>>| {
            if col.is_empty() {
                return;
            }
            // In SVG coordinates the lowest value has the largest y.
            let lowest = col
                .iter()
                .copied()
                .fold(col[0], |a, b| if b.1 > a.1 { b } else { a });
            let highest = col
                .iter()
                .copied()
                .fold(col[0], |a, b| if b.1 < a.1 { b } else { a });
            let (a, b) = if lowest.0 <= highest.0 {
                (lowest, highest)
            } else {
                (highest, lowest)
            };
            out.push(Some(a));
            if a != b {
                out.push(Some(b));
            }
            col.clear();
        };
        for p in pts {
            match p {
                None => {
                    flush(&mut col, &mut out);
                    out.push(None);
                }
                Some(p) => {
                    if col.first().is_some_and(|c| c.0.floor() != p.0.floor()) {
                        flush(&mut col, &mut out);
                    }
                    col.push(p);
                }
            }
        }
        flush(&mut col, &mut out);
        pts = out;
    }
    // Runs of points without a gap; a lone point is drawn as a dot (round caps on a
    // zero-length segment).
    let mut d = String::new();
    for run in pts.split(Option::is_none) {
        let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
        let Some(first) = run.first() else { continue };
        if !d.is_empty() {
            d.push(' ');
        }
        let _ = write!(d, "M{:.1},{:.1}", first.0, first.1);
        let rest = if run.len() == 1 { &run[..] } else { &run[1..] };
        for (px, py) in rest {
            let _ = write!(d, "L{px:.1},{py:.1}");
        }
    }
    d
}

/// A round step for about five grid lines up to at least `max`: (step, top).
fn nice_axis(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (0.25, 1.0);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

/// A round time step giving 6 to 12 ticks over `end` seconds.
fn nice_time_step(end: f64) -> (f64, usize) {
    let steps = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 21600.0, 43200.0, 86400.0,
    ];
    let s = steps
        .iter()
        .copied()
        .find(|s| end / s <= 12.0)
        .unwrap_or(86400.0);
    (s, (end / s) as usize)
}

fn clock(t: f64) -> String {
    let t = t.round() as u64;
    if t < 60 {
        format!("{t}s")
    } else if t < 3600 {
        format!("{}:{:02}", t / 60, t % 60)
    } else {
        format!("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
    }
}

fn fmt_value(v: f64, unit: Unit, step: f64) -> String {
    // As many decimals as the step needs (0.25 → 2, 0.5 → 1, 5 → 0).
    let decimals = (0..4)
        .find(|d| {
            let scaled = step * 10f64.powi(*d as i32);
            (scaled - scaled.round()).abs() < 1e-9
        })
        .unwrap_or(4);
    match unit {
        Unit::Count => format!("{v:.decimals$}"),
        Unit::PerSecond => si(v, "/s"),
        Unit::BitsPerSecond => si(v, "bit/s"),
        Unit::Millis => {
            if v >= 1000.0 {
                format!("{} s", trim(v / 1000.0))
            } else {
                format!("{v:.decimals$} ms")
            }
        }
        Unit::Percent => format!("{v:.decimals$}%"),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn si(v: f64, unit: &str) -> String {
    let (d, p) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{} {p}{unit}", trim(v / d))
}

fn num(v: f64) -> String {
    trim(v)
}

fn pct(f: f64) -> String {
    format!("{}%", trim(f * 100.0))
}

fn secs(s: f64) -> String {
    format!("{} s", trim(s))
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in ms since 1970 (no time zone data needed).
fn utc(ms: u64) -> String {
    let s = ms / 1000;
    let (days, rem) = (s / 86400, s % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// HTML-escape text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_format_as_expected() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_764_633_600_000), "2025-12-02 00:00:00 UTC");
        assert_eq!(nice_axis(7.3), (2.0, 8.0));
        assert_eq!(nice_axis(0.0), (0.25, 1.0));
        assert_eq!(clock(90.0), "1:30");
        assert_eq!(si(2_500_000.0, "bit/s"), "2.5 Mbit/s");
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        let names = short_names(&[
            "http://h:1/720p/stream.m3u8".to_string(),
            "http://h:1/1080p/stream.m3u8".to_string(),
        ]);
        assert_eq!(names[0].1, "1080p");
        assert_eq!(names[1].1, "720p");
    }

    #[test]
    fn a_gap_breaks_the_line_and_decimation_keeps_spikes() {
        let pts = vec![
            (0.0, Some(1.0)),
            (1.0, None),
            (2.0, Some(2.0)),
            (3.0, Some(3.0)),
        ];
        let d = path_data(&pts, |t| t * 10.0, |v| 100.0 - v, 1000.0);
        assert_eq!(d, "M0.0,99.0L0.0,99.0 M20.0,98.0L30.0,97.0");
        // 3000 points into 100 pixels: one spike of 50 survives.
        let many: Vec<(f64, Option<f64>)> = (0..3000)
            .map(|i| (i as f64, Some(if i == 1234 { 50.0 } else { 1.0 })))
            .collect();
        let d = path_data(&many, |t| t / 30.0, |v| 100.0 - v, 100.0);
        assert!(d.contains(",50.0"), "{d}");
        assert!(d.matches(['L', 'M']).count() <= 201, "{}", d.len());
    }
}
