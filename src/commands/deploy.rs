//! `imgbuild deploy swarm|kubernetes`: writes the files that run origin and swarm as
//! replicated services (src/deploy/ renders them) and says how to start them.

use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;
use crate::deploy::{render, write_files, DeployArgs, Engine, Plan, SWARM_SERVICE};

pub fn run(ctx: &Ctx, a: DeployArgs) -> Result<()> {
    let plan = Plan::new(&ctx.root, &a)?;
    let dir = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("deploy-{}", a.engine.as_str())));
    let files = render(&plan);
    write_files(&dir, &files, a.force)?;
    for (name, _) in &files {
        println!("wrote {}", dir.join(name).display());
    }
    for line in plan.header("") {
        println!("{}", line.trim_start_matches(": "));
    }
    let d = dir.display();
    match plan.engine {
        Engine::Swarm => {
            println!("next: START_AT=$(date -u -d +60sec +%FT%TZ) docker stack deploy -c {d}/stack.yaml hls");
            println!(
                "then: docker run --rm --network hls_net {} report --dns tasks.{SWARM_SERVICE} --expect {}",
                plan.swarm_image(),
                plan.replicas
            );
        }
        Engine::Kubernetes => {
            println!("next: kubectl apply -f {d}/kubernetes.yaml");
            println!(
                "then: kubectl run hls-report --rm -i --restart=Never --image {} -- report --dns {SWARM_SERVICE} --expect {}",
                plan.swarm_image(),
                plan.replicas
            );
        }
    }
    Ok(())
}
