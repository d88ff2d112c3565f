//! Exit codes and the one-line error report: 0 success, 1 the work failed, 2 bad usage or
//! bad input (docs/CLI.md). Library errors are typed and each type says its own exit class
//! ([`Classify`]); this file knows none of them. The commands layer lists the types the
//! chain is searched for (`commands::ERROR_CLASSES`).

/// What an error means for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// The work failed (exit 1).
    Failure,
    /// The user's input or usage is wrong (exit 2).
    BadInput,
}

impl ExitClass {
    pub fn code(self) -> i32 {
        match self {
            ExitClass::Failure => 1,
            ExitClass::BadInput => 2,
        }
    }
}

/// An error type that knows its exit class.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    fn exit_class(&self) -> ExitClass;
}

/// Finds one error type in a cause chain and asks it for its class.
pub type Classifier = fn(&(dyn std::error::Error + 'static)) -> Option<ExitClass>;

/// The [`Classifier`] of type `E`.
pub fn class_of<E: Classify>(cause: &(dyn std::error::Error + 'static)) -> Option<ExitClass> {
    cause.downcast_ref::<E>().map(Classify::exit_class)
}

/// Marks an error as the user's input (exit 2) when no typed error says so.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl Classify for BadInput {
    fn exit_class(&self) -> ExitClass {
        ExitClass::BadInput
    }
}

/// Exit code for an error chain: 2 when any cause is bad input (by [`BadInput`], a clap
/// usage error or one of `classifiers`), else 1.
pub fn exit_code(e: &anyhow::Error, classifiers: &[Classifier]) -> i32 {
    let bad = e.chain().any(|cause| {
        cause.is::<clap::Error>()
            || class_of::<BadInput>(cause).is_some()
            || classifiers
                .iter()
                .any(|c| c(cause) == Some(ExitClass::BadInput))
    });
    if bad {
        ExitClass::BadInput.code()
    } else {
        ExitClass::Failure.code()
    }
}

/// `imgbuild: error: outer: inner: cause` on one line.
pub fn report(e: &anyhow::Error) -> String {
    format!("imgbuild: error: {e:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("odd {0}")]
    struct Odd(u32);
    impl Classify for Odd {
        fn exit_class(&self) -> ExitClass {
            if self.0 % 2 == 1 {
                ExitClass::BadInput
            } else {
                ExitClass::Failure
            }
        }
    }

    #[test]
    fn the_chain_decides() {
        let odd: &[Classifier] = &[class_of::<Odd>];
        let e = anyhow::Error::new(Odd(3)).context("outer");
        assert_eq!(exit_code(&e, odd), 2);
        assert_eq!(exit_code(&e, &[]), 1);
        assert_eq!(exit_code(&anyhow::Error::new(Odd(2)), odd), 1);
        let e = anyhow::Error::new(BadInput("x".into())).context("y");
        assert_eq!(exit_code(&e, &[]), 2);
        assert_eq!(report(&e), "imgbuild: error: y: x");
        assert_eq!(exit_code(&anyhow::anyhow!("plain"), odd), 1);
    }
}
