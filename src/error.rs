//! Exit codes and the one-line error report. 0 success, 1 the work failed, 2 bad usage or
//! bad input. Library errors are typed; here, at the edge, they are classified.

/// Marks an error as the user's input (exit 2) when no typed error says so.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Exit code for an error chain: 2 when any cause is bad input, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if cause.is::<BadInput>()
            || cause.is::<crate::profile::ProfileError>()
            || cause.is::<crate::payload::PayloadError>()
            || cause.is::<crate::plan::PlanError>()
            || cause.is::<crate::closure::ClosureError>()
            // RootfsError forwards a ProfileError transparently (it is not its own cause).
            || cause
                .downcast_ref::<crate::rootfs::RootfsError>()
                .is_some_and(|r| !matches!(r, crate::rootfs::RootfsError::Read(..)))
            || cause.is::<clap::Error>()
            || cause
                .downcast_ref::<crate::registry::RegistryError>()
                .is_some_and(crate::registry::RegistryError::is_bad_input)
            || cause
                .downcast_ref::<crate::iso::IsoError>()
                .is_some_and(crate::iso::IsoError::is_bad_input)
        {
            return 2;
        }
    }
    1
}

/// `imgbuild: error: outer: inner: cause` on one line.
pub fn report(e: &anyhow::Error) -> String {
    format!("imgbuild: error: {e:#}")
}
