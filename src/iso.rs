//! `imgbuild iso`. (Filled in by the ISO work.)
use anyhow::Result;
use clap::Args;

use crate::cli::Ctx;

#[derive(Args, Debug)]
pub struct IsoArgs {
    /// origin/PROFILE (default origin/default).
    #[arg(value_name = "origin/PROFILE", default_value = "origin/default")]
    pub profile: String,
}

pub fn run(_ctx: &Ctx, _a: IsoArgs) -> Result<()> {
    anyhow::bail!("imgbuild iso is not built yet")
}
