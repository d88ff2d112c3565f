//! Profiles: the single source of truth for every image. Reads `profiles/<kind>/*.toml`
//! from the [`Root`](crate::root::Root), lays each over its kind's `_base.toml` (the merge
//! rule is in docs/PROFILES.md and implemented in [`merge_tables`]), validates it, and answers
//! what the writers and the CLI ask: image name, environment, ports, labels, healthcheck,
//! derived figures. Nothing else in imgbuild names a profile.
//!
//! By job: [`schema`] (the TOML documents), [`load`](mod@load) (read, merge, resolve),
//! [`validate`] (the values a writer relies on, each error at its `file:line`), [`derive`]
//! (environment, labels, derived figures). The names below are re-exported so callers say
//! `profile::load`, `profile::Profile`.

use std::fmt;

use serde::Serialize;

pub mod derive;
pub mod load;
pub mod schema;
pub mod validate;

pub use derive::{
    fmt_num, parse_bitrate, parse_duration_ns, variants_spec, Derived, DerivedVariant,
    SWARM_BASE_FDS, SWARM_BASE_MEMORY, SWARM_MEMORY_PER_VIEWER,
};
pub use load::{
    all_ids, base_gaps, edit_distance, line_col, load, load_all, load_id, merge_tables, parse_text,
    profile_names, toml_error, where_set,
};
pub use schema::{
    AccessLog, HealthcheckSpec, ImageSpec, IsoSpec, KernelSpec, Network, OriginSettings,
    ProfileDoc, SwarmSettings, UserSpec, Variant,
};

/// The kinds of image imgbuild builds; each is a folder of `profiles/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Origin,
    Swarm,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Origin, Kind::Swarm];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Origin => "origin",
            Kind::Swarm => "swarm",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors reading profiles. Each names the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}:{line}:{col}: {msg}")]
    Located {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{file}: {msg}")]
    Invalid { file: String, msg: String },
    #[error("unknown profile {given:?}{suggestion}; valid profiles: {valid}")]
    Unknown {
        given: String,
        suggestion: String,
        valid: String,
    },
    #[error(transparent)]
    Root(#[from] crate::root::RootError),
}

/// The program settings of a profile, by kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Settings {
    Origin(OriginSettings),
    Swarm(SwarmSettings),
}

/// A resolved, validated profile.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub kind: Kind,
    pub name: String,
    /// Where it came from, as shown in messages (`profiles/origin/default.toml`).
    pub file: String,
    pub description: String,
    pub image: ImageSpec,
    pub settings: Settings,
    pub iso: Option<IsoSpec>,
    pub kernel: KernelSpec,
}

/// A healthcheck with durations in nanoseconds, as Docker's image config wants them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub start_period_ns: u64,
    pub start_interval_ns: u64,
    pub retries: u32,
}

impl Profile {
    /// `kind/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
    pub fn tag(&self) -> &str {
        self.image.tag.as_deref().unwrap_or(&self.name)
    }
    /// `name:tag`, the reference `docker load` gives the image.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.image.name, self.tag())
    }

    /// TCP ports the image exposes.
    pub fn ports(&self) -> Vec<u16> {
        match &self.settings {
            Settings::Origin(o) => vec![o.port],
            Settings::Swarm(s) if s.metrics_port != 0 => vec![s.metrics_port],
            Settings::Swarm(_) => vec![],
        }
    }

    pub fn origin(&self) -> Option<&OriginSettings> {
        match &self.settings {
            Settings::Origin(o) => Some(o),
            Settings::Swarm(_) => None,
        }
    }

    pub fn healthcheck(&self) -> Healthcheck {
        let h = &self.image.healthcheck;
        // Validated at load time, so these parse.
        let d = |s: &str| parse_duration_ns(s).unwrap_or(0);
        Healthcheck {
            test: h.test.clone(),
            interval_ns: d(&h.interval),
            timeout_ns: d(&h.timeout),
            start_period_ns: d(&h.start_period),
            start_interval_ns: d(&h.start_interval),
            retries: h.retries,
        }
    }

    /// The ISO volume id: `iso.volume_id`, else `HLS_<PROFILE>` (upper case, `-` → `_`).
    pub fn volume_id(&self) -> String {
        self.iso
            .as_ref()
            .and_then(|i| i.volume_id.clone())
            .unwrap_or_else(|| format!("HLS_{}", self.name.to_uppercase().replace('-', "_")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::root::Root;

    #[test]
    fn the_environment_is_the_payloads_table_in_order() {
        use payload_settings::{origin, swarm};
        let keys = |p: &Profile| p.env().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let o = load(&Root::Embedded, Kind::Origin, "default").unwrap();
        let want: Vec<String> = origin::ALL.iter().map(|s| s.env.to_string()).collect();
        assert_eq!(keys(&o), want);
        // Every setting is a key of the section, and the built-in variants are the table's.
        let table = toml::Table::try_from(OriginSettings::default()).unwrap();
        assert!(origin::ALL.iter().all(|s| table.contains_key(s.key)));
        assert_eq!(
            table.len(),
            origin::ALL.len(),
            "an origin setting missing from the table"
        );
        assert_eq!(
            variants_spec(&OriginSettings::default().variants),
            origin::VARIANTS.default
        );
        let table = toml::Table::try_from(SwarmSettings::default()).unwrap();
        assert!(swarm::ALL.iter().all(|s| table.contains_key(s.key)));
        assert_eq!(
            table.len(),
            swarm::ALL.len(),
            "a swarm setting missing from the table"
        );
        let s = load(&Root::Embedded, Kind::Swarm, "default").unwrap();
        let want: Vec<String> = swarm::ALL[1..].iter().map(|s| s.env.to_string()).collect();
        assert_eq!(keys(&s), want, "STREAM_URL only when set");
    }

    #[test]
    fn every_label_imgbuild_sets_is_reserved() {
        for p in load_all(&Root::Embedded).unwrap() {
            assert!(p.image.labels.is_empty(), "{} sets labels", p.id());
            for k in p.labels("1", None, "t").keys() {
                assert!(
                    derive::is_reserved_label(k),
                    "{k} of {} is not reserved",
                    p.id()
                );
            }
        }
        assert!(!derive::is_reserved_label("com.example.team"));
    }

    #[test]
    fn a_semantic_error_names_the_line_of_its_key() {
        let base = Root::Embedded
            .read_text("profiles/origin/_base.toml")
            .unwrap();
        let text = "description = \"x\"\n[origin]\nfps = 30\nlist_size = 0\n";
        let e = parse_text(Kind::Origin, "t", Some(&base), text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profiles/origin/t.toml:4:1: origin.list_size"),
            "{e}"
        );
        // Set in the base: the base's line.
        let broken = base.replace("fps = 30", "fps = 0");
        let line = broken.lines().position(|l| l == "fps = 0").unwrap() + 1;
        let e = parse_text(Kind::Origin, "t", Some(&broken), "description = \"x\"\n").unwrap_err();
        let want = format!("profiles/origin/_base.toml:{line}:1: origin.list_size");
        assert!(e.to_string().starts_with(&want), "{e}");
        let text = "description = \"x\"\n[iso]\nvolume_id = \"lower\"\n";
        let e = parse_text(Kind::Origin, "t", Some(&base), text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profiles/origin/t.toml:3:1: iso.volume_id"),
            "{e}"
        );
        let sysctl = "[kernel.sysctl]\n\"bad name\" = \"1\"\n";
        let e = parse_text(Kind::Origin, "t", Some(&base), sysctl).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profiles/origin/t.toml:2:1: kernel.sysctl"),
            "{e}"
        );
    }

    #[test]
    fn thirteen_profiles_in_the_repository() {
        let all = load_all(&Root::Embedded).unwrap();
        assert_eq!(all.iter().filter(|p| p.kind == Kind::Origin).count(), 8);
        assert_eq!(all.iter().filter(|p| p.kind == Kind::Swarm).count(), 5);
    }

    #[test]
    fn four_k_ladder_sizes_each_rung_from_its_own_rate() {
        let p = load(&Root::Embedded, Kind::Origin, "4k-abr").unwrap();
        let Derived::Origin { variants, .. } = p.derived() else {
            panic!()
        };
        let sizes: Vec<u64> = variants.iter().map(|v| v.segment_bytes).collect();
        // (15000k + 192k) * 2 s / 8 = 3 798 000 bytes for 2160p; 360p: (500k+64k)*2/8.
        assert_eq!(sizes, vec![3_798_000, 1_282_000, 532_000, 274_000, 141_000]);
    }

    #[test]
    fn a_profile_overriding_variants_replaces_them_whole() {
        let p = load(&Root::Embedded, Kind::Origin, "low-latency").unwrap();
        let o = p.origin().unwrap();
        assert_eq!(o.variants.len(), 1);
        assert_eq!(o.variants[0].maxrate, "2500k");
        assert_eq!(o.segment_duration, 1.0);
        assert_eq!(o.port, 17080, "inherited from _base.toml");
    }

    #[test]
    fn env_carries_profile_defaults() {
        let p = load(&Root::Embedded, Kind::Swarm, "burst").unwrap();
        let env: BTreeMap<_, _> = p.env().into_iter().collect();
        assert_eq!(env["CLIENTS"], "100");
        assert_eq!(env["RECONNECT"], "false");
        assert!(!env.contains_key("STREAM_URL"));
    }

    #[test]
    fn unknown_profile_suggests_the_closest() {
        let e = load_id(&Root::Embedded, "origin/low-latncy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean origin/low-latency"), "{e}");
        assert!(e.contains("swarm/extreme"), "{e}");
    }

    #[test]
    fn durations_and_bitrates_parse() {
        assert_eq!(parse_duration_ns("10s"), Some(10_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_ns("10"), None);
        assert_eq!(parse_bitrate("2000k"), Some(2_000_000));
        assert_eq!(parse_bitrate("x"), None);
    }

    #[test]
    fn bases_leave_nothing_to_builtin_defaults() {
        for k in Kind::ALL {
            assert_eq!(base_gaps(&Root::Embedded, k).unwrap(), Vec::<String>::new());
        }
    }

    #[test]
    fn merge_rule_is_one_level_deep() {
        let base: toml::Table = toml::from_str("[a]\nx = 1\ny = { p = 1, q = 2 }").unwrap();
        let over: toml::Table = toml::from_str("[a]\ny = { p = 3 }").unwrap();
        let m = merge_tables(&base, &over);
        assert_eq!(m["a"]["x"].as_integer(), Some(1));
        assert_eq!(
            m["a"]["y"].as_table().unwrap().len(),
            1,
            "nested tables replace whole"
        );
    }
}
