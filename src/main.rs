//! imgbuild: reproducible layered container images and bootable ISOs from Nix closures and
//! the workspace's own programs, natively in Rust. Entry point: logging, CLI, exit codes.

use clap::Parser;

mod check;
mod cli;
mod closure;
mod container;
mod elf;
mod error;
mod inspect;
mod iso;
mod layers;
mod oci;
mod payload;
mod plan;
mod profile;
mod qemu;
mod root;
mod rootfs;
mod tree;
mod up;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints usage errors itself (exit 2) and help/version (exit 0).
            e.exit();
        }
    };
    let filter = std::env::var("IMGBUILD_LOG").unwrap_or_else(|_| {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
        .to_string()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    if let Err(e) = cli::run(cli) {
        eprintln!("{}", error::report(&e));
        std::process::exit(error::exit_code(&e));
    }
}
