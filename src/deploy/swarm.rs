//! `stack.yaml` for `docker stack deploy` (compose file format 3.8).
//!
//! Why it looks the way it does (docs/deploy.md has the whole story):
//! - the origin uses `endpoint_mode: dnsrr`: its service name resolves to every replica's
//!   address, and each viewer spreads its connection over them (hls-swarm src/resolve.rs).
//!   A virtual IP would need IPVS in the kernel, which not every Docker host has;
//! - the swarm replicas never restart (`restart_policy: none`): a finished replica lingers
//!   (`LINGER=true`) serving `/metrics` and `/summary` until the stack is removed, and
//!   `hls-swarm report --dns tasks.swarm` collects the verdict from a container attached to
//!   the stack's overlay network (`attachable: true`);
//! - `START_AT` comes from the environment of `docker stack deploy` (compose variable
//!   substitution), so every replica ramps at the same instant.

use super::yaml::{documents, strings, Yaml};
use super::{seconds, Plan, ORIGIN_SERVICE, SWARM_SERVICE};

/// The stack's overlay network (`<stack>_net` once deployed).
pub const NETWORK: &str = "net";

fn environment(env: &[(String, String)]) -> Yaml {
    let mut m = Yaml::map();
    for (k, v) in env {
        m = m.with(k, v.as_str());
    }
    m
}

fn healthcheck(p: &crate::profile::Profile) -> Yaml {
    let h = &p.image.healthcheck;
    let mut test = vec!["CMD".to_string()];
    test.extend(super::health_command(p));
    Yaml::map()
        .with("test", strings(&test))
        .with("interval", format!("{}s", seconds(&h.interval)))
        .with("timeout", format!("{}s", seconds(&h.timeout)))
        .with("retries", h.retries)
        .with("start_period", format!("{}s", seconds(&h.start_period)))
}

pub fn stack(plan: &Plan) -> Yaml {
    let start_default = plan.start_at.clone().unwrap_or_default();
    let origin = Yaml::map()
        .with("image", plan.origin_image())
        .with("environment", environment(&plan.origin_env()))
        .with("read_only", true)
        .with("cap_drop", strings(&["ALL"]))
        .with("user", format!("{}:{}", plan.origin.image.user.uid, plan.origin.image.user.gid))
        .with("healthcheck", healthcheck(&plan.origin))
        .with("networks", strings(&[NETWORK]))
        .with_comment(
            "deploy",
            Yaml::map()
                .with("replicas", plan.origin_replicas)
                .with("endpoint_mode", "dnsrr")
                .with_comment(
                    "resources",
                    Yaml::map().with(
                        "reservations",
                        Yaml::map().with("memory", crate::bytesize::compose(plan.origin_memory_bytes())),
                    ),
                    &[&format!(
                        "Segments held in RAM plus {} MiB; about {} open connections per replica (hls-origin raises its soft open-file limit itself).",
                        super::ORIGIN_BASE_MEMORY >> 20,
                        plan.origin_file_descriptors()
                    )],
                )
                .with(
                    "restart_policy",
                    Yaml::map().with("condition", "any").with("delay", "2s"),
                ),
            &["dnsrr: the service name resolves to every replica (no virtual IP, no IPVS needed)."],
        );
    let swarm = Yaml::map()
        .with("image", plan.swarm_image())
        .with_comment(
            "environment",
            environment(&plan.swarm_env(format!("${{START_AT:-{start_default}}}"))),
            &["START_AT: the instant every replica starts its ramp (RFC 3339 UTC or +SECONDS), from `START_AT=… docker stack deploy`."],
        )
        .with("read_only", true)
        .with("cap_drop", strings(&["ALL"]))
        .with("user", format!("{}:{}", plan.swarm.image.user.uid, plan.swarm.image.user.gid))
        .with("healthcheck", healthcheck(&plan.swarm))
        .with("networks", strings(&[NETWORK]))
        .with(
            "deploy",
            Yaml::map()
                .with("replicas", plan.replicas)
                .with("endpoint_mode", "dnsrr")
                .with_comment(
                    "resources",
                    Yaml::map()
                        .with(
                            "reservations",
                            Yaml::map()
                                .with("memory", crate::bytesize::compose(plan.swarm_memory_bytes()))
                                .with("cpus", format!("{:.2}", plan.swarm_millicores() as f64 / 1000.0)),
                        )
                        .with(
                            "limits",
                            Yaml::map().with("memory", crate::bytesize::compose(plan.swarm_memory_bytes())),
                        ),
                    &[&format!(
                        "From the profile's derived figures: {} viewers need {} open files (hls-swarm raises its soft limit to the hard one itself).",
                        plan.viewers_per_replica(),
                        plan.swarm_file_descriptors()
                    )],
                )
                .with_comment(
                    "restart_policy",
                    Yaml::map().with("condition", "none"),
                    &["A replica runs once: after its duration it lingers with its verdict until the stack is removed."],
                ),
        );
    Yaml::map()
        .with("version", "3.8")
        .with(
            "services",
            Yaml::map()
                .with(ORIGIN_SERVICE, origin)
                .with(SWARM_SERVICE, swarm),
        )
        .with_comment(
            "networks",
            Yaml::map().with(
                NETWORK,
                Yaml::map()
                    .with("driver", "overlay")
                    .with("attachable", true),
            ),
            &["attachable: `docker run --network <stack>_net …` can join it (hls-swarm report, Prometheus)."],
        )
}

pub fn render(plan: &Plan) -> String {
    let mut header = plan.header("stack.yaml");
    header.extend([
        String::new(),
        "  START_AT=$(date -u -d +60sec +%FT%TZ) docker stack deploy -c stack.yaml hls".to_string(),
        format!(
            "  docker run --rm --network hls_{NETWORK} {} report --dns tasks.{SWARM_SERVICE} --expect {}",
            plan.swarm_image(),
            plan.replicas
        ),
        "  docker stack rm hls".to_string(),
    ]);
    documents(&header, &[stack(plan)])
}
