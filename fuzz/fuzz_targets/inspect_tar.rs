//! `inspect --verify` on an arbitrary file: a report or an error, never a panic. Also the
//! tar header and PAX parsers on every block.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for block in data.chunks_exact(imgbuild::oci::tar::BLOCK) {
        let _ = imgbuild::oci::tar::parse_block(block.try_into().unwrap());
    }
    let _ = imgbuild::oci::tar::parse_pax(data);
    let path = std::env::temp_dir().join(format!("imgbuild-fuzz-tar-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = imgbuild::inspect::verify_file(&path);
});
