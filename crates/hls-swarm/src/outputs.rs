//! The run's files beside the summary: `--series-json` (the time series) and `--report`
//! (its HTML page). Their paths are checked before the run and written whole at its end.

use crate::config::Settings;
use crate::series::{self, Series};
use crate::summary::{run_info, Summary};

/// `--report` and `--series-json` must name files (not directories) in existing directories: say so
/// before the run rather than after it.
pub fn check_paths(s: &Settings) -> Result<(), String> {
    check_output_path("--report", s.report_html.as_deref())?;
    check_output_path("--series-json", s.series_json.as_deref())
}

/// One output file's path, given with `flag`: a file name in an existing directory.
pub fn check_output_path(flag: &str, path: Option<&std::path::Path>) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    if path.is_dir() {
        return Err(format!(
            "{flag} {}: is a directory; give a file name (for example {}/report.html)",
            path.display(),
            path.display()
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "{flag} {}: directory {} does not exist; create it or choose another file",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Write `--series-json` and `--report` (each whole or not at all) and say so on stderr.
pub fn write(s: &Settings, summary: &Summary, recorded: Series) -> anyhow::Result<()> {
    if s.series_json.is_none() && s.report_html.is_none() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let doc = series::SeriesDoc {
        format: series::FORMAT.to_string(),
        run: run_info(s, summary),
        series: recorded,
    };
    if let Some(path) = &s.series_json {
        let text = serde_json::to_string(&doc)? + "\n";
        write_whole(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write series JSON {}: {e}", path.display()))?;
    }
    if let Some(path) = &s.report_html {
        let html = crate::report_html::render(&crate::report_html::ReportInput::single(doc));
        write_whole(path, html.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write report {}: {e}", path.display()))?;
        // The time covers the series JSON too: all the run's end spends on them.
        eprintln!(
            "hls-swarm: report written to {} ({} bytes in {} ms)",
            path.display(),
            html.len(),
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Write through a temporary file beside `path` and rename it, so a failed write leaves
/// nothing half-written.
pub fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.partial", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let res = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
