//! The ISO readers behind `inspect`: partition tables (MBR/GPT), the ISO9660 listing (boot
//! catalog, Rock Ridge, files) and imgbuild's own metadata file, on arbitrary bytes. A
//! listing or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imgbuild::iso::inspect::partitions(data);
    let path = std::env::temp_dir().join(format!("imgbuild-fuzz-{}.iso", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imgbuild::iso::hadris::read_iso(&path);
    let _ = imgbuild::iso::read_meta(&path);
});
