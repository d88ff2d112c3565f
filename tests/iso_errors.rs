//! `imgbuild iso` refuses bad inputs with one clear line and leaves no file behind: a missing
//! kernel, a kernel module whose dependency is nowhere, a payload that is not static. These
//! need no boot assets and no QEMU (the inputs are made here), so they always run.

mod common;

use std::path::Path;

/// Every file in `dir` (none may be left after a failed build, not even a temp file).
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A minimal 64-bit ELF whose `.modinfo` section says `depends=<deps>`.
fn fake_module(deps: &str) -> Vec<u8> {
    let modinfo = format!("license=GPL\0depends={deps}\0intree=Y\0").into_bytes();
    let shstr = b"\0.modinfo\0.shstrtab\0".to_vec();
    let mut b = vec![0u8; 64];
    b[..6].copy_from_slice(b"\x7fELF\x02\x01");
    let mi = b.len();
    b.extend_from_slice(&modinfo);
    let ss = b.len();
    b.extend_from_slice(&shstr);
    let shoff = b.len();
    for (name, off, size) in [(0u32, 0, 0), (1, mi, modinfo.len()), (10, ss, shstr.len())] {
        let mut e = vec![0u8; 64];
        e[0..4].copy_from_slice(&name.to_le_bytes());
        e[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        e[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        b.extend(e);
    }
    b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    b
}

/// A boot-asset directory with stand-in loaders and a modules tree of fake modules;
/// `deps` overrides one module's dependencies.
fn fake_assets(dir: &Path, broken: (&str, &str)) {
    for f in [
        "vmlinuz",
        "isolinux.bin",
        "ldlinux.c32",
        "isohdpfx.bin",
        "systemd-bootx64.efi",
    ] {
        std::fs::write(dir.join(f), b"stand-in").unwrap();
    }
    let kdir = dir.join("modules/6.1.0-test/kernel/drivers");
    std::fs::create_dir_all(&kdir).unwrap();
    for m in [
        "virtio_pci",
        "virtio_net",
        "ata_piix",
        "sr_mod",
        "sd_mod",
        "isofs",
        "virtio_blk",
        "virtio_scsi",
    ] {
        let deps = if m == broken.0 { broken.1 } else { "" };
        std::fs::write(kdir.join(format!("{m}.ko")), fake_module(deps)).unwrap();
    }
}

#[test]
fn a_missing_kernel_says_run_boot_assets_and_leaves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let assets = tempfile::tempdir().unwrap();
    let iso = out.path().join("x.iso");
    let o = common::run(&[
        "iso",
        "origin/default",
        "-o",
        iso.to_str().unwrap(),
        "--boot-assets",
        assets.path().to_str().unwrap(),
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("kernel") && err.contains("vmlinuz"), "{err}");
    assert!(err.contains("run scripts/boot-assets"), "{err}");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn a_module_with_an_unknown_dependency_is_named_and_nothing_is_written() {
    let out = tempfile::tempdir().unwrap();
    let assets = tempfile::tempdir().unwrap();
    fake_assets(assets.path(), ("virtio_net", "virtio_ring,no_such_module"));
    let iso = out.path().join("x.iso");
    let o = common::run(&[
        "iso",
        "-o",
        iso.to_str().unwrap(),
        "--boot-assets",
        assets.path().to_str().unwrap(),
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("virtio_net") && err.contains("depends on virtio_ring"),
        "the first unknown dependency is named: {err}"
    );
    assert!(err.contains("modules.builtin"), "{err}");
    assert!(files_in(out.path()).is_empty());

    // With that dependency present, the next one is reported.
    let kdir = assets.path().join("modules/6.1.0-test/kernel/drivers");
    std::fs::write(kdir.join("virtio_ring.ko"), fake_module("")).unwrap();
    let o = common::run(&[
        "iso",
        "-o",
        iso.to_str().unwrap(),
        "--boot-assets",
        assets.path().to_str().unwrap(),
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("depends on no_such_module"), "{err}");
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn a_payload_that_is_not_static_is_refused_and_nothing_is_written() {
    let out = tempfile::tempdir().unwrap();
    let iso = out.path().join("x.iso");
    let o = common::run(&[
        "iso",
        "-o",
        iso.to_str().unwrap(),
        "--binary",
        "hls-origin=/bin/ls",
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("hls-origin") && err.contains("not static"),
        "{err}"
    );
    assert!(files_in(out.path()).is_empty());
}

#[test]
fn a_swarm_profile_has_no_iso() {
    let out = tempfile::tempdir().unwrap();
    let o = common::run(&[
        "iso",
        "swarm/default",
        "-o",
        out.path().join("x.iso").to_str().unwrap(),
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("origin"), "{err}");
    assert!(files_in(out.path()).is_empty());
}
