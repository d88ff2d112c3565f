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

/// Fixes glibc's mmap threshold at its default (128 KiB), which also turns off its dynamic
/// raising. With the dynamic threshold, freeing any mmap'd block raises the threshold to its
/// size (up to 32 MiB), and a buffer that then grows by doubling (the Tree's entry list and
/// path buffer: src/tree.rs) is copied on the heap at each step, every old copy left there:
/// a big closure's build peaked ~9 MiB higher. Fixed, every block of 128 KiB or more is
/// mmap'd, grows by `mremap` without a copy, and goes back to the kernel when freed.
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Runs the command line: logging, dispatch, one-line error report and exit code.
pub fn main_entry() -> ! {
    use clap::Parser;
    fixed_mmap_threshold();
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
