//! `imgbuild boot`. (Filled in by the ISO work.)
use anyhow::Result;
use clap::Args;

use crate::cli::Ctx;

#[derive(Args, Debug)]
pub struct BootArgs {
    pub image: std::path::PathBuf,
}

pub fn run(_ctx: &Ctx, _a: BootArgs) -> Result<()> {
    anyhow::bail!("imgbuild boot is not built yet")
}
