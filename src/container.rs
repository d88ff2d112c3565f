//! `imgbuild container`: profile → Tree → Plan → OCI writer. (Filled in by the container work.)
use anyhow::Result;
use clap::Args;

use crate::cli::Ctx;

#[derive(Args, Debug)]
pub struct ContainerArgs {
    /// KIND/PROFILE (default origin/default).
    #[arg(value_name = "KIND/PROFILE", default_value = "origin/default")]
    pub profile: String,
}

pub fn run(_ctx: &Ctx, _a: ContainerArgs) -> Result<()> {
    anyhow::bail!("imgbuild container is not built yet")
}
