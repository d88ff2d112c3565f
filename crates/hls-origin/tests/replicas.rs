//! Stateless replicas: two origins started at different moments serve the same stream.

mod common;

use std::time::Duration;

use common::*;

const ARGS: [&str; 4] = [
    "--segment-duration",
    "1",
    "--variants",
    "720p:1280x720:2000k/2200k/4000k:128k,360p:640x360:500k/550k/1000k:64k",
];

/// Both playlists of a variant fetched back to back, retried until no segment boundary fell
/// between the two requests (then they describe the same instant).
fn playlists_at_one_instant(a: &Server, b: &Server, path: &str) -> (String, String) {
    for _ in 0..20 {
        let pa = a.get(path);
        let pb = b.get(path);
        let pa2 = a.get(path);
        assert_eq!((pa.status, pb.status), (200, 200), "{path}");
        if pa.body == pa2.body {
            return (pa.text(), pb.text());
        }
    }
    panic!("the window moved during every attempt");
}

#[test]
fn two_origins_started_3s_apart_serve_identical_playlists_and_segments() {
    let first = Server::start(&ARGS);
    std::thread::sleep(Duration::from_secs(3));
    let second = Server::start(&ARGS);

    assert_eq!(
        first.get("/master.m3u8").body,
        second.get("/master.m3u8").body
    );
    for variant in ["720p", "360p"] {
        let path = format!("/{variant}/stream.m3u8");
        let (pa, pb) = playlists_at_one_instant(&first, &second, &path);
        assert_eq!(pa, pb, "{variant}: playlists differ at the same instant");
        let ms = media_sequence(&pa);
        // Wall-clock numbering: the window ends at the last complete second (D = 1 s) and
        // PROGRAM-DATE-TIME is the segment number in seconds since the Unix epoch.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            (now.saturating_sub(12)..=now).contains(&ms),
            "media sequence {ms} vs {now} s since the epoch"
        );
        // Every segment in the window (each replica built its own copy) is byte-identical.
        let segs: Vec<&str> = pa.lines().filter(|l| l.ends_with(".ts")).collect();
        assert_eq!(segs.len(), 10);
        for seg in segs.iter().skip(6) {
            let a = first.get(&format!("/{variant}/{seg}"));
            let b = second.get(&format!("/{variant}/{seg}"));
            assert_eq!((a.status, b.status), (200, 200), "{variant}/{seg}");
            assert!(a.body.len() > 10_000);
            assert!(a.body == b.body, "{variant}/{seg} differs between replicas");
        }
    }
}
