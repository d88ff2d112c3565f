//! `imgbuild push SOURCE REF`: sends an image to a registry (src/push.rs, src/registry.rs).
//! SOURCE is a container tar, an OCI layout directory or `KIND/PROFILE` (an existing path
//! wins); a profile is built without writing a tar — the layers come from the layer cache or
//! are written into it, then go to the registry.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::container::{build_blobs, ContainerArgs, ProfileInputs};
use super::Ctx;
use crate::error::BadInput;
use crate::oci::source::Source;
use crate::oci::Compression;
use crate::push::{client, from_built, from_source, push_image, report, RegistryArgs};
use crate::registry::Reference;

#[derive(Args, Debug)]
pub struct PushArgs {
    /// A container tar, an OCI layout directory, or KIND/PROFILE to build (a path wins).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where to: HOST[:PORT]/NAME[:TAG], e.g. 127.0.0.1:5000/hls-origin:default.
    #[arg(value_name = "REF")]
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print a JSON summary (reference, manifest digest, each blob and what was done).
    #[arg(long)]
    pub json: bool,
    /// Layer compression when SOURCE is a profile.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
    #[command(flatten)]
    pub inputs: ProfileInputs,
    /// Layer cache directory (default $IMGBUILD_CACHE, else ~/.cache/imgbuild/layers).
    #[arg(long, value_name = "DIR", env = "IMGBUILD_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// The SBOM in the image when SOURCE is a profile.
    #[arg(long, value_enum, default_value = "spdx")]
    pub sbom: crate::sbom::SbomFormat,
}

pub fn run(ctx: &Ctx, a: PushArgs) -> Result<()> {
    let reference = Reference::parse(&a.reference)?;
    let client = client(&reference, &a.registry)?;
    let path = Path::new(&a.source);
    let summary = if path.exists() {
        let (src, problems) = Source::open(path)?;
        if !problems.is_empty() {
            return Err(BadInput(format!("{}: {}", path.display(), problems.join("; "))).into());
        }
        let img = from_source(path, &src)?;
        tracing::debug!("stage read source: done");
        push_image(&client, &reference, &img, &a.registry)?
    } else if a.source.contains('/') && !a.source.starts_with('.') && !a.source.starts_with('/') {
        let ca = ContainerArgs::for_build(
            &a.source,
            &a.inputs,
            a.compression,
            a.cache_dir.clone(),
            a.sbom,
        );
        let built = build_blobs(ctx, &ca, &mut crate::timings::Stopwatch::start())?;
        let img = from_built(&built.docs, &built.blobs, built.sbom.clone());
        push_image(&client, &reference, &img, &a.registry)?
    } else {
        return Err(BadInput(format!(
            "{}: no such file or directory, and not KIND/PROFILE; give a container tar, an OCI directory or a profile such as origin/default",
            a.source
        ))
        .into());
    };
    report(&summary, a.json)
}
