//! The build environment every command reads in one place: `SOURCE_DATE_EPOCH` (every time
//! stamp of an image, ISO or MicroVM), imgbuild's version, the source revision named in the
//! image labels and the user's cache directory. docs/CLI.md lists the variables.

use crate::error::BadInput;

/// imgbuild's version (`org.opencontainers.image.version`, `created_by`, the ISO's
/// application id).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// imgbuild's cache directory `name` for this user: `$XDG_CACHE_HOME/imgbuild/NAME`, else
/// `~/.cache/imgbuild/NAME` (`None` without either variable).
pub fn cache_dir(name: &str) -> Option<std::path::PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        Some(x) => std::path::PathBuf::from(x),
        None => std::path::PathBuf::from(std::env::var_os("HOME").filter(|x| !x.is_empty())?)
            .join(".cache"),
    };
    Some(base.join("imgbuild").join(name))
}

/// `SOURCE_DATE_EPOCH`: seconds since 1970 for every time stamp; 1 when unset or empty.
/// At most `i64::MAX` (the ISO writer's times are signed): see [`signed`].
pub fn source_date_epoch() -> Result<u64, BadInput> {
    parse_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())
}

fn parse_epoch(value: Option<&str>) -> Result<u64, BadInput> {
    match value.map(str::trim) {
        Some(s) if !s.is_empty() => s
            .parse::<i64>()
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                BadInput(format!(
                    "SOURCE_DATE_EPOCH={:?}: expected a number of seconds since 1970",
                    value.unwrap_or_default()
                ))
            }),
        _ => Ok(1),
    }
}

/// An epoch as the signed seconds the ISO writer's time stamps take (every value
/// [`source_date_epoch`] gives fits; a larger one saturates).
pub fn signed(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// The source revision for `org.opencontainers.image.revision`: `IMGBUILD_REVISION` at run
/// time, else the revision imgbuild was built from (build.rs: `IMGBUILD_REVISION` at build
/// time, else `git rev-parse --short HEAD`), else `unknown`.
pub fn revision() -> String {
    std::env::var("IMGBUILD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| option_env!("IMGBUILD_BUILD_REVISION").map(str::to_string))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs() {
        assert_eq!(parse_epoch(None).unwrap(), 1);
        assert_eq!(parse_epoch(Some(" ")).unwrap(), 1);
        assert_eq!(parse_epoch(Some("1700000000")).unwrap(), 1_700_000_000);
        let e = parse_epoch(Some("yesterday")).unwrap_err().to_string();
        assert!(e.starts_with("SOURCE_DATE_EPOCH=\"yesterday\""), "{e}");
        assert!(parse_epoch(Some("-5")).is_err());
        assert!(parse_epoch(Some("9223372036854775808")).is_err());
        assert_eq!(signed(u64::MAX), i64::MAX);
    }
}
