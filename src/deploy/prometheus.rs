//! `prometheus.yml`: one scrape job for the origins and one for the swarm replicas, each
//! found through DNS service discovery (`dns_sd_configs`, A records): on Docker Swarm the
//! `tasks.<service>` names (Prometheus runs on the stack's attachable network), on Kubernetes
//! the headless Services (Prometheus runs in the same namespace). Both programs serve
//! `/metrics` on the port their profile sets.

use super::yaml::{documents, strings, Yaml};
use super::{kubernetes, Engine, Plan, ORIGIN_SERVICE, SWARM_SERVICE};

/// Scrape and DNS refresh interval.
pub const SCRAPE_INTERVAL: &str = "5s";

/// The scrape jobs: (job name, DNS name, port).
pub fn targets(plan: &Plan) -> Vec<(&'static str, String, u16)> {
    let (origin, swarm) = match plan.engine {
        Engine::Swarm => (
            format!("tasks.{ORIGIN_SERVICE}"),
            format!("tasks.{SWARM_SERVICE}"),
        ),
        Engine::Kubernetes => (
            kubernetes::ORIGIN_PODS_SERVICE.to_string(),
            SWARM_SERVICE.to_string(),
        ),
    };
    vec![
        ("hls-origin", origin, plan.origin_port()),
        ("hls-swarm", swarm, plan.metrics_port()),
    ]
}

pub fn config(plan: &Plan) -> Yaml {
    let jobs = targets(plan)
        .into_iter()
        .map(|(job, name, port)| {
            Yaml::map()
                .with("job_name", job)
                .with("metrics_path", "/metrics")
                .with(
                    "dns_sd_configs",
                    Yaml::Seq(vec![Yaml::map()
                        .with("names", strings(&[name]))
                        .with("type", "A")
                        .with("port", port as u32)
                        .with("refresh_interval", SCRAPE_INTERVAL)]),
                )
        })
        .collect();
    Yaml::map()
        .with(
            "global",
            Yaml::map()
                .with("scrape_interval", SCRAPE_INTERVAL)
                .with("evaluation_interval", SCRAPE_INTERVAL),
        )
        .with("scrape_configs", Yaml::Seq(jobs))
}

pub fn render(plan: &Plan) -> String {
    let mut header = plan.header("prometheus.yml");
    header.push(match plan.engine {
        Engine::Swarm => format!(
            "Run Prometheus on the stack's network: docker service create --network hls_{} … (or any container attached to it).",
            super::swarm::NETWORK
        ),
        Engine::Kubernetes => {
            "Run Prometheus in the same namespace (short names resolve through the pod's DNS search path).".to_string()
        }
    });
    documents(&header, &[config(plan)])
}
