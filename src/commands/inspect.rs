//! `imgbuild inspect FILE`: describes a container tar, OCI directory or ISO; `--verify`
//! recomputes every digest (the readers are src/inspect.rs and src/iso/inspect.rs).

use anyhow::Result;

use super::Ctx;
use crate::inspect::InspectArgs;

pub fn run(_ctx: &Ctx, a: InspectArgs) -> Result<()> {
    crate::inspect::run(a)
}
