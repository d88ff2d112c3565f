//! Every console the kernel was given gets everything: the kernel makes only the last
//! `console=` of its command line `/dev/console` (the serial port on imgbuild's boot entries,
//! which list `console=tty0 console=ttyS0,115200`), so without this a VGA screen or a VM
//! window would show the kernel's few lines and nothing of the init or the service.
//!
//! In boot mode, when the command line names more than one console, fds 1 and 2 of the init
//! (which the service inherits) become a pipe, and a thread copies what arrives to each
//! console device, whole chunks at a time, so lines stay whole on every screen.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};

/// The console devices named by `console=` words of a kernel command line, in order, without
/// their options (`console=ttyS0,115200` → `ttyS0`), duplicates dropped.
pub fn names(cmdline: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for w in cmdline.split_whitespace() {
        if let Some(v) = w.strip_prefix("console=") {
            let name = v.split(',').next().unwrap_or("").to_string();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Sends fds 1 and 2 to every console of `cmdline`; returns the consoles written to, or the
/// reason nothing changed (one console, or none could be opened).
pub fn fan_out(cmdline: &str) -> Result<Vec<String>, String> {
    let names = names(cmdline);
    if names.len() < 2 {
        return Err(format!("{} console(s) on the command line", names.len()));
    }
    let mut outs: Vec<(String, std::fs::File)> = vec![];
    for n in &names {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_noctty()
            .open(format!("/dev/{n}"))
        {
            Ok(f) => outs.push((n.clone(), f)),
            Err(e) => crate::say::say!("console /dev/{n}: {e}; not written to"),
        }
    }
    if outs.len() < 2 {
        return Err("fewer than two consoles could be opened".into());
    }
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    for fd in [1, 2] {
        // SAFETY: dup2 of a valid pipe end onto the standard descriptors.
        if unsafe { libc::dup2(w.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    drop(w);
    let written: Vec<String> = outs.iter().map(|(n, _)| n.clone()).collect();
    std::thread::Builder::new()
        .name("consoles".into())
        .spawn(move || {
            // SAFETY: the read end is owned by this thread from here on.
            let mut r =
                unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(r)) };
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        for (_, f) in outs.iter_mut() {
                            let _ = f.write_all(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
        .map_err(|e| format!("thread: {e}"))?;
    Ok(written)
}

/// `O_NOCTTY` on an `OpenOptions`: opening a terminal must not make it the init's
/// controlling terminal.
trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_names_come_in_order_without_options_or_repeats() {
        assert_eq!(
            names("console=tty0 console=ttyS0,115200 quiet console=tty0"),
            ["tty0", "ttyS0"]
        );
        assert_eq!(names("quiet"), Vec::<String>::new());
        assert_eq!(names("console="), Vec::<String>::new());
    }
}
