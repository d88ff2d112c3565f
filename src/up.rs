//! `imgbuild up`. (Filled in by the golden-path work.)
use anyhow::Result;
use clap::Args;

use crate::cli::Ctx;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// origin or swarm.
    pub kind: Option<String>,
    /// A profile name of that kind.
    pub profile: Option<String>,
}

pub fn run(_ctx: &Ctx, _a: UpArgs) -> Result<()> {
    anyhow::bail!("imgbuild up is not built yet")
}
