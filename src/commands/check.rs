//! `imgbuild check`: validates every profile, layer group and payload binary (src/check.rs);
//! exit 0 only when all hold.

use anyhow::Result;

use super::Ctx;

/// `check`: the report on stderr (or JSON on stdout); an error when it found problems.
pub fn run(ctx: &Ctx, json: bool) -> Result<()> {
    let report = crate::check::run(&ctx.root, true);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            eprintln!("{f}");
        }
        eprintln!(
            "check: {} profiles, {} layer groups, {} problem(s)",
            report.profiles,
            report.layer_groups,
            report.findings.len()
        );
    }
    if report.findings.is_empty() {
        Ok(())
    } else {
        Err(
            crate::error::BadInput(format!("check found {} problem(s)", report.findings.len()))
                .into(),
        )
    }
}
