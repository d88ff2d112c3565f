//! hls-swarm's M3U8 parser on arbitrary playlist text, and what a viewer then does with the
//! result: resolve every URI against the playlist URL, take the last media sequence number,
//! and turn target and segment durations into reload and play times. Never a panic.
#![no_main]

use hls_swarm::http::Url;
use hls_swarm::m3u8::{self, Playlist};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let base = Url::parse("http://127.0.0.1:17080/live/stream.m3u8").unwrap();
    match m3u8::parse(&text) {
        Ok(Playlist::Master(variants)) => {
            for v in &variants {
                let _ = base.join(&v.uri);
            }
        }
        Ok(Playlist::Media(m)) => {
            let _ = m.last_msn();
            let _ = m.reload_after(true);
            let _ = m.reload_after(false);
            for s in &m.segments {
                let _ = s.play_time();
                let _ = base.join(&s.uri);
            }
        }
        Err(_) => {}
    }
});
