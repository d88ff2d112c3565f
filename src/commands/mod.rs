//! The commands layer: one file per `imgbuild` command, each a few named stages over the
//! model (profile, closure, tree, plan) and the writers (src/oci, src/iso, src/microvm.rs),
//! which take typed inputs and never see a profile. src/cli.rs parses the command line and
//! calls the `run` function here; `up` calls the other commands' functions directly.
//! docs/ARCHITECTURE.md describes the layers and how to add a command.

pub mod boot;
pub mod check;
pub mod completions;
pub mod container;
pub mod deploy;
pub mod inspect;
pub mod iso;
pub mod microvm;
pub mod profiles;
pub mod push;
pub mod sbom;
pub mod up;

use crate::error::{class_of, Classifier, Classify, ExitClass};
use crate::root::Root;

/// What every command gets: the root tree in effect (`--root`, else the embedded copy).
pub struct Ctx {
    pub root: Root,
}

/// The typed errors whose exit class the exit code asks for (docs/CLI.md "Exit codes"):
/// a module that adds an error type implements [`Classify`] for it and lists it here.
pub const ERROR_CLASSES: &[Classifier] = &[
    class_of::<crate::profile::ProfileError>,
    class_of::<crate::payload::PayloadError>,
    class_of::<crate::plan::PlanError>,
    class_of::<crate::closure::ClosureError>,
    class_of::<crate::rootfs::RootfsError>,
    class_of::<crate::registry::RegistryError>,
    class_of::<crate::iso::IsoError>,
];

// ProfileError and ClosureError are all the user's input. (Their impls sit here rather than
// beside the types only while src/profile.rs and src/closure.rs are being split.)
impl Classify for crate::profile::ProfileError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::BadInput
    }
}

impl Classify for crate::closure::ClosureError {
    fn exit_class(&self) -> ExitClass {
        ExitClass::BadInput
    }
}

/// An argument struct as clap parses `argv` (the first word is the program name): the
/// commands' `new` constructors are tested against it.
#[cfg(test)]
pub(crate) fn parse_args<T: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> T {
    let matches = T::augment_args(clap::Command::new("imgbuild"))
        .try_get_matches_from(argv)
        .expect("the arguments parse");
    T::from_arg_matches(&matches).expect("the matches fit")
}
