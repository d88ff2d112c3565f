//! The profile's `[kernel]` tuning, applied in boot mode before the service starts: each
//! sysctl is written to `/proc/sys` and read back (one console line each, the value the
//! kernel holds, so the console shows what is in force; one line naming the error for each
//! that could not be set), and the open-file limit is raised for the service.

use std::path::PathBuf;

use crate::config::Kernel;

/// `/proc/sys/net/core/somaxconn` for `net.core.somaxconn`.
pub fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// Whitespace folded to single spaces (the kernel separates vector values with tabs).
pub fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies `k`; returns how many sysctls could not be set.
pub fn apply(k: &Kernel) -> usize {
    let mut failed = 0;
    for (name, value) in &k.sysctl {
        let path = sysctl_path(name);
        match std::fs::write(&path, value) {
            Ok(()) => match std::fs::read_to_string(&path) {
                Ok(got) => crate::say::say!("sysctl {name} = {}", normalise(&got)),
                Err(e) => crate::say::say!("sysctl {name}: set, but cannot read it back: {e}"),
            },
            Err(e) => {
                failed += 1;
                crate::say::say!("sysctl {name}: cannot set {value:?}: {e}");
            }
        }
    }
    if k.nofile > 0 {
        // The hard limit cannot pass fs.nr_open: raise that first when it is lower.
        let nr_open = sysctl_path("fs.nr_open");
        let cur: u64 = std::fs::read_to_string(&nr_open)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cur < k.nofile {
            let _ = std::fs::write(&nr_open, k.nofile.to_string());
        }
        let lim = libc::rlimit {
            rlim_cur: k.nofile as libc::rlim_t,
            rlim_max: k.nofile as libc::rlim_t,
        };
        // SAFETY: setrlimit with a valid struct; the service inherits the init's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            crate::say::say!("nofile limit {}", k.nofile);
        } else {
            crate::say::say!(
                "nofile limit {}: cannot set it: {}",
                k.nofile,
                std::io::Error::last_os_error()
            );
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_proc_sys_and_values_fold() {
        assert_eq!(
            sysctl_path("net.ipv4.tcp_rmem"),
            PathBuf::from("/proc/sys/net/ipv4/tcp_rmem")
        );
        assert_eq!(
            normalise("4096\t1000000\t16000000\n"),
            "4096 1000000 16000000"
        );
    }
}
