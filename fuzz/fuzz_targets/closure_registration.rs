//! Closure input parser (registration): any bytes give store paths or a ClosureError, never a panic;
//! every store path returned is well-formed.
#![no_main]

use imgbuild::closure::{parse_bytes, InputFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(paths) = parse_bytes("fuzz-input", data, Some(InputFormat::Registration)) {
        for p in paths {
            let base = p.strip_prefix("/nix/store/").expect("a store path");
            assert!(base.len() > 33 && !base.contains('/'), "{p:?}");
        }
    }
});
