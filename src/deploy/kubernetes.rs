//! `kubernetes.yaml`: every object of the load test, one YAML document each, for
//! `kubectl apply -f`:
//! - origin: a Deployment of `--origin-replicas` pods, a Service (`origin`, what viewers
//!   connect to) and a headless Service (`origin-pods`, every pod's address for Prometheus);
//! - swarm: an indexed Job (`completionMode: Indexed`, `parallelism` = `completions` =
//!   `--replicas`) whose pods linger after their duration, and a headless Service (`swarm`)
//!   through which `hls-swarm report --dns swarm` and Prometheus find every replica.
//!
//! Every pod runs as the image's non-root user with a read-only root, no capabilities, no
//! privilege escalation and the runtime's default seccomp profile. Probes run the image's own
//! healthcheck command. Memory requests and limits come from the profile's derived figures;
//! the open-file need becomes a comment, since Kubernetes has no field for it (the programs
//! raise their soft limit to the hard one at start-up).

use super::yaml::{documents, strings, Yaml};
use super::{health_command, seconds, Plan, ORIGIN_SERVICE, SWARM_SERVICE};
use crate::profile::Profile;

/// The headless Service listing every origin pod.
pub const ORIGIN_PODS_SERVICE: &str = "origin-pods";
/// The label every object carries.
pub const PART_OF: &str = "hls-load-test";

fn labels(p: &Profile, instance: &str) -> Yaml {
    Yaml::map()
        .with("app.kubernetes.io/name", p.image.name.as_str())
        .with("app.kubernetes.io/instance", instance)
        .with("app.kubernetes.io/part-of", PART_OF)
        .with("app.kubernetes.io/managed-by", "imgbuild")
}

fn selector(p: &Profile, instance: &str) -> Yaml {
    Yaml::map()
        .with("app.kubernetes.io/name", p.image.name.as_str())
        .with("app.kubernetes.io/instance", instance)
}

fn metadata(p: &Profile, name: &str, instance: &str) -> Yaml {
    Yaml::map()
        .with("name", name)
        .with("labels", labels(p, instance))
        .with("annotations", Yaml::map().with("imgbuild/profile", p.id()))
}

fn env(vars: &[(String, String)]) -> Yaml {
    Yaml::Seq(
        vars.iter()
            .map(|(k, v)| {
                Yaml::map()
                    .with("name", k.as_str())
                    .with("value", v.as_str())
            })
            .collect(),
    )
}

/// Liveness and readiness probes running the image's healthcheck command.
fn probes(p: &Profile) -> (Yaml, Yaml) {
    let h = &p.image.healthcheck;
    let exec = Yaml::map().with("command", strings(&health_command(p)));
    let base = |period: u64| {
        Yaml::map()
            .with("exec", exec.clone())
            .with("periodSeconds", period)
            .with("timeoutSeconds", seconds(&h.timeout))
            .with("failureThreshold", h.retries)
    };
    let liveness = base(seconds(&h.interval)).with("initialDelaySeconds", seconds(&h.start_period));
    let readiness = base(seconds(&h.start_interval));
    (liveness, readiness)
}

fn pod_security(p: &Profile) -> Yaml {
    Yaml::map()
        .with("runAsNonRoot", true)
        .with("runAsUser", p.image.user.uid)
        .with("runAsGroup", p.image.user.gid)
        .with("seccompProfile", Yaml::map().with("type", "RuntimeDefault"))
}

fn container_security() -> Yaml {
    Yaml::map()
        .with("allowPrivilegeEscalation", false)
        .with("readOnlyRootFilesystem", true)
        .with("runAsNonRoot", true)
        .with("capabilities", Yaml::map().with("drop", strings(&["ALL"])))
}

#[allow(clippy::too_many_arguments)]
fn container(
    p: &Profile,
    name: &str,
    image: String,
    vars: &[(String, String)],
    port: (&str, u16),
    resources: Yaml,
    fd_comment: String,
) -> Yaml {
    let (liveness, readiness) = probes(p);
    Yaml::map()
        .with("name", name)
        .with("image", image)
        .with("imagePullPolicy", "IfNotPresent")
        .with("env", env(vars))
        .with(
            "ports",
            Yaml::Seq(vec![Yaml::map()
                .with("name", port.0)
                .with("containerPort", port.1 as u32)
                .with("protocol", "TCP")]),
        )
        .with_comment("resources", resources, &[&fd_comment])
        .with("securityContext", container_security())
        .with("livenessProbe", liveness)
        .with("readinessProbe", readiness)
}

fn service(p: &Profile, name: &str, instance: &str, port: (&str, u16), headless: bool) -> Yaml {
    let mut spec = Yaml::map();
    if headless {
        spec = spec.with("clusterIP", "None");
    }
    spec = spec.with("selector", selector(p, instance)).with(
        "ports",
        Yaml::Seq(vec![Yaml::map()
            .with("name", port.0)
            .with("port", port.1 as u32)
            .with("targetPort", port.0)
            .with("protocol", "TCP")]),
    );
    Yaml::map()
        .with("apiVersion", "v1")
        .with("kind", "Service")
        .with("metadata", metadata(p, name, instance))
        .with("spec", spec)
}

/// Every object, in apply order.
pub fn objects(plan: &Plan) -> Vec<Yaml> {
    let o = &plan.origin;
    let s = &plan.swarm;
    let origin_mem = crate::bytesize::mebibytes(plan.origin_memory_bytes());
    let origin_container = container(
        o,
        ORIGIN_SERVICE,
        plan.origin_image(),
        &plan.origin_env(),
        ("http", plan.origin_port()),
        Yaml::map()
            .with("requests", Yaml::map().with("cpu", "500m").with("memory", origin_mem.as_str()))
            .with("limits", Yaml::map().with("memory", origin_mem.as_str())),
        format!(
            "Open files: about {} connections per origin replica; Kubernetes has no fd limit field, hls-origin raises its soft limit to the hard one. Memory: segments held in RAM plus {} MiB.",
            plan.origin_file_descriptors(),
            super::ORIGIN_BASE_MEMORY >> 20
        ),
    );
    let deployment = Yaml::map()
        .with("apiVersion", "apps/v1")
        .with("kind", "Deployment")
        .with("metadata", metadata(o, ORIGIN_SERVICE, ORIGIN_SERVICE))
        .with(
            "spec",
            Yaml::map()
                .with("replicas", plan.origin_replicas)
                .with(
                    "selector",
                    Yaml::map().with("matchLabels", selector(o, ORIGIN_SERVICE)),
                )
                .with(
                    "template",
                    Yaml::map()
                        .with(
                            "metadata",
                            Yaml::map().with("labels", labels(o, ORIGIN_SERVICE)),
                        )
                        .with(
                            "spec",
                            Yaml::map()
                                .with("automountServiceAccountToken", false)
                                .with("securityContext", pod_security(o))
                                .with("containers", Yaml::Seq(vec![origin_container])),
                        ),
                ),
        );
    let swarm_mem = crate::bytesize::mebibytes(plan.swarm_memory_bytes());
    let swarm_container = container(
        s,
        SWARM_SERVICE,
        plan.swarm_image(),
        &plan.swarm_env(plan.start_at.clone().unwrap_or_default()),
        ("metrics", plan.metrics_port()),
        Yaml::map()
            .with(
                "requests",
                Yaml::map()
                    .with("cpu", format!("{}m", plan.swarm_millicores()))
                    .with("memory", swarm_mem.as_str()),
            )
            .with("limits", Yaml::map().with("memory", swarm_mem.as_str())),
        format!(
            "From the profile's derived figures: {} viewers need {} open files; Kubernetes has no fd limit field, hls-swarm raises its soft limit to the hard one.",
            plan.viewers_per_replica(),
            plan.swarm_file_descriptors()
        ),
    );
    let job = Yaml::map()
        .with("apiVersion", "batch/v1")
        .with("kind", "Job")
        .with("metadata", metadata(s, SWARM_SERVICE, SWARM_SERVICE))
        .with(
            "spec",
            Yaml::map()
                .with("completionMode", "Indexed")
                .with("completions", plan.replicas)
                .with("parallelism", plan.replicas)
                .with_comment(
                    "backoffLimit",
                    0u32,
                    &["A replica runs once; its exit status is its verdict (0 pass, 1 fail)."],
                )
                .with(
                    "template",
                    Yaml::map()
                        .with("metadata", Yaml::map().with("labels", labels(s, SWARM_SERVICE)))
                        .with(
                            "spec",
                            Yaml::map()
                                .with("restartPolicy", "Never")
                                .with_comment(
                                    "subdomain",
                                    SWARM_SERVICE,
                                    &["Pods are named swarm-<index>.swarm through the headless Service."],
                                )
                                .with("automountServiceAccountToken", false)
                                .with("securityContext", pod_security(s))
                                .with("containers", Yaml::Seq(vec![swarm_container])),
                        ),
                ),
        );
    vec![
        deployment,
        service(
            o,
            ORIGIN_SERVICE,
            ORIGIN_SERVICE,
            ("http", plan.origin_port()),
            false,
        ),
        service(
            o,
            ORIGIN_PODS_SERVICE,
            ORIGIN_SERVICE,
            ("http", plan.origin_port()),
            true,
        ),
        service(
            s,
            SWARM_SERVICE,
            SWARM_SERVICE,
            ("metrics", plan.metrics_port()),
            true,
        ),
        job,
    ]
}

pub fn render(plan: &Plan) -> String {
    let mut header = plan.header("kubernetes.yaml");
    header.extend([
        String::new(),
        "  kubectl apply -f kubernetes.yaml".to_string(),
        format!(
            "  kubectl run hls-report --rm -i --restart=Never --image {} -- report --dns {SWARM_SERVICE} --expect {}",
            plan.swarm_image(),
            plan.replicas
        ),
        "  kubectl delete -f kubernetes.yaml".to_string(),
    ]);
    documents(&header, &objects(plan))
}
