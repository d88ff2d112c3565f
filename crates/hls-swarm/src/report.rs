//! `hls-swarm report`: one verdict for a swarm run as several replicas (Docker Swarm tasks,
//! Kubernetes Job pods). Finds the replicas (every address of `--dns NAME`, or the URLs
//! given), reads each one's `/summary` (src/summary.rs), waits until every replica's run has
//! finished (they keep serving with `--linger`), merges them (counters summed, percentiles
//! from the merged histogram buckets) and prints the single-run summary format followed by one
//! line per replica. Exit status as a single run: 0 when the merged error rate is within the
//! limit, 1 when above it or when a replica could not be read; 2 for bad arguments.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::ReportArgs;
use crate::summary::{self, render_summary, Replica, SummaryDoc};

/// Why a replica's document could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: HTTP status {1}")]
    Status(String, String),
    #[error("{0}: not a /summary document: {1}")]
    Json(String, serde_json::Error),
    #[error("{0}: unsupported format {1:?} (expected {2:?})")]
    Format(String, String, &'static str),
}

/// Where a replica's /summary is: host (for the Host header), socket address, path.
#[derive(Debug, Clone)]
struct Target {
    label: String,
    host: String,
    addr: SocketAddr,
    path: String,
}

pub fn run(a: &ReportArgs) -> i32 {
    if let Err(e) = crate::outputs::check_output_path("--report", a.report_html.as_deref()) {
        eprintln!("hls-swarm report: {e}");
        return 2;
    }
    let started = Instant::now();
    let mut last_note = Instant::now();
    let replicas = loop {
        let mut problems = vec![];
        // A name that does not resolve yet (tasks still starting) is waited for.
        let targets = match targets(a) {
            Ok(t) => t,
            Err(NoTargets::Bad(e)) => {
                eprintln!("hls-swarm report: {e}");
                return 2;
            }
            Err(NoTargets::Unresolved(e)) => {
                problems.push(e);
                vec![]
            }
        };
        let mut got = vec![];
        for t in &targets {
            match fetch(t) {
                Ok(doc) if doc.finished => got.push(Replica {
                    source: t.label.clone(),
                    doc,
                }),
                Ok(_) => problems.push(format!("{} is still running", t.label)),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let want = a.expect.unwrap_or(0).max(1);
        if problems.is_empty() && got.len() >= want {
            break got;
        }
        if got.len() < want && problems.is_empty() {
            problems.push(format!(
                "{} replica(s) found, waiting for {want} (--expect)",
                targets.len()
            ));
        }
        if started.elapsed() >= a.wait {
            eprintln!(
                "hls-swarm report: after {:.0} s (--wait): {}",
                a.wait.as_secs_f64(),
                problems.join("; ")
            );
            return 1;
        }
        if last_note.elapsed() >= Duration::from_secs(10) {
            last_note = Instant::now();
            tracing::info!(
                finished = got.len(),
                replicas = targets.len(),
                "waiting: {}",
                problems.join("; ")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let merged = match summary::merge(&replicas, a.max_error_rate) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("hls-swarm report: {e}");
            return 1;
        }
    };
    let mut out = render_summary(&merged);
    out.push_str(&format!(
        "  replicas:  {} (ramp started within {})\n",
        replicas.len(),
        start_spread(&replicas)
    ));
    for r in &replicas {
        out.push_str(&replica_line(r));
    }
    print!("{out}");
    if let Some(path) = &a.summary_json {
        let mut v = serde_json::to_value(&merged).expect("json");
        v["replicas"] = replicas
            .iter()
            .map(|r| {
                serde_json::json!({
                    "source": r.source,
                    "started_at": r.doc.started_at,
                    "summary": r.doc.summary,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&v).expect("json") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!(
                "hls-swarm report: cannot write summary JSON {}: {e}",
                path.display()
            );
            return 1;
        }
    }
    if let Some(path) = &a.report_html {
        let written = report_input(&merged, &replicas).and_then(|input| {
            let html = crate::report_html::render(&input);
            crate::outputs::write_whole(path, html.as_bytes())
                .map_err(|e| format!("cannot write report {}: {e}", path.display()))
        });
        match written {
            Ok(()) => eprintln!("hls-swarm report: report written to {}", path.display()),
            Err(e) => {
                eprintln!("hls-swarm report: {e}");
                return 1;
            }
        }
    }
    if merged.passed {
        0
    } else {
        1
    }
}

/// The HTML report's input for a merged run: the merged verdict and figures at the top, each
/// replica's series as its own line (replicas that started together line up on the time axis).
fn report_input(
    merged: &summary::Summary,
    replicas: &[Replica],
) -> Result<crate::report_html::ReportInput, String> {
    let mut lines = vec![];
    for r in replicas {
        let Some(doc) = &r.doc.series else {
            return Err(format!(
                "{}: its /summary has no time series (an hls-swarm older than --report); upgrade the replicas or leave out --report",
                r.source
            ));
        };
        lines.push((r.source.clone(), doc));
    }
    let first = &lines.first().ok_or("no replicas")?.1.run;
    let mut settings = first.settings.clone();
    settings.insert("replicas".to_string(), replicas.len().to_string());
    let run = crate::series::RunInfo {
        url: merged.url.clone(),
        clients: lines.iter().map(|(_, d)| d.run.clients).sum(),
        ramp_rate: lines.iter().map(|(_, d)| d.run.ramp_rate).sum(),
        ramp_jitter_s: first.ramp_jitter_s,
        duration_s: merged.duration_s,
        stopped_by: merged.stopped_by.clone(),
        max_error_rate: merged.max_error_rate,
        error_rate: merged.error_rate,
        requests: merged.requests.total,
        errors: merged.errors.total,
        passed: merged.passed,
        settings,
    };
    Ok(crate::report_html::ReportInput {
        run,
        replicas: lines
            .into_iter()
            .map(|(name, d)| crate::report_html::Replica {
                name,
                series: d.series.clone(),
            })
            .collect(),
    })
}

/// Why the replicas are not known (yet).
enum NoTargets {
    /// Bad input: exit 2 at once.
    Bad(String),
    /// A name that does not resolve (yet).
    Unresolved(String),
}

/// The replicas to read now (a DNS name is resolved again at every round).
fn targets(a: &ReportArgs) -> Result<Vec<Target>, NoTargets> {
    if let Some(name) = &a.dns {
        let mut addrs: Vec<SocketAddr> = (name.as_str(), a.port)
            .to_socket_addrs()
            .map_err(|e| NoTargets::Unresolved(format!("cannot resolve --dns {name}: {e}")))?
            .collect();
        addrs.sort();
        addrs.dedup();
        return Ok(addrs
            .into_iter()
            .map(|addr| Target {
                label: addr.to_string(),
                host: addr.to_string(),
                addr,
                path: "/summary".into(),
            })
            .collect());
    }
    a.urls.iter().map(|u| url_target(u)).collect()
}

fn url_target(u: &str) -> Result<Target, NoTargets> {
    let url =
        crate::http::Url::parse(u).map_err(|e| NoTargets::Bad(format!("bad replica URL {e}")))?;
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| NoTargets::Unresolved(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| NoTargets::Unresolved(format!("{} resolves to no address", url.host)))?;
    let path = if url.path == "/" || url.path.is_empty() {
        "/summary".to_string()
    } else {
        url.path.clone()
    };
    Ok(Target {
        label: u.to_string(),
        host: format!("{}:{}", url.host, url.port),
        addr,
        path,
    })
}

/// GET a replica's /summary (HTTP/1.1, `Connection: close`).
fn fetch(t: &Target) -> Result<SummaryDoc, FetchError> {
    let io = |e| FetchError::Io(t.label.clone(), e);
    let mut s = TcpStream::connect_timeout(&t.addr, Duration::from_secs(3)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        t.path, t.host
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(FetchError::Status(t.label.clone(), status));
    }
    let doc: SummaryDoc =
        serde_json::from_str(body).map_err(|e| FetchError::Json(t.label.clone(), e))?;
    if doc.format != summary::FORMAT {
        return Err(FetchError::Format(
            t.label.clone(),
            doc.format,
            summary::FORMAT,
        ));
    }
    Ok(doc)
}

fn replica_line(r: &Replica) -> String {
    let s = &r.doc.summary;
    let h = &r.doc.segment_latency_histogram;
    let ms = |q: f64| {
        h.quantile(q)
            .map(|v| format!("{:.1} ms", v * 1e3))
            .unwrap_or("-".into())
    };
    format!(
        "    {}: viewers {}/{}, requests {}, errors {} ({:.3}%), p50 {}, p99 {}, started {}, {}\n",
        r.source,
        s.viewers.started,
        s.viewers.target,
        s.requests.total,
        s.errors.total,
        s.error_rate * 100.0,
        ms(0.5),
        ms(0.99),
        r.doc.started_at.as_deref().unwrap_or("-"),
        if s.passed { "PASS" } else { "FAIL" },
    )
}

/// The spread of the replicas' ramp start instants, e.g. `12 ms`.
fn start_spread(replicas: &[Replica]) -> String {
    let times: Vec<std::time::SystemTime> = replicas
        .iter()
        .filter_map(|r| r.doc.started_at.as_deref())
        .filter_map(|t| crate::schedule::parse_rfc3339_utc(t).ok())
        .collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(lo), Some(hi)) => format!(
            "{} ms",
            hi.duration_since(*lo).unwrap_or_default().as_millis()
        ),
        _ => "-".into(),
    }
}
