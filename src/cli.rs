//! The command line: the clap definitions of the top level (docs/CLI.md is the contract) and
//! the dispatch of each command to its function in src/commands/. Each command's own flags
//! live beside it there. Profiles are never named here: completions get their values from
//! profiles/ at generation time.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::commands::{self, completions::Shell, Ctx};
use crate::error::BadInput;
use crate::root::Root;

#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version,
    about = "Reproducible layered container images and bootable ISOs from Nix closures, natively in Rust"
)]
pub struct Cli {
    /// Use profiles/, layers/ and rootfs/ from DIR instead of the copy built into imgbuild.
    #[arg(long, global = true, env = "IMGBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More log output (-v info, -vv debug); IMGBUILD_LOG sets a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List or show profiles (the single source of truth for every image).
    #[command(subcommand)]
    Profiles(ProfilesCmd),
    /// Validate every profile, layer group and payload binary; exit 0 only when all hold.
    Check(CheckArgs),
    /// Build a layered container image (docker-archive tar with OCI layout, or an OCI dir).
    Container(commands::container::ContainerArgs),
    /// Build a bootable ISO (BIOS and UEFI, CD and USB) for an origin profile.
    Iso(commands::iso::IsoArgs),
    /// A MicroVM directory (kernel, initramfs, microvm.json) for an origin profile.
    Microvm(commands::microvm::MicrovmArgs),
    /// Boot an ISO or a MicroVM in QEMU with the profile's ports forwarded to 127.0.0.1.
    Boot(commands::boot::BootArgs),
    /// Push a container tar, OCI directory or profile's image to a registry.
    Push(commands::push::PushArgs),
    /// Print the SBOM of a container tar, OCI directory or profile's image.
    Sbom(commands::sbom::SbomArgs),
    /// Describe a container tar or ISO; --verify recomputes every digest.
    Inspect(crate::inspect::InspectArgs),
    /// Build and run: load and run a container, boot the ISO, or run origin + swarm.
    Up(commands::up::UpArgs),
    /// Write the files that run origin and swarm as replicated services on Docker Swarm or
    /// Kubernetes (plus a Prometheus config), generated from the profiles.
    Deploy(crate::deploy::DeployArgs),
    /// Print a shell completion script (profile names included).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProfilesCmd {
    /// A table of every profile.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// A Markdown table (the README's profiles table is this output).
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
    },
    /// Every value of one profile, with derived figures.
    Show {
        /// KIND/PROFILE, e.g. origin/4k-abr.
        #[arg(value_name = "KIND/PROFILE")]
        profile: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// JSON report for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let root = Root::from_option(cli.root.clone()).map_err(BadInput)?;
    let ctx = Ctx { root };
    match cli.command {
        Command::Profiles(ProfilesCmd::List { json, markdown }) => {
            commands::profiles::list(&ctx, json, markdown)
        }
        Command::Profiles(ProfilesCmd::Show { profile, json }) => {
            commands::profiles::show(&ctx, &profile, json)
        }
        Command::Check(a) => commands::check::run(&ctx, a.json),
        Command::Container(a) => commands::container::run(&ctx, a),
        Command::Iso(a) => commands::iso::run(&ctx, a),
        Command::Microvm(a) => commands::microvm::run(&ctx, a),
        Command::Boot(a) => commands::boot::run(&ctx, a),
        Command::Push(a) => commands::push::run(&ctx, a),
        Command::Sbom(a) => commands::sbom::run(&ctx, a),
        Command::Inspect(a) => commands::inspect::run(&ctx, a),
        Command::Up(a) => commands::up::run(&ctx, a),
        Command::Deploy(a) => commands::deploy::run(&ctx, a),
        Command::Completions { shell } => commands::completions::run(&ctx, Cli::command(), shell),
    }
}
