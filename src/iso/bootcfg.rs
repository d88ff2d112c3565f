//! The boot loaders' configuration: one kernel command line, rendered into isolinux.cfg
//! (BIOS) and into systemd-boot's loader.conf and entries (UEFI), so both paths boot the
//! same way. Each menu has a default entry (screen and serial; the serial port is the last
//! `console=`, so it is `/dev/console` and the init's log goes there) and a serial-only entry.

/// Where the kernel and initramfs sit: in the ISO tree for isolinux, at the ESP root for
/// systemd-boot (it reads only its own partition).
pub const ISO_KERNEL: &str = "boot/vmlinuz";
pub const ISO_INITRD: &str = "boot/initrd.img";
pub const ESP_KERNEL: &str = "vmlinuz";
pub const ESP_INITRD: &str = "initrd.img";

/// Consoles of the default entry: the screen, then the serial port (the last one named
/// becomes /dev/console).
pub const CONSOLES_DEFAULT: &str = "console=tty0 console=ttyS0,115200";
/// Consoles of the serial entry.
pub const CONSOLES_SERIAL: &str = "console=ttyS0,115200";

/// The kernel command line without consoles: the profile's `iso.cmdline`, then the
/// `--cmdline` extras, whitespace normalised.
pub fn cmdline(profile_cmdline: &str, extra: &[String]) -> String {
    profile_cmdline
        .split_whitespace()
        .chain(extra.iter().flat_map(|e| e.split_whitespace()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Always on the command line after the consoles: `quiet` keeps the kernel's boot log
/// (hundreds of lines) off the consoles; under emulation, drawing it on the UEFI framebuffer
/// costs seconds. Warnings still show; `--cmdline loglevel=7` brings the full log back.
pub const BASE: &str = "quiet";

/// The whole command line of an entry.
pub fn full(consoles: &str, rest: &str) -> String {
    if rest.is_empty() {
        format!("{consoles} {BASE}")
    } else {
        format!("{consoles} {BASE} {rest}")
    }
}

/// isolinux.cfg: serial port 0 at 115200, boots the default entry at once (hold Shift or Alt
/// for the `boot:` prompt, then type `serial`).
pub fn isolinux_cfg(title: &str, rest: &str) -> String {
    format!(
        "SERIAL 0 115200\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         SAY {title}: booting (hold Shift for the boot: prompt; entries: {title_l}, serial)\n\
         DEFAULT {title_l}\n\
         \n\
         LABEL {title_l}\n\
         \x20 KERNEL /{k}\n\
         \x20 INITRD /{i}\n\
         \x20 APPEND {def}\n\
         \n\
         LABEL serial\n\
         \x20 KERNEL /{k}\n\
         \x20 INITRD /{i}\n\
         \x20 APPEND {ser}\n",
        title_l = label(title),
        k = ISO_KERNEL,
        i = ISO_INITRD,
        def = full(CONSOLES_DEFAULT, rest),
        ser = full(CONSOLES_SERIAL, rest),
    )
}

/// A syslinux label: no spaces.
fn label(title: &str) -> String {
    title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// systemd-boot's `loader/loader.conf`: the default entry at once (a key press shows the
/// menu), no editor.
pub fn loader_conf(title: &str) -> String {
    format!(
        "default {}.conf\ntimeout 0\neditor no\nconsole-mode keep\n",
        label(title)
    )
}

/// systemd-boot entries: `(file name, contents)`, default first.
pub fn loader_entries(title: &str, rest: &str) -> Vec<(String, String)> {
    let entry = |t: &str, consoles: &str| {
        format!(
            "title {t}\nlinux /{ESP_KERNEL}\ninitrd /{ESP_INITRD}\noptions {}\n",
            full(consoles, rest)
        )
    };
    vec![
        (
            format!("{}.conf", label(title)),
            entry(title, CONSOLES_DEFAULT),
        ),
        (
            format!("{}-serial.conf", label(title)),
            entry(&format!("{title} (serial console only)"), CONSOLES_SERIAL),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_joins_profile_and_extras() {
        assert_eq!(cmdline("", &[]), "");
        assert_eq!(
            cmdline(
                " hls.LOG_LEVEL=debug ",
                &["hls.PORT=18080  x=1".into(), "y".into()]
            ),
            "hls.LOG_LEVEL=debug hls.PORT=18080 x=1 y"
        );
    }

    #[test]
    fn isolinux_and_systemd_boot_get_the_same_command_line() {
        let rest = cmdline("", &["hls.PORT=18080".into()]);
        let cfg = isolinux_cfg("hls-origin-default", &rest);
        assert!(cfg.starts_with("SERIAL 0 115200\n"));
        assert!(cfg.contains("DEFAULT hls-origin-default\n"));
        assert!(cfg.contains("  APPEND console=tty0 console=ttyS0,115200 quiet hls.PORT=18080\n"));
        assert!(cfg.contains("LABEL serial\n"));
        assert!(cfg.contains("  APPEND console=ttyS0,115200 quiet hls.PORT=18080\n"));
        assert!(cfg.contains("  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd.img\n"));
        let entries = loader_entries("hls-origin-default", &rest);
        assert_eq!(entries[0].0, "hls-origin-default.conf");
        assert!(entries[0]
            .1
            .contains("options console=tty0 console=ttyS0,115200 quiet hls.PORT=18080\n"));
        assert!(entries[0]
            .1
            .contains("linux /vmlinuz\ninitrd /initrd.img\n"));
        assert!(entries[1]
            .1
            .contains("options console=ttyS0,115200 quiet hls.PORT=18080\n"));
        assert!(loader_conf("hls-origin-default").starts_with("default hls-origin-default.conf\n"));
    }

    #[test]
    fn serial_console_is_last_so_it_is_dev_console() {
        let line = full(CONSOLES_DEFAULT, "");
        let last = line.split(' ').rfind(|w| w.starts_with("console="));
        assert_eq!(last, Some("console=ttyS0,115200"));
    }
}
