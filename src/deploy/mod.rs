//! `imgbuild deploy swarm|kubernetes`: the files that run a load test as replicated services
//! on an existing engine, generated from the profiles so they never drift from the images.
//!
//! - `swarm`: `DIR/stack.yaml` for `docker stack deploy` (compose v3: the origin with
//!   `endpoint_mode: dnsrr` so viewers see every replica's address, the swarm as N replicas,
//!   an attachable overlay network for `hls-swarm report` and Prometheus) — src/deploy/swarm.rs;
//! - `kubernetes`: `DIR/kubernetes.yaml`, one document per object (origin Deployment and
//!   Services, the swarm as an indexed Job with a headless Service) — src/deploy/kubernetes.rs;
//! - both: `DIR/prometheus.yml` scraping every origin and swarm replica found through DNS —
//!   src/deploy/prometheus.rs.
//!
//! Every setting a container gets is the profile's own environment ([`Profile::env`]) with
//! the run's figures laid over it (viewers per replica, the origin's URL, duration, `--linger`,
//! `--start-at`). Resources come from the profile's derived figures ([`Profile::derived`]).
//! docs/deploy.md describes the files and what was exercised.

pub mod kubernetes;
pub mod prometheus;
pub mod swarm;
pub mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::error::BadInput;
use crate::profile::{self, Derived, Kind, Profile, Settings};
use crate::root::Root;

/// hls-swarm's environment names for the run-level settings the deploy files set (its
/// config.rs defines them; tests/deploy.rs checks hls-swarm reads them from these names).
pub const ENV_DURATION: &str = "DURATION";
pub const ENV_LINGER: &str = "LINGER";
pub const ENV_START_AT: &str = "START_AT";

/// Service (and Kubernetes object) names; the swarm's stream URL names the origin service.
pub const ORIGIN_SERVICE: &str = "origin";
pub const SWARM_SERVICE: &str = "swarm";

/// CPU a swarm replica asks for: `bench/swarm-1000` measured about 0.13 core per 1000
/// viewers (crates/hls-swarm/README.md "Cost"); doubled for headroom like the memory
/// estimate, at least 50 millicores.
pub const SWARM_MILLICORES_PER_1000_VIEWERS: u64 = 260;
/// Origin memory beyond the segments it holds (program, buffers, connections).
pub const ORIGIN_BASE_MEMORY: u64 = 64 << 20;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The engine the files are for.
    #[arg(value_enum)]
    pub engine: Engine,
    /// origin/PROFILE and swarm/PROFILE, in any order (defaults: origin/default, swarm/default).
    #[arg(value_name = "KIND/PROFILE")]
    pub profiles: Vec<String>,
    /// Swarm replicas (load generator processes, one per machine's worth of network).
    #[arg(long, value_name = "N")]
    pub replicas: u32,
    /// Viewers each swarm replica runs (default: the swarm profile's `clients`).
    #[arg(long, value_name = "M")]
    pub viewers_per_replica: Option<u32>,
    /// Viewers each swarm replica starts per second (default: the swarm profile's `ramp_rate`).
    #[arg(long, value_name = "R")]
    pub ramp_rate: Option<f64>,
    /// Origin replicas.
    #[arg(long, value_name = "K", default_value = "1")]
    pub origin_replicas: u32,
    /// How long each swarm replica loads the origin after its start (20s, 5m, plain seconds).
    #[arg(long, value_name = "D", default_value = "5m")]
    pub duration: String,
    /// The instant replicas start their ramp: an RFC 3339 UTC time or +SECONDS after each
    /// replica starts; for `swarm` the START_AT variable of `docker stack deploy` overrides it.
    #[arg(long, value_name = "TIME|+SECONDS")]
    pub start_at: Option<String>,
    /// Registry prefix of the images (e.g. registry.example:5000/load → …/hls-origin:default).
    #[arg(long, value_name = "PREFIX")]
    pub registry: Option<String>,
    /// Output directory (default ./deploy-<engine>).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Write into a non-empty output directory (replacing the files this command writes).
    #[arg(long)]
    pub force: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Docker Swarm mode (`docker stack deploy`).
    Swarm,
    /// Kubernetes (`kubectl apply`).
    Kubernetes,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Swarm => "swarm",
            Engine::Kubernetes => "kubernetes",
        }
    }
}

/// Everything the files are made from, resolved and checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub engine: Engine,
    pub origin: Profile,
    /// The swarm profile with the run's viewers per replica and the origin's URL laid in.
    pub swarm: Profile,
    pub replicas: u32,
    pub origin_replicas: u32,
    pub duration: String,
    pub start_at: Option<String>,
    pub registry: Option<String>,
}

impl Plan {
    /// Resolve the profiles and check the figures (bad input names the flag).
    pub fn new(root: &Root, a: &DeployArgs) -> Result<Plan> {
        let mut origin_id = None;
        let mut swarm_id = None;
        for p in &a.profiles {
            let slot = match p.split_once('/').map(|(k, _)| Kind::parse(k)) {
                Some(Some(Kind::Origin)) => &mut origin_id,
                Some(Some(Kind::Swarm)) => &mut swarm_id,
                _ => {
                    return Err(BadInput(format!(
                        "deploy: {p:?} is not origin/PROFILE or swarm/PROFILE (see imgbuild profiles list)"
                    ))
                    .into())
                }
            };
            if slot.replace(p.clone()).is_some() {
                return Err(BadInput(format!(
                    "deploy: two {} profiles given; give at most one origin/PROFILE and one swarm/PROFILE",
                    p.split('/').next().unwrap_or("")
                ))
                .into());
            }
        }
        let origin = profile::load_id(root, origin_id.as_deref().unwrap_or("origin/default"))?;
        let mut swarm = profile::load_id(root, swarm_id.as_deref().unwrap_or("swarm/default"))?;
        let positive = |v: u32, flag: &str| -> Result<u32> {
            if v == 0 {
                Err(BadInput(format!("deploy: {flag} must be at least 1")).into())
            } else {
                Ok(v)
            }
        };
        let replicas = positive(a.replicas, "--replicas")?;
        let origin_replicas = positive(a.origin_replicas, "--origin-replicas")?;
        let o = origin.origin().expect("origin profile").clone();
        if let Settings::Swarm(s) = &mut swarm.settings {
            if let Some(m) = a.viewers_per_replica {
                s.clients = positive(m, "--viewers-per-replica")?;
            }
            if let Some(r) = a.ramp_rate {
                if !(r.is_finite() && r > 0.0) {
                    return Err(BadInput(format!(
                        "deploy: --ramp-rate {r} must be a positive number of viewers per second"
                    ))
                    .into());
                }
                s.ramp_rate = r;
            }
            s.stream_url = format!("http://{ORIGIN_SERVICE}:{}/{}", o.port, o.master);
        }
        let duration = check_duration(&a.duration)?;
        if let Some(s) = &a.start_at {
            check_start_at(s)?;
        }
        if let Some(r) = &a.registry {
            if r.trim_end_matches('/').is_empty() || r.contains(char::is_whitespace) {
                return Err(BadInput(format!(
                    "deploy: --registry {r:?} is not an image name prefix (example: registry.example:5000/load)"
                ))
                .into());
            }
        }
        Ok(Plan {
            engine: a.engine,
            origin,
            swarm,
            replicas,
            origin_replicas,
            duration,
            start_at: a.start_at.clone(),
            registry: a
                .registry
                .as_ref()
                .map(|r| r.trim_end_matches('/').to_string()),
        })
    }

    fn image(&self, p: &Profile) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", p.image_ref()),
            None => p.image_ref(),
        }
    }
    pub fn origin_image(&self) -> String {
        self.image(&self.origin)
    }
    pub fn swarm_image(&self) -> String {
        self.image(&self.swarm)
    }

    pub fn origin_port(&self) -> u16 {
        self.origin.origin().expect("origin").port
    }

    pub fn swarm_settings(&self) -> &profile::SwarmSettings {
        match &self.swarm.settings {
            Settings::Swarm(s) => s,
            Settings::Origin(_) => unreachable!("swarm profile"),
        }
    }

    pub fn viewers_per_replica(&self) -> u32 {
        self.swarm_settings().clients
    }

    pub fn metrics_port(&self) -> u16 {
        self.swarm_settings().metrics_port
    }

    /// The origin container's environment: its profile's.
    pub fn origin_env(&self) -> Vec<(String, String)> {
        self.origin.env()
    }

    /// A swarm replica's environment: its profile's (viewers and URL laid in), the duration,
    /// lingering on, and the start instant (`start_at` as given: the stack file passes the
    /// deploy's START_AT variable through).
    pub fn swarm_env(&self, start_at: String) -> Vec<(String, String)> {
        let mut env = self.swarm.env();
        env.push((ENV_DURATION.into(), self.duration.clone()));
        env.push((ENV_LINGER.into(), "true".into()));
        env.push((ENV_START_AT.into(), start_at));
        env
    }

    pub fn swarm_memory_bytes(&self) -> u64 {
        match self.swarm.derived() {
            Derived::Swarm { memory_bytes, .. } => memory_bytes,
            Derived::Origin { .. } => unreachable!(),
        }
    }
    pub fn swarm_file_descriptors(&self) -> u64 {
        match self.swarm.derived() {
            Derived::Swarm {
                file_descriptors, ..
            } => file_descriptors,
            Derived::Origin { .. } => unreachable!(),
        }
    }
    pub fn swarm_millicores(&self) -> u64 {
        (self.viewers_per_replica() as u64 * SWARM_MILLICORES_PER_1000_VIEWERS)
            .div_ceil(1000)
            .max(50)
    }
    /// Segments held in RAM plus the program's base.
    pub fn origin_memory_bytes(&self) -> u64 {
        match self.origin.derived() {
            Derived::Origin { tmpfs_bytes, .. } => tmpfs_bytes + ORIGIN_BASE_MEMORY,
            Derived::Swarm { .. } => unreachable!(),
        }
    }
    /// Connections an origin replica carries when viewers spread evenly, plus headroom.
    pub fn origin_file_descriptors(&self) -> u64 {
        let total = self.replicas as u64 * self.viewers_per_replica() as u64;
        total.div_ceil(self.origin_replicas as u64) + profile::SWARM_BASE_FDS
    }

    /// Average bits per second one viewer pulls: its variant choice over the origin's ladder
    /// (`all` and `random` spread viewers evenly over the variants).
    pub fn viewer_bps(&self) -> u64 {
        let Derived::Origin { variants, .. } = self.origin.derived() else {
            unreachable!()
        };
        let rates: Vec<u64> = variants.iter().map(|v| v.bandwidth_bps).collect();
        if rates.is_empty() {
            return 0;
        }
        match self.swarm_settings().variant.as_str() {
            "first" => rates[0],
            "highest" => *rates.iter().max().expect("non-empty"),
            "lowest" => *rates.iter().min().expect("non-empty"),
            _ => rates.iter().sum::<u64>() / rates.len() as u64,
        }
    }

    /// The sizing rule: viewers a host carries = NIC bits/s ÷ bits/s per viewer.
    pub fn viewers_per_nic(&self, nic_bps: u64) -> u64 {
        nic_bps.checked_div(self.viewer_bps()).unwrap_or(0)
    }

    /// Comment lines saying what the files were made from.
    pub fn header(&self, file: &str) -> Vec<String> {
        let total = self.replicas as u64 * self.viewers_per_replica() as u64;
        vec![
            format!(
                "{file}: generated by `imgbuild deploy {}` from profiles {} and {}; regenerate instead of editing.",
                self.engine.as_str(),
                self.origin.id(),
                self.swarm.id()
            ),
            format!(
                "Load: {} swarm replicas x {} viewers = {total} viewers for {}, against {} origin replica(s).",
                self.replicas,
                self.viewers_per_replica(),
                self.duration,
                self.origin_replicas
            ),
            format!(
                "Each viewer pulls about {} Mbit/s, so one replica about {} Mbit/s (a 10 Gbit/s NIC carries {} viewers).",
                mbit(self.viewer_bps()),
                mbit(self.viewer_bps() * self.viewers_per_replica() as u64),
                self.viewers_per_nic(10_000_000_000)
            ),
        ]
    }
}

fn mbit(bps: u64) -> String {
    profile::fmt_num((bps as f64 / 1e4).round() / 100.0)
}

/// A duration hls-swarm's `--duration` takes (20s, 5m, plain seconds), above zero.
fn check_duration(s: &str) -> Result<String> {
    let t = s.trim();
    let ns = match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Some((v * 1e9) as u64),
        Ok(_) => None,
        Err(_) => profile::parse_duration_ns(t),
    };
    match ns {
        Some(n) if n > 0 => Ok(t.to_string()),
        _ => Err(BadInput(format!(
            "deploy: --duration {s:?} is not a duration above zero (examples: 20s, 5m, 90)"
        ))
        .into()),
    }
}

/// `+SECONDS` or an RFC 3339 UTC time ending in Z (hls-swarm checks the calendar).
fn check_start_at(s: &str) -> Result<()> {
    let t = s.trim();
    let ok = match t.strip_prefix('+') {
        Some(n) => n.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0),
        None => {
            let b = t.as_bytes();
            t.ends_with('Z')
                && b.len() >= 20
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
        }
    };
    if ok {
        Ok(())
    } else {
        Err(BadInput(format!(
            "deploy: --start-at {s:?} is neither +SECONDS (+30) nor an RFC 3339 UTC time (2026-12-02T07:00:00Z)"
        ))
        .into())
    }
}

/// The files for `plan`: (file name, contents).
pub fn render(plan: &Plan) -> Vec<(&'static str, String)> {
    let main = match plan.engine {
        Engine::Swarm => ("stack.yaml", swarm::render(plan)),
        Engine::Kubernetes => ("kubernetes.yaml", kubernetes::render(plan)),
    };
    vec![main, ("prometheus.yml", prometheus::render(plan))]
}

/// Write the files into `dir`: refused when `dir` has other entries unless `force`; each file
/// goes through a temp name and a rename, and on failure nothing this call made is left.
pub fn write_files(dir: &Path, files: &[(&str, String)], force: bool) -> Result<()> {
    let existed = dir.exists();
    if existed {
        if !dir.is_dir() {
            return Err(BadInput(format!(
                "deploy: {} exists and is not a directory; choose another with -o",
                dir.display()
            ))
            .into());
        }
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            return Err(BadInput(format!(
                "deploy: {} is not empty; choose another with -o, or --force to overwrite its deploy files",
                dir.display()
            ))
            .into());
        }
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut written: Vec<PathBuf> = vec![];
    let result = (|| -> Result<()> {
        for (name, text) in files {
            let tmp = dir.join(format!(".{name}.tmp"));
            written.push(tmp.clone());
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        }
        for (name, _) in files {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::rename(&tmp, dir.join(name))
                .with_context(|| format!("writing {}", dir.join(name).display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for t in &written {
            let _ = std::fs::remove_file(t);
        }
        if !existed {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
}

/// The healthcheck command of a profile's image without Docker's `CMD` marker.
pub fn health_command(p: &Profile) -> Vec<String> {
    let t = &p.image.healthcheck.test;
    match t.first().map(String::as_str) {
        Some("CMD") => t[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), t[1..].join(" ")],
        _ => t.clone(),
    }
}

/// Whole seconds of a profile duration (`10s` → 10), at least 1.
pub fn seconds(s: &str) -> u64 {
    (profile::parse_duration_ns(s).unwrap_or(1_000_000_000) / 1_000_000_000).max(1)
}
