//! `say!`: one `imgbuild-init: ` line on stderr (the console, or the container's log) in a
//! single write, so lines of the init and of the service never interleave mid-line.

/// Writes `imgbuild-init: MSG` and a newline in one write.
pub fn line(msg: &str) {
    use std::io::Write;
    let line = format!("imgbuild-init: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Print one `imgbuild-init: ` line on stderr (the console) in a single write.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(&format!($($arg)*))
    };
}
pub(crate) use say;
