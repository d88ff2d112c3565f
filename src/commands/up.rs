//! `imgbuild up`: one command from nothing to a running thing. Builds what was asked through
//! the same code paths as `imgbuild container` / `iso` / `boot`, then acts:
//! - `container`: load the image into docker, run it detached with its ports on 127.0.0.1,
//!   wait until docker says `healthy`, print where it answers and how to stop it;
//! - `iso`: boot the origin ISO in QEMU with the profile's ports forwarded (foreground);
//! - `run`: build origin and swarm images, start the origin on a private docker network,
//!   wait for healthy, run the swarm against it for `--duration`, print the swarm's
//!   summary, and remove every container, network and temp file it made — also on Ctrl-C;
//!   with `--engine swarm --replicas N`, the same as a Docker Swarm stack (the files of
//!   `imgbuild deploy swarm`, src/deploy/): origin and N swarm replicas, the verdict from
//!   `hls-swarm report`, the stack removed afterwards; a node not in a swarm becomes a
//!   one-node swarm only with `--init-swarm`, and leaves it again at the end.
//!
//! Words may come in any order (`up run`, `up swarm stress run`, `up default iso`): each is
//! a kind, an action or a profile name. With no words, on a terminal a menu asks; not on a
//! terminal the defaults (origin default container) are used and said in one line. Every
//! external command is announced with an `Executing:` line before it runs (a command polled
//! in a loop once, before the loop). The builds and `boot` are the commands' own functions
//! (src/commands/), called directly.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::boot::BootArgs;
use super::container::ContainerArgs;
use super::iso::{BootInputs, IsoArgs};
use super::microvm::MicrovmArgs;
use super::Ctx;
use crate::error::BadInput;
use crate::profile::{self, Kind, Profile};
use crate::root::Root;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// origin or swarm (default origin).
    pub kind: Option<String>,
    /// A profile name of that kind (default: default).
    pub profile: Option<String>,
    /// container (default), iso, microvm or run.
    pub action: Option<String>,
    /// How long `run` lets the swarm load the origin (e.g. 20s, 2m).
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// The swarm profile `run` uses when KIND is origin.
    #[arg(long, default_value = "default", value_name = "PROFILE")]
    pub swarm: String,
    /// The origin profile `run` uses when KIND is swarm.
    #[arg(long, default_value = "default", value_name = "PROFILE")]
    pub origin: String,
    /// For `iso`: boot with UEFI firmware (OVMF) instead of BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// For `container`: the enhanced origin image (imgbuild-init as PID 1 supervising the
    /// origin), as `imgbuild container --init` builds it.
    #[arg(long)]
    pub init: bool,
    /// For `run`: where origin and swarm run: plain docker containers, or a Docker Swarm
    /// stack (origin and `--replicas` swarm replicas, one merged verdict).
    #[arg(long, value_enum, default_value = "docker")]
    pub engine: Engine,
    /// For `run --engine swarm`: swarm replicas, each with the swarm profile's viewers.
    #[arg(long, value_name = "N", default_value = "1")]
    pub replicas: u32,
    /// For `run --engine swarm`: make this node a one-node swarm when it is in none (it leaves
    /// the swarm again afterwards).
    #[arg(long)]
    pub init_swarm: bool,
}

/// Where `up … run` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Containers on a private docker network.
    Docker,
    /// A Docker Swarm stack (`docker stack deploy`).
    Swarm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Container,
    Iso,
    Microvm,
    Run,
}

impl Action {
    const ALL: [(Action, &'static str, &'static str); 4] = [
        (
            Action::Container,
            "container",
            "load the image into docker and run it until you stop it",
        ),
        (
            Action::Iso,
            "iso",
            "boot the ISO in QEMU with the ports forwarded (origin only)",
        ),
        (
            Action::Microvm,
            "microvm",
            "boot a MicroVM (kernel + initramfs, no firmware) in QEMU (origin only)",
        ),
        (
            Action::Run,
            "run",
            "origin + swarm: a load test for --duration, then clean up",
        ),
    ];
    fn parse(s: &str) -> Option<Action> {
        Self::ALL
            .iter()
            .find(|(_, n, _)| *n == s)
            .map(|(a, _, _)| *a)
    }
}

/// What the user asked for, after defaults.
#[derive(Debug, PartialEq, Eq)]
pub struct Choice {
    pub kind: Kind,
    pub profile: String,
    pub action: Action,
}

/// Sorts the given words into kind, profile and action.
pub fn classify(
    root: &Root,
    words: &[String],
) -> Result<(Option<Kind>, Option<String>, Option<Action>)> {
    let (mut kind, mut prof, mut action) = (None, None, None);
    for w in words {
        if let (None, Some(k)) = (kind, Kind::parse(w)) {
            kind = Some(k);
        } else if let (None, Some(a)) = (action, Action::parse(w)) {
            action = Some(a);
        } else if prof.is_none() {
            prof = Some(w.clone());
        } else {
            return Err(BadInput(format!(
                "up: unexpected word {w:?}; usage: imgbuild up [origin|swarm] [PROFILE] [container|iso|microvm|run]"
            ))
            .into());
        }
    }
    let _ = root;
    Ok((kind, prof, action))
}

use crate::signals::{install as install_signal_handlers, interrupted};

/// Announces and runs an external command, returning its output (stdout captured).
fn exec_output(cmd: &mut Command) -> Result<std::process::Output> {
    announce(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program(cmd)))
}

/// Announces and runs an external command with inherited stdout/stderr; fails on non-zero.
fn exec(cmd: &mut Command) -> Result<()> {
    let out = exec_output(cmd)?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            program(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn announce(cmd: &Command) {
    let mut line = program(cmd);
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            line.push(' ');
            line.push_str(&a);
        }
    }
    eprintln!("Executing: {line}");
}

/// The docker engine answers, or an actionable error.
fn require_docker() -> Result<()> {
    let mut info = Command::new("docker");
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    announce(&info);
    match info.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("docker is not installed: install Docker Engine (Debian: apt-get install docker.io) and start it")
        }
        Err(e) => bail!("cannot run docker: {e}"),
        Ok(o) if !o.status.success() => bail!(
            "the Docker engine is not reachable (docker info: {}); start it (service docker start) or set DOCKER_HOST",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

fn require_qemu() -> Result<()> {
    let version = |q: &Path| {
        let mut c = Command::new(q);
        c.arg("--version");
        announce(&c);
        c.output().is_ok()
    };
    match crate::qemu::accel::qemu_program(None) {
        Some(q) if version(&q) => Ok(()),
        _ => bail!("qemu-system-x86_64 is not installed: apt-get install qemu-system-x86 (and ovmf for --uefi), or name it with IMGBUILD_QEMU"),
    }
}

/// Everything `up` made that must go when it ends, in any way.
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    /// Docker Swarm stacks, removed before the containers.
    stacks: Vec<String>,
    /// Leave the swarm at the end (`up` made this node a one-node swarm).
    leave_swarm: bool,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("imgbuild-up-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Cleanup {
            containers: vec![],
            networks: vec![],
            stacks: vec![],
            leave_swarm: false,
            dir: Some(dir),
        })
    }
    fn dir(&self) -> &Path {
        self.dir.as_deref().expect("temp dir exists until drop")
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.containers.drain(..).rev() {
            let _ = exec_output(Command::new("docker").args(["rm", "-f", &c]));
        }
        for st in self.stacks.drain(..) {
            let _ = exec_output(Command::new("docker").args(["stack", "rm", &st]));
            // The stack's task containers and network go asynchronously; wait for them, then
            // remove any task container still there.
            let net = format!("{st}_{}", crate::deploy::swarm::NETWORK);
            let label = format!("label=com.docker.stack.namespace={st}");
            let mut networks = Command::new("docker");
            networks.args(["network", "ls", "-q", "--filter", &format!("name={net}")]);
            let mut tasks = Command::new("docker");
            tasks.args(["ps", "-aq", "--filter", &label]);
            // Polled below: announced once each.
            announce(&networks);
            announce(&tasks);
            let empty = |c: &mut Command| {
                c.output()
                    .map_or(true, |o| o.stdout.iter().all(u8::is_ascii_whitespace))
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if empty(&mut networks) && empty(&mut tasks) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            if let Ok(o) = exec_output(&mut tasks) {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = exec_output(Command::new("docker").args(["rm", "-f", id]));
                }
            }
        }
        if self.leave_swarm {
            let _ = exec_output(Command::new("docker").args(["swarm", "leave", "--force"]));
        }
        for n in self.networks.drain(..) {
            let _ = exec_output(Command::new("docker").args(["network", "rm", &n]));
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Asks on the terminal: kind, profile, action. Empty answers take the default shown.
fn menu(root: &Root) -> Result<Choice> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ask = |title: &str, options: &[(String, String)], default: usize| -> Result<String> {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{title}:")?;
        for (i, (name, help)) in options.iter().enumerate() {
            writeln!(err, "  {}) {:<12} {}", i + 1, name, help)?;
        }
        loop {
            write!(err, "choose [{}]: ", options[default].0)?;
            err.flush()?;
            let line = match lines.next() {
                Some(l) => l?,
                None => bail!("up: no answer (end of input)"),
            };
            let t = line.trim();
            if t.is_empty() {
                return Ok(options[default].0.clone());
            }
            if let Ok(n) = t.parse::<usize>() {
                if (1..=options.len()).contains(&n) {
                    return Ok(options[n - 1].0.clone());
                }
            }
            if options.iter().any(|(o, _)| o == t) {
                return Ok(t.to_string());
            }
            writeln!(err, "  {t:?} is not one of the choices")?;
        }
    };
    eprintln!("imgbuild up — build and run an image");
    let kinds: Vec<(String, String)> = Kind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), format!("hls-{k} images")))
        .collect();
    let kind = Kind::parse(&ask("Kind", &kinds, 0)?).expect("offered kinds parse");
    let names = profile::profile_names(root, kind)?;
    let mut profiles = Vec::new();
    for n in &names {
        let p = profile::load(root, kind, n)?;
        profiles.push((n.clone(), p.description));
    }
    let default = names.iter().position(|n| n == "default").unwrap_or(0);
    let prof = ask("Profile", &profiles, default)?;
    let actions: Vec<(String, String)> = Action::ALL
        .iter()
        .filter(|(a, _, _)| kind == Kind::Origin || !matches!(a, Action::Iso | Action::Microvm))
        .map(|(_, n, h)| (n.to_string(), h.to_string()))
        .collect();
    let action = Action::parse(&ask("Action", &actions, 0)?).expect("offered actions parse");
    Ok(Choice {
        kind,
        profile: prof,
        action,
    })
}

pub fn run(ctx: &Ctx, a: UpArgs) -> Result<()> {
    let words: Vec<String> = [&a.kind, &a.profile, &a.action]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let choice = if words.is_empty() {
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            menu(&ctx.root)?
        } else {
            eprintln!(
                "imgbuild up: not on a terminal; using the defaults: origin default container"
            );
            Choice {
                kind: Kind::Origin,
                profile: "default".into(),
                action: Action::Container,
            }
        }
    } else {
        let (k, p, act) = classify(&ctx.root, &words)?;
        Choice {
            kind: k.unwrap_or(Kind::Origin),
            profile: p.unwrap_or_else(|| "default".into()),
            action: act.unwrap_or(Action::Container),
        }
    };
    let p = profile::load(&ctx.root, choice.kind, &choice.profile)?;
    if a.init && choice.action != Action::Container {
        return Err(BadInput(
            "up: --init is for the container action (the enhanced origin image)".into(),
        )
        .into());
    }
    install_signal_handlers();
    match choice.action {
        Action::Container => up_container(ctx, &p, a.init),
        Action::Iso => up_iso(ctx, &p, a.uefi),
        Action::Microvm => up_microvm(ctx, &p),
        Action::Run => {
            let (origin, swarm) = match choice.kind {
                Kind::Origin => (p, profile::load(&ctx.root, Kind::Swarm, &a.swarm)?),
                Kind::Swarm => (profile::load(&ctx.root, Kind::Origin, &a.origin)?, p),
            };
            let secs = parse_secs(&a.duration).ok_or_else(|| {
                BadInput(format!(
                    "--duration {:?}: a duration such as 20s or 2m",
                    a.duration
                ))
            })?;
            match a.engine {
                Engine::Docker if a.replicas != 1 => Err(BadInput(format!(
                    "up: --replicas {} needs --engine swarm (plain docker runs one swarm container)",
                    a.replicas
                ))
                .into()),
                Engine::Docker => up_run(ctx, &origin, &swarm, secs),
                Engine::Swarm if a.replicas == 0 => {
                    Err(BadInput("up: --replicas must be at least 1".into()).into())
                }
                Engine::Swarm => {
                    up_run_swarm(ctx, &origin, &swarm, secs, a.replicas, a.init_swarm)
                }
            }
        }
    }
}

/// `20s`, `2m`, `90` → seconds.
fn parse_secs(s: &str) -> Option<u64> {
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    profile::parse_duration_ns(s).map(|ns| ns.div_ceil(1_000_000_000))
}

/// The reference of the profile's image (`init`: the enhanced image, tagged `<tag>-init`).
fn image_ref(p: &Profile, init: bool) -> String {
    if init {
        format!("{}-init", p.image_ref())
    } else {
        p.image_ref()
    }
}

/// Builds the image tar into the temp dir and loads it into docker.
fn build_and_load(ctx: &Ctx, p: &Profile, tmp: &Path, init: bool) -> Result<()> {
    let tar = tmp.join(format!("hls-{}-{}.tar", p.kind, p.name));
    eprintln!("imgbuild up: building {} ({})", image_ref(p, init), p.id());
    let mut args = ContainerArgs::new(&p.id());
    args.output = Some(tar.display().to_string());
    args.init = init;
    super::container::run(ctx, args)?;
    if interrupted() {
        bail!("interrupted");
    }
    exec(Command::new("docker").args(["load", "-i"]).arg(&tar))?;
    let _ = std::fs::remove_file(&tar);
    Ok(())
}

/// Polls docker until the container is healthy; fails when it is unhealthy, exits, the
/// deadline passes or the user interrupts.
fn wait_healthy(name: &str, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    let mut poll = Command::new("docker");
    poll.args([
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.Health.Status}}",
        name,
    ]);
    // Polled below: announced once.
    announce(&poll);
    loop {
        if interrupted() {
            bail!("interrupted while waiting for {name} to become healthy");
        }
        let o = poll.output().context("running docker inspect")?;
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        match s.split_once(' ') {
            Some((_, "healthy")) => return Ok(()),
            Some(("exited" | "dead", _)) => {
                let logs =
                    exec_output(Command::new("docker").args(["logs", "--tail", "20", name]))?;
                bail!(
                    "container {name} exited before it became healthy; its last output:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            Some((_, "unhealthy")) => bail!(
                "container {name} is unhealthy (docker inspect {name} shows the healthcheck log)"
            ),
            _ => {}
        }
        if start.elapsed() > deadline {
            bail!(
                "container {name} not healthy after {}s (status: {s})",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn up_container(ctx: &Ctx, p: &Profile, init: bool) -> Result<()> {
    require_docker()?;
    let cleanup = Cleanup::new()?;
    build_and_load(ctx, p, cleanup.dir(), init)?;
    let suffix = if init { "-init" } else { "" };
    let name = format!("imgbuild-up-{}-{}{suffix}", p.kind, p.name);
    // A previous `up` of the same profile is replaced.
    let _ = exec_output(Command::new("docker").args(["rm", "-f", &name]));
    let mut run = Command::new("docker");
    run.args(["run", "-d", "--name", &name]);
    for port in p.ports() {
        run.args(["-p", &format!("127.0.0.1:{port}:{port}")]);
    }
    if p.kind == Kind::Swarm {
        bail!(
            "a swarm needs an origin to load: use `imgbuild up swarm {} run`",
            p.name
        );
    }
    let image = image_ref(p, init);
    run.arg(&image);
    exec(&mut run)?;
    if let Err(e) = wait_healthy(&name, Duration::from_secs(60)) {
        let _ = exec_output(Command::new("docker").args(["rm", "-f", &name]));
        return Err(e);
    }
    let port = p.ports().first().copied().unwrap_or(0);
    println!(
        "{image} is healthy: http://127.0.0.1:{port}/master.m3u8 (container {name}; stop it with: docker rm -f {name})"
    );
    Ok(())
}

/// What booting a profile's image needs first: an origin profile, QEMU, a temp directory.
fn boot_prelude(p: &Profile, images: &str) -> Result<Cleanup> {
    if p.kind != Kind::Origin {
        return Err(BadInput(format!(
            "{}: {images} are built for origin profiles only",
            p.id()
        ))
        .into());
    }
    require_qemu()?;
    Cleanup::new()
}

fn up_iso(ctx: &Ctx, p: &Profile, uefi: bool) -> Result<()> {
    let cleanup = boot_prelude(p, "ISOs")?;
    let iso = super::iso::build(
        ctx,
        &IsoArgs {
            input: BootInputs::new(&p.id()),
            output: Some(cleanup.dir().join(format!("hls-origin-{}.iso", p.name))),
            stage: None,
            timings: false,
        },
    )?;
    let mut boot = BootArgs::new(iso)?;
    boot.uefi = uefi;
    super::boot::run(ctx, boot)
}

fn up_microvm(ctx: &Ctx, p: &Profile) -> Result<()> {
    let cleanup = boot_prelude(p, "MicroVMs")?;
    let dir = super::microvm::build(
        ctx,
        &MicrovmArgs {
            input: BootInputs::new(&p.id()),
            output: Some(cleanup.dir().join(format!("hls-origin-{}.microvm", p.name))),
            pvh: false,
            timings: false,
        },
    )?;
    super::boot::run(ctx, BootArgs::new(dir)?)
}

/// Runs a foreground child until it exits or the user interrupts (then it is killed).
fn wait_child(child: &mut Child) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn up_run(ctx: &Ctx, origin: &Profile, swarm: &Profile, secs: u64) -> Result<()> {
    require_docker()?;
    let mut cleanup = Cleanup::new()?;
    build_and_load(ctx, origin, cleanup.dir(), false)?;
    build_and_load(ctx, swarm, cleanup.dir(), false)?;
    let tag = format!("imgbuild-up-{}", std::process::id());
    let net = tag.clone();
    exec(Command::new("docker").args(["network", "create", &net]))?;
    cleanup.networks.push(net.clone());
    let origin_name = format!("{tag}-origin");
    cleanup.containers.push(origin_name.clone());
    exec(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &origin_name,
        "--network",
        &net,
        "--network-alias",
        "origin",
        &origin.image_ref(),
    ]))?;
    wait_healthy(&origin_name, Duration::from_secs(60))?;
    let port = origin.ports().first().copied().unwrap_or(17080);
    let url = format!("http://origin:{port}/master.m3u8");
    let swarm_name = format!("{tag}-swarm");
    cleanup.containers.push(swarm_name.clone());
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--name",
        &swarm_name,
        "--network",
        &net,
        &swarm.image_ref(),
        "--duration",
        &format!("{secs}s"),
        &url,
    ]);
    announce(&cmd);
    let mut child = cmd.stdin(Stdio::null()).spawn().context("running docker")?;
    let status = wait_child(&mut child)?;
    drop(cleanup);
    match status {
        None => bail!("interrupted; removed the containers and the network"),
        Some(s) if s.success() => {
            eprintln!("imgbuild up: {} against {} passed", swarm.id(), origin.id());
            Ok(())
        }
        Some(s) => bail!("the swarm reported failure ({s}); its summary is above"),
    }
}

/// This node's swarm state (`inactive`, `active`, …) and whether it is a manager.
fn swarm_state() -> Result<(String, bool)> {
    let o = exec_output(Command::new("docker").args([
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ]))?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (state, manager) = s.split_once(' ').unwrap_or((&s, "false"));
    Ok((state.to_string(), manager == "true"))
}

/// `run --engine swarm`: the origin and `replicas` swarm replicas as a Docker Swarm stack made
/// from `imgbuild deploy swarm`'s files; the verdict from `hls-swarm report` run on the
/// stack's network; the stack (and a swarm made here) removed afterwards, also on Ctrl-C.
fn up_run_swarm(
    ctx: &Ctx,
    origin: &Profile,
    swarm: &Profile,
    secs: u64,
    replicas: u32,
    init_swarm: bool,
) -> Result<()> {
    require_docker()?;
    let (state, manager) = swarm_state()?;
    let mut cleanup = Cleanup::new()?;
    match state.as_str() {
        "active" if manager => {}
        "active" => bail!(
            "this Docker node is a swarm worker: run `imgbuild up … --engine swarm` on a manager node"
        ),
        "inactive" if init_swarm => {
            exec(Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]))?;
            cleanup.leave_swarm = true;
        }
        "inactive" => {
            return Err(BadInput(
                "up: this Docker node is not in a swarm; add --init-swarm to make it a one-node swarm for this run (it leaves it again afterwards), or run docker swarm init yourself".into(),
            )
            .into())
        }
        other => bail!("this Docker node's swarm state is {other:?}; expected active or inactive"),
    }
    build_and_load(ctx, origin, cleanup.dir(), false)?;
    build_and_load(ctx, swarm, cleanup.dir(), false)?;
    // The same files `imgbuild deploy swarm` writes.
    let args = crate::deploy::DeployArgs {
        engine: crate::deploy::Engine::Swarm,
        profiles: vec![origin.id(), swarm.id()],
        replicas,
        viewers_per_replica: None,
        ramp_rate: None,
        origin_replicas: 1,
        duration: format!("{secs}s"),
        // Each replica waits 20 s after its start: time for the origin to pass its first
        // healthcheck (10 s interval), before which Docker Swarm's DNS does not list it.
        start_at: Some("+20".into()),
        registry: None,
        output: None,
        force: false,
    };
    let plan = crate::deploy::Plan::new(&ctx.root, &args)?;
    let files = crate::deploy::render(&plan);
    crate::deploy::write_files(&cleanup.dir().join("deploy"), &files, false)?;
    let stack = format!("imgbuild-up-{}", std::process::id());
    cleanup.stacks.push(stack.clone());
    exec(
        Command::new("docker")
            .args(["stack", "deploy", "--resolve-image", "never", "-c"])
            .arg(cleanup.dir().join("deploy/stack.yaml"))
            .arg(&stack),
    )?;
    if interrupted() {
        bail!("interrupted; removed the stack");
    }
    let report = format!("{stack}-report");
    cleanup.containers.push(report.clone());
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "--name",
        &report,
        "--network",
        &format!("{stack}_{}", crate::deploy::swarm::NETWORK),
        &plan.swarm_image(),
        "report",
        "--dns",
        &format!("tasks.{}", crate::deploy::SWARM_SERVICE),
        "--expect",
        &replicas.to_string(),
        "--wait",
        &format!("{}s", secs + 120),
    ]);
    announce(&cmd);
    let mut child = cmd.stdin(Stdio::null()).spawn().context("running docker")?;
    let status = wait_child(&mut child)?;
    drop(cleanup);
    match status {
        None => bail!("interrupted; removed the stack"),
        Some(s) if s.success() => {
            eprintln!(
                "imgbuild up: {} x{replicas} against {} on Docker Swarm passed",
                swarm.id(),
                origin.id()
            );
            Ok(())
        }
        Some(s) => bail!("the swarm replicas reported failure ({s}); the merged summary is above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_classified_in_any_order() {
        let r = Root::Embedded;
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            classify(&r, &w(&["run"])).unwrap(),
            (None, None, Some(Action::Run))
        );
        assert_eq!(
            classify(&r, &w(&["swarm", "stress", "run"])).unwrap(),
            (Some(Kind::Swarm), Some("stress".into()), Some(Action::Run))
        );
        assert_eq!(
            classify(&r, &w(&["default", "iso"])).unwrap(),
            (None, Some("default".into()), Some(Action::Iso))
        );
        assert!(classify(&r, &w(&["a", "b"])).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("20s"), Some(20));
        assert_eq!(parse_secs("2m"), Some(120));
        assert_eq!(parse_secs("15"), Some(15));
        assert_eq!(parse_secs("x"), None);
    }
}
