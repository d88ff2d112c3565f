//! `imgbuild inspect`. (Filled in by the container and ISO work.)
use anyhow::Result;
use clap::Args;

use crate::cli::Ctx;

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub file: std::path::PathBuf,
}

pub fn run(_ctx: &Ctx, _a: InspectArgs) -> Result<()> {
    anyhow::bail!("imgbuild inspect is not built yet")
}
