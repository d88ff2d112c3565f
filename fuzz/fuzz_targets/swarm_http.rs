//! hls-swarm's HTTP/1.1 response decoder (status line, headers, Content-Length, chunked and
//! read-until-close bodies, the body size limit) on arbitrary bytes from a server, fed in reads
//! of a size the first byte picks. A decoded response or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, raw)) = data.split_first() else {
        return;
    };
    // A small limit too, so the too-large paths run on fuzzer-sized inputs.
    for limit in [64 * 1024 * 1024, 64] {
        if let Ok(d) = hls_swarm::http::decode_response(raw, step as usize, limit) {
            assert!(d.body_len <= limit, "{d:?} over the {limit}-byte limit");
            assert!(d.body_len <= raw.len() as u64, "{d:?} longer than the input");
        }
    }
});
