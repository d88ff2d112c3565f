//! `imgbuild sbom SOURCE [--format spdx|cyclonedx] [-o FILE|-]`: prints the SBOM of an image.
//! SOURCE as for `push`: a container tar or OCI directory (the SBOM is read out of its
//! layers) or `KIND/PROFILE` (the SBOM is made from the profile's inputs, byte for byte what
//! `container` puts in the image, without building a layer).

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use super::container::{resolve, sbom_input, ContainerArgs, ProfileInputs};
use super::Ctx;
use crate::error::BadInput;
use crate::oci::source::Source;
use crate::sbom::SbomFormat;
use crate::sbom_read::from_image;

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// A container tar, an OCI layout directory, or KIND/PROFILE (a path wins).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The format wanted (default: the one the image holds; spdx for a profile).
    #[arg(long, value_enum)]
    pub format: Option<SbomFormat>,
    /// Write to FILE instead of stdout (`-`).
    #[arg(short, long, value_name = "FILE|-")]
    pub output: Option<String>,
    #[command(flatten)]
    pub inputs: ProfileInputs,
}

/// Writes `bytes` to FILE through a temp file and a rename (nothing half-written), or stdout.
fn write_out(output: Option<&str>, bytes: &[u8]) -> Result<()> {
    match output {
        None | Some("-") => {
            let mut o = io::stdout().lock();
            o.write_all(bytes)?;
            o.flush()?;
        }
        Some(f) => {
            let dest = Path::new(f);
            let dir = dest
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(BadInput(format!(
                    "-o {f}: directory {} does not exist",
                    dir.display()
                ))
                .into());
            }
            let p = crate::oci::files::Pending::new_in(dir, "sbom")
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            (&p.file)
                .write_all(bytes)
                .with_context(|| format!("writing {f}"))?;
            p.persist(dest, true)
                .with_context(|| format!("writing {f}"))?;
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: SbomArgs) -> Result<()> {
    let path = Path::new(&a.source);
    let bytes = if path.exists() {
        let (src, _) = Source::open(path)?;
        let Some((format, bytes)) = from_image(path, &src)? else {
            return Err(BadInput(format!(
                "{}: the image holds no SBOM ({} or {}); build it with `imgbuild container --sbom spdx`",
                path.display(),
                crate::sbom::SPDX_PATH,
                crate::sbom::CYCLONEDX_PATH
            ))
            .into());
        };
        if let Some(want) = a.format.filter(|w| *w != format) {
            return Err(BadInput(format!(
                "{}: the image holds a {format:?} SBOM, not {want:?}; drop --format or rebuild with --sbom {}",
                path.display(),
                format!("{want:?}").to_lowercase()
            ))
            .into());
        }
        bytes
    } else if a.source.contains('/') && !a.source.starts_with('.') && !a.source.starts_with('/') {
        let format = a.format.unwrap_or(SbomFormat::Spdx);
        if format == SbomFormat::None {
            return Err(BadInput("--format none: choose spdx or cyclonedx".into()).into());
        }
        let ca = ContainerArgs::for_build(
            &a.source,
            &a.inputs,
            crate::oci::Compression::None,
            None,
            format,
        );
        let inputs = resolve(ctx, &ca)?;
        let input = sbom_input(&inputs)?;
        crate::sbom::render(&input, format).expect("a format")
    } else {
        return Err(BadInput(format!(
            "{}: no such file or directory, and not KIND/PROFILE; give a container tar, an OCI directory or a profile such as origin/default",
            a.source
        ))
        .into());
    };
    write_out(a.output.as_deref(), &bytes)
}
