//! Profile TOML → validated profile: any text gives a Profile or a ProfileError (with a
//! location for syntax errors), never a panic. The first byte picks the kind and whether the
//! kind's real `_base.toml` is merged underneath.
#![no_main]

use imgbuild::profile::{parse_text, Kind};
use libfuzzer_sys::fuzz_target;

const ORIGIN_BASE: &str = include_str!("../../profiles/origin/_base.toml");
const SWARM_BASE: &str = include_str!("../../profiles/swarm/_base.toml");

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (kind, base) = if sel & 1 == 0 {
        (Kind::Origin, ORIGIN_BASE)
    } else {
        (Kind::Swarm, SWARM_BASE)
    };
    let base = (sel & 2 == 0).then_some(base);
    if let Ok(p) = parse_text(kind, "fuzz", base, text) {
        // A valid profile must be usable: everything derived from it works.
        let _ = p.env();
        let _ = p.ports();
        let _ = p.healthcheck();
        let _ = p.derived();
        let _ = p.image_ref();
        let _ = p.labels("0.1.0", None, "1970-01-01T00:00:01Z");
        let _ = serde_json::to_string(&p);
    }
});
