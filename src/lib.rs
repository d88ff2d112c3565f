//! imgbuild as a library: the commands layer ([`commands`]) over the model (profile →
//! Tree → Plan) and the writers ([`oci`], [`iso`], [`microvm`]), the readers behind
//! `inspect`, and the CLI. The `imgbuild` binary (main.rs) is a thin entry point over
//! [`cli`]; fuzz targets and benchmarks link this library directly. New modules are declared
//! here; docs/ARCHITECTURE.md says which layer each belongs to.

pub mod buildenv;
pub mod bytesize;
pub mod check;
pub mod cli;
pub mod closure;
pub mod commands;
pub mod deploy;
pub mod elf;
pub mod error;
pub mod init_json;
pub mod inspect;
pub mod iso;
pub mod layers;
pub mod microvm;
pub mod oci;
pub mod payload;
pub mod plan;
pub mod pool;
pub mod profile;
pub mod push;
pub mod qemu;
pub mod registry;
pub mod root;
pub mod rootfs;
pub mod sbom;
pub mod sbom_read;
pub mod signals;
pub mod timings;
pub mod tree;
pub mod vm;
pub mod vmlinux;

/// Runs the command line: logging, dispatch, one-line error report and exit code.
pub fn main_entry() -> ! {
    use clap::Parser;
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        // clap prints usage errors itself (exit 2) and help/version (exit 0).
        Err(e) => e.exit(),
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
    match cli::run(cli) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{}", error::report(&e));
            std::process::exit(error::exit_code(&e, commands::ERROR_CLASSES));
        }
    }
}
