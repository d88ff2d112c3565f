//! The ISO as other tools see it: xorriso finds the BIOS and UEFI boot entries, isoinfo lists
//! the files with their Rock Ridge modes, the initramfs holds what the init's contract needs,
//! `imgbuild inspect` shows catalog and partitions, and two builds are byte-identical.
//! Full tier: needs the boot assets (fetched with scripts/boot-assets when missing), xorriso
//! and isoinfo.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn build(out: &Path, args: &[&str]) -> PathBuf {
    build_output(out, args);
    out.to_path_buf()
}

/// Builds the ISO at `out` and returns what imgbuild printed.
fn build_output(out: &Path, args: &[&str]) -> std::process::Output {
    let o = common::imgbuild()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["iso", "-o", out.to_str().unwrap(), "--boot-assets"])
        .arg(common::boot_assets())
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    o
}

/// One ISO of origin/default for the read-only checks.
fn default_iso() -> PathBuf {
    static ISO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    ISO.get_or_init(|| {
        let d = common::kept_dir();
        let p = build(
            &d.path().join("hls-origin-default.iso"),
            &["origin/default"],
        );
        (d, p)
    })
    .1
    .clone()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
#[ignore = "full: needs boot assets and xorriso"]
fn xorriso_sees_a_bios_and_a_uefi_boot_entry_and_a_hybrid_mbr_with_gpt() {
    let iso = default_iso();
    let r = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    );
    assert!(r.contains("Volume id    : 'HLS_DEFAULT'"), "{r}");
    assert!(
        r.contains("Boot record  : El Torito , MBR isohybrid"),
        "{r}"
    );
    assert!(r.contains("GPT"), "{r}");
    let bios = r
        .lines()
        .find(|l| l.starts_with("El Torito boot img :   1"))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        bios.contains("BIOS  y   none") && bios.contains("     4 "),
        "{bios}"
    );
    let uefi = r
        .lines()
        .find(|l| l.starts_with("El Torito boot img :   2"))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(uefi.contains("UEFI  y   none"), "{uefi}");
    assert!(
        r.contains("El Torito img path :   1  /isolinux/isolinux.bin"),
        "{r}"
    );
    assert!(r.contains("boot-info-table"), "{r}");
}

#[test]
#[ignore = "full: needs boot assets and isoinfo"]
fn isoinfo_lists_the_files_with_rock_ridge_modes() {
    let iso = default_iso();
    let l = run("isoinfo", &["-R", "-l", "-i", iso.to_str().unwrap()]);
    for (mode, name) in [
        ("-r--r--r--", " vmlinuz"),
        ("-r--r--r--", " initrd.img"),
        ("-r--r--r--", " isolinux.bin"),
        ("-r--r--r--", " ldlinux.c32"),
        ("-r--r--r--", " isolinux.cfg"),
        ("-r--r--r--", " imgbuild.json"),
        ("drwxr-xr-x", " isolinux"),
    ] {
        assert!(
            l.lines()
                .any(|x| x.starts_with(mode) && x.trim_end().ends_with(name)),
            "{mode} {name} in\n{l}"
        );
    }
    // Joliet keeps the names too.
    let j = run("isoinfo", &["-J", "-f", "-i", iso.to_str().unwrap()]);
    assert!(j.contains("/boot/initrd.img"), "{j}");
    // The boot menu: default entry with screen + serial console, a serial entry.
    let cfg = run(
        "isoinfo",
        &[
            "-R",
            "-x",
            "/isolinux/isolinux.cfg",
            "-i",
            iso.to_str().unwrap(),
        ],
    );
    assert!(cfg.starts_with("SERIAL 0 115200\n"), "{cfg}");
    assert!(
        cfg.contains("APPEND console=tty0 console=ttyS0,115200"),
        "{cfg}"
    );
    assert!(cfg.contains("LABEL serial"), "{cfg}");
}

/// Entries of a newc cpio archive: (name, mode, rdev major, rdev minor, data).
fn cpio_entries(b: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
    let pad = |n: usize| (n + 3) & !3;
    let mut out = vec![];
    let mut o = 0;
    while o + 110 <= b.len() {
        let h = &b[o..o + 110];
        assert_eq!(&h[..6], b"070701", "newc magic at {o}");
        let mode = hex(&h[14..22]);
        let size = hex(&h[54..62]) as usize;
        let (maj, min) = (hex(&h[78..86]), hex(&h[86..94]));
        let namesize = hex(&h[94..102]) as usize;
        let name = String::from_utf8_lossy(&b[o + 110..o + 110 + namesize - 1]).into_owned();
        let data_at = pad(o + 110 + namesize);
        if name == "TRAILER!!!" {
            break;
        }
        out.push((name, mode, maj, min, b[data_at..data_at + size].to_vec()));
        o = pad(data_at + size);
    }
    out
}

/// Runs a decompressor over `data`.
fn decompress(cmd: &[&str], data: Vec<u8>) -> Vec<u8> {
    let mut z = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = z.stdin.take().unwrap();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data).unwrap());
    let out = z.wait_with_output().unwrap();
    w.join().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

#[test]
#[ignore = "full: needs boot assets, isoinfo and zstd"]
fn the_initramfs_holds_init_its_config_the_service_modules_and_dev_console() {
    let iso = default_iso();
    let gz = Command::new("isoinfo")
        .args(["-R", "-x", "/boot/initrd.img", "-i", iso.to_str().unwrap()])
        .output()
        .unwrap()
        .stdout;
    // zstd by default (the kernel has RD_ZSTD); `--compression gzip` writes gzip.
    assert_eq!(&gz[..4], b"\x28\xb5\x2f\xfd", "zstd frame magic");
    let cpio = decompress(&["zstd", "-dc"], gz);
    let e = cpio_entries(&cpio);
    let get = |n: &str| {
        e.iter().find(|x| x.0 == n).unwrap_or_else(|| {
            panic!(
                "{n} missing from {:?}",
                e.iter().map(|x| &x.0).collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(get("init").1, 0o100755);
    assert!(get("init").4.starts_with(b"\x7fELF"));
    assert_eq!(get("bin/hls-origin").1, 0o100755);
    let console = get("dev/console");
    assert_eq!(
        (console.1 & 0o170000, console.2, console.3),
        (0o020000, 5, 1)
    );
    assert_eq!(get("tmp").1, 0o041777);
    let cfg: serde_json::Value = serde_json::from_slice(&get("etc/imgbuild/init.json").4).unwrap();
    assert_eq!(cfg["service"]["path"], "/bin/hls-origin");
    assert_eq!(cfg["service"]["env"]["PORT"], "17080");
    assert_eq!(cfg["network"]["mode"], "dhcp");
    assert_eq!(cfg["cmdline_prefix"], "hls.");
    let mods: Vec<String> = cfg["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let pos = |n: &str| {
        mods.iter()
            .position(|m| m.ends_with(&format!("/{n}.ko")))
            .unwrap_or_else(|| panic!("{n} not in {mods:?}"))
    };
    // Dependencies first (from each module's .modinfo).
    assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
    assert!(pos("virtio") < pos("virtio_pci") && pos("cdrom") < pos("isofs"));
    for m in &mods {
        assert!(m.starts_with("lib/modules/"), "{m}");
        get(m);
    }
    // Accounts of the profile's base tree.
    assert!(String::from_utf8_lossy(&get("etc/passwd").4).contains("hls:x:1000:1000"));

    // gzip on request, same archive inside.
    let d = tempfile::tempdir().unwrap();
    let g = build(&d.path().join("g.iso"), &["--compression", "gzip"]);
    let gz = Command::new("isoinfo")
        .args(["-R", "-x", "/boot/initrd.img", "-i", g.to_str().unwrap()])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(&gz[..2], b"\x1f\x8b", "gzip magic");
    assert!(decompress(&["zcat"], gz) == cpio, "same cpio archive");
}

#[test]
#[ignore = "full: needs boot assets"]
fn two_builds_are_byte_identical_and_the_isolinux_original_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let isolinux = common::boot_assets().join("isolinux.bin");
    let before = std::fs::read(&isolinux).unwrap();
    let a = std::fs::read(build(&d.path().join("a.iso"), &[])).unwrap();
    // The second with --timings: a table of the stages on stderr, the same bytes.
    let o = build_output(&d.path().join("b.iso"), &["--timings"]);
    let err = common::stderr(&o);
    let stages = common::timing_stages(&err);
    assert_eq!(
        stages,
        [
            "profile",
            "payloads",
            "modules",
            "initramfs",
            "write",
            "total"
        ],
        "{err}"
    );
    let b = std::fs::read(d.path().join("b.iso")).unwrap();
    assert!(a == b, "two builds differ (the second with --timings)");
    assert_eq!(std::fs::read(&isolinux).unwrap(), before);
    // A different command line is a different image (and GPT GUIDs from another seed).
    let c = std::fs::read(build(
        &d.path().join("c.iso"),
        &["--cmdline", "hls.PORT=18080"],
    ))
    .unwrap();
    assert!(a != c);
    assert!(
        a[512..1024] != c[512..1024],
        "GPT header (disk GUID, CRCs) follows the inputs"
    );
    // --kernel and --modules naming the same inputs give the same image.
    let kver = std::fs::read_dir(common::boot_assets().join("modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let k = common::boot_assets().join("vmlinuz");
    let e = std::fs::read(build(
        &d.path().join("e.iso"),
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--modules",
            kver.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert!(
        a == e,
        "--kernel/--modules with the default inputs changed the image"
    );
    std::fs::remove_file(d.path().join("e.iso")).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.iso", "b.iso", "c.iso"], "no temp files left");
}

#[test]
#[ignore = "full: needs boot assets"]
fn inspect_shows_the_boot_catalog_partitions_and_files() {
    let iso = default_iso();
    let o = common::run(&["inspect", iso.to_str().unwrap()]);
    let s = common::stdout(&o);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(s.contains("volume id   HLS_DEFAULT"), "{s}");
    assert!(s.contains("profile     origin/default"), "{s}");
    assert!(s.contains("BIOS no-emulation bootable, 4 sectors"), "{s}");
    assert!(s.contains("UEFI no-emulation bootable"), "{s}");
    assert!(s.contains("MBR boot code: present (isohybrid)"), "{s}");
    assert!(
        s.contains("EFI system partition (C12A7328-F81F-11D2-BA4B-00A0C93EC93B)"),
        "{s}"
    );
    assert!(s.contains("-r--r--r--       0:0"), "{s}");
    assert!(s.contains(" /boot/vmlinuz"), "{s}");
    let o = common::run(&["inspect", "--json", iso.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["boot"][0]["platform"], "BIOS");
    assert_eq!(v["boot"][1]["platform"], "UEFI");
    assert_eq!(v["meta"]["ports"][0], 17080);
}
