//! Boot mode: the whole life of PID 1 in the initramfs, as a pipeline of named steps
//! (mounts → config → modules → network → NoCloud → hostname → service → power off).
//! PID 1 must never exit, so every step reports and carries on; a fatal problem halts
//! (still reaping, still powering off on ctrl-alt-del).

use crate::cmdline::Cmdline;
use crate::config::{Config, Load};
use crate::net::{self, NetPlan};
use crate::say::say;
use crate::supervise::{self, Ending, Restart, Spec, Supervisor};
use crate::{dhcp, modules, nocloud};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const STOP_GRACE: Duration = Duration::from_secs(2);
const IFACE_WAIT: Duration = Duration::from_secs(5);
const DHCP_TIMEOUT: Duration = Duration::from_secs(8);

pub fn run(config_path: &Path) -> i32 {
    supervise::block_signals();
    // ctrl-alt-del sends SIGINT to init instead of rebooting at once.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    let result = std::panic::catch_unwind(|| boot(config_path));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => say!("fatal: {e}"),
        Err(_) => say!("fatal: init panicked"),
    }
    halt()
}

fn boot(config_path: &Path) -> Result<(), String> {
    let started = Instant::now();
    mount_all();
    console_stdio();
    // Every console the kernel was given shows what the init and the service print.
    let proc_cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if let Ok(all) = crate::consoles::fan_out(&proc_cmdline) {
        say!("consoles: {}", all.join(", "));
    }
    say!(
        "imgbuild-init {} starting (boot mode)",
        env!("CARGO_PKG_VERSION")
    );
    let cfg = Config::load(config_path).map_err(|e| e.to_string())?;
    let cmd = Cmdline::from_proc(&cfg.cmdline_prefix);
    for w in &cmd.warnings {
        say!("kernel command line: {w}");
    }

    // `imgbuild.modules=` (the MicroVM's command line) narrows the list to what its machine
    // needs; the ISO loads them all.
    let wanted = match &cmd.modules {
        Some(names) => modules::only(&cfg.modules, names),
        None => cfg.modules.clone(),
    };
    if !wanted.is_empty() {
        let n = modules::load_all(&wanted);
        say!("{n} of {} module(s) loaded", modules::plan(&wanted).len());
    }
    // After the modules: some sysctls exist only once their module is loaded.
    crate::tuning::apply(&cfg.kernel);

    network(&cfg, &cmd);

    let nc = nocloud::load(cfg.user_data_key());
    if let Some(nc) = &nc {
        if let Some(id) = &nc.meta.instance_id {
            say!("NoCloud instance-id {id}");
        }
        for n in &nc.user.notes {
            say!("NoCloud: {n}");
        }
    }

    let hostname = cmd
        .hostname
        .clone()
        .or_else(|| nc.as_ref().and_then(|n| n.hostname().map(String::from)))
        .or(cfg.hostname.clone());
    if let Some(h) = hostname {
        set_hostname(&h);
    }
    if let Some(nc) = &nc {
        nocloud::write_files(&nc.user.write_files);
    }

    let env = service_env(
        &cfg.service.env,
        nc.as_ref().map(|n| n.user.env.as_slice()).unwrap_or(&[]),
        &cmd.env,
    );
    for (k, v) in nc.iter().flat_map(|n| &n.user.env) {
        say!("service env {k}={v} (NoCloud)");
    }
    for (k, v) in &cmd.env {
        say!("service env {k}={v} (kernel command line)");
    }
    say!("boot steps took {:.1}s", started.elapsed().as_secs_f64());

    let spec = Spec {
        name: cfg.service.name.clone(),
        path: cfg.service.path.clone(),
        args: cfg.service.args.clone(),
        env,
        user: supervise::service_user(cfg.service.uid, cfg.service.gid),
        restart: if cmd.poweroff_on_exit {
            Restart::Never
        } else {
            Restart::Always
        },
        grace: STOP_GRACE,
        stop_signals: vec![Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR],
        stop_with: Some(Signal::SIGTERM),
        forward_signals: vec![Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2],
        stdin_null: true,
        kill_after: cmd.kill_service_after,
        poweroff_after: cmd.poweroff_after,
    };
    let ending = Supervisor::new(spec).run();
    match ending {
        Ending::Stopped { signal, .. } => say!("{} received: powering off", signal.as_str()),
        Ending::PowerOffTimer => say!("powering off (imgbuild.poweroff)"),
        Ending::Finished(s) => say!("service ended ({s}): powering off"),
    }
    power_off();
    Ok(())
}

/// Service environment: config < NoCloud `hls:` map < kernel `hls.KEY=VALUE`.
pub fn service_env(
    config: &BTreeMap<String, String>,
    nocloud: &[(String, String)],
    cmdline: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env = config.clone();
    for (k, v) in nocloud.iter().chain(cmdline) {
        env.insert(k.clone(), v.clone());
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/bin:/sbin:/usr/bin:/usr/sbin".into());
    env
}

fn mount_all() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 7] = [
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    // Lines are printed after stdio is sure to be the console.
    let mut lines = Vec::new();
    for (src, target, fstype, flags, data) in table {
        let _ = std::fs::create_dir_all(target);
        match mount(Some(src), target, Some(fstype), flags, data) {
            Ok(()) => lines.push(format!("mounted {fstype} on {target}")),
            Err(nix::Error::EBUSY) => lines.push(format!("{target} already mounted")),
            Err(e) => lines.push(format!("cannot mount {fstype} on {target}: {e}")),
        }
    }
    console_stdio();
    for l in lines {
        say!("{l}");
    }
}

/// Make fds 0, 1, 2 the console when the kernel could not open it for us.
fn console_stdio() {
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            // SAFETY: dup2 onto a closed standard descriptor.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
    }
}

fn network(cfg: &Config, cmd: &Cmdline) {
    match net::link_up("lo") {
        Ok(()) => say!("link lo up"),
        Err(e) => say!("cannot bring lo up: {e}"),
    }
    let plan = match net::resolve(cfg.network.as_ref(), cmd) {
        Ok(p) => p,
        Err(e) => {
            say!("network config not usable ({e}); using DHCP");
            NetPlan::Dhcp {
                device: None,
                gateway: None,
                dns: None,
            }
        }
    };
    let wanted = match &plan {
        NetPlan::None => {
            say!("network: loopback only");
            return;
        }
        NetPlan::Dhcp { device, .. } | NetPlan::Static { device, .. } => device.clone(),
    };
    let Some(dev) = net::wait_for_interface(wanted.as_deref(), IFACE_WAIT) else {
        say!(
            "no network interface {}after {}s (is the NIC virtio-net and its module loaded?)",
            wanted.map(|w| w + " ").unwrap_or_default(),
            IFACE_WAIT.as_secs()
        );
        return;
    };
    match net::link_up(&dev) {
        Ok(()) => say!("link {dev} up"),
        Err(e) => say!("cannot bring {dev} up: {e}"),
    }
    match plan {
        NetPlan::None => {}
        NetPlan::Static { net: s, .. } => net::apply(&dev, &s, "static"),
        NetPlan::Dhcp { gateway, dns, .. } => {
            let mac = net::mac_address(&dev).unwrap_or([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
            let t = Instant::now();
            let mut how = "dhcp";
            let mut lease = match dhcp::obtain(&dev, mac, DHCP_TIMEOUT) {
                Ok(ack) => {
                    let l = ack.lease();
                    say!(
                        "DHCP lease {}/{} from {} in {:.1}s",
                        l.address,
                        l.prefix,
                        ack.server_id.unwrap_or(ack.siaddr),
                        t.elapsed().as_secs_f64()
                    );
                    l
                }
                Err(e) => {
                    let f = net::qemu_fallback();
                    say!(
                        "DHCP failed ({e}); static fallback {}/{} gw {}",
                        f.address,
                        f.prefix,
                        f.gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
                    );
                    how = "fallback";
                    f
                }
            };
            if gateway.is_some() {
                lease.gateway = gateway;
            }
            if let Some(d) = dns {
                lease.dns = d;
            }
            net::apply(&dev, &lease, how);
        }
    }
}

fn set_hostname(h: &str) {
    match nix::unistd::sethostname(h) {
        Ok(()) => say!("hostname {h}"),
        Err(e) => say!("cannot set hostname {h:?}: {e}"),
    }
    let _ = std::fs::create_dir_all("/etc");
    let _ = std::fs::write("/etc/hostname", format!("{h}\n"));
}

/// End every process, sync, power off. Does not return when power-off works.
fn power_off() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if nix::sys::wait::waitpid(Pid::from_raw(-1), None).is_err() {
            break;
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    say!("power off");
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    say!("power off failed: {e}");
}

/// Stay alive as PID 1: reap children, power off on SIGTERM/SIGINT/SIGPWR.
fn halt() -> ! {
    say!("halted; press ctrl-alt-del (or send SIGTERM to PID 1) to power off");
    loop {
        match supervise::wait_signal(Duration::from_secs(3600)) {
            Some(Signal::SIGCHLD) => {
                while let Ok(s) = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(-1),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                ) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR) => power_off(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_precedence_config_nocloud_cmdline() {
        let config: BTreeMap<String, String> =
            [("PORT", "17080"), ("A", "config"), ("B", "config")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let nc = vec![
            ("A".to_string(), "nocloud".to_string()),
            ("PORT".into(), "1".into()),
        ];
        let cmd = vec![("PORT".to_string(), "18080".to_string())];
        let env = service_env(&config, &nc, &cmd);
        assert_eq!(env["PORT"], "18080");
        assert_eq!(env["A"], "nocloud");
        assert_eq!(env["B"], "config");
        assert!(env.contains_key("PATH"));
    }
}
