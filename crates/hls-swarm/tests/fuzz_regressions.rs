//! Inputs that crashed the swarm's fuzz targets (fuzz/fuzz_targets/swarm_http.rs and
//! swarm_m3u8.rs, run by bench/fuzz), kept in fuzz/regressions/ after the fix: each goes
//! through exactly what its target does and must give a value or an error, never a panic.

use std::path::{Path, PathBuf};

use hls_swarm::http::{decode_response, Url};
use hls_swarm::m3u8::{self, Playlist};

fn inputs(prefix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v
}

/// What fuzz_targets/swarm_http.rs does with one input.
fn http_target(data: &[u8]) {
    let Some((&step, raw)) = data.split_first() else {
        return;
    };
    for limit in [64 * 1024 * 1024, 64] {
        if let Ok(d) = decode_response(raw, step as usize, limit) {
            assert!(
                d.body_len <= limit && d.body_len <= raw.len() as u64,
                "{d:?}"
            );
        }
    }
}

/// What fuzz_targets/swarm_m3u8.rs does with one input.
fn m3u8_target(data: &[u8]) {
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
}

#[test]
fn swarm_fuzz_regressions_give_values_or_errors_never_panics() {
    let http = inputs("swarm_http-");
    let m3u8 = inputs("swarm_m3u8-");
    // The crashes bench/fuzz found must be here (an ignore rule or a rename must not leave
    // this test passing on nothing).
    for name in [
        "swarm_m3u8-uri-prefix-char-boundary",
        "swarm_m3u8-extinf-duration-overflow",
    ] {
        assert!(
            m3u8.iter().any(|p| p.ends_with(name)),
            "fuzz/regressions lacks {name}: {m3u8:?}"
        );
    }
    for p in &http {
        http_target(&std::fs::read(p).unwrap());
    }
    for p in &m3u8 {
        m3u8_target(&std::fs::read(p).unwrap());
    }
}
