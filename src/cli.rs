//! The command line: clap definitions (the contract of SPEC.md "Command-line contract") and
//! the dispatch of each command to the stage that does the work. Profiles are never named
//! here: completions get their values from profiles/ at generation time.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::profile::{self, Derived, Kind, Profile, Settings};
use crate::root::Root;
use crate::{check, error::BadInput};

#[derive(Parser, Debug)]
#[command(
    name = "imgbuild",
    version,
    about = "Reproducible layered container images and bootable ISOs from Nix closures, natively in Rust"
)]
pub struct Cli {
    /// Use profiles/, layers/ and rootfs/ from DIR instead of the copy built into imgbuild.
    #[arg(long, global = true, env = "IMGBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More log output (-v info, -vv debug); IMGBUILD_LOG sets a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List or show profiles (the single source of truth for every image).
    #[command(subcommand)]
    Profiles(ProfilesCmd),
    /// Validate every profile, layer group and payload binary; exit 0 only when all hold.
    Check(CheckArgs),
    /// Build a layered container image (docker-archive tar with OCI layout, or an OCI dir).
    Container(crate::container::ContainerArgs),
    /// Build a bootable ISO (BIOS and UEFI, CD and USB) for an origin profile.
    Iso(crate::iso::IsoArgs),
    /// A MicroVM directory (kernel, initramfs, microvm.json) for an origin profile.
    Microvm(crate::microvm::MicrovmArgs),
    /// Boot an ISO or a MicroVM in QEMU with the profile's ports forwarded to 127.0.0.1.
    Boot(crate::qemu::BootArgs),
    /// Push a container tar, OCI directory or profile's image to a registry.
    Push(crate::push::PushArgs),
    /// Print the SBOM of a container tar, OCI directory or profile's image.
    Sbom(crate::sbom_cmd::SbomArgs),
    /// Describe a container tar or ISO; --verify recomputes every digest.
    Inspect(crate::inspect::InspectArgs),
    /// Build and run: load and run a container, boot the ISO, or run origin + swarm.
    Up(crate::up::UpArgs),
    /// Write the files that run origin and swarm as replicated services on Docker Swarm or
    /// Kubernetes (plus a Prometheus config), generated from the profiles.
    Deploy(crate::deploy::DeployArgs),
    /// Print a shell completion script (profile names included).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProfilesCmd {
    /// A table of every profile.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// A Markdown table (the README's profiles table is this output).
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
    },
    /// Every value of one profile, with derived figures.
    Show {
        /// KIND/PROFILE, e.g. origin/4k-abr.
        #[arg(value_name = "KIND/PROFILE")]
        profile: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// JSON report for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What every command gets: the root tree in effect.
pub struct Ctx {
    pub root: Root,
}

pub fn run(cli: Cli) -> Result<()> {
    let root = Root::from_option(cli.root.clone()).map_err(BadInput)?;
    let ctx = Ctx { root };
    match cli.command {
        Command::Profiles(ProfilesCmd::List { json, markdown }) => {
            profiles_list(&ctx, json, markdown)
        }
        Command::Profiles(ProfilesCmd::Show { profile, json }) => {
            profiles_show(&ctx, &profile, json)
        }
        Command::Check(a) => run_check(&ctx, a.json),
        Command::Container(a) => crate::container::run(&ctx, a),
        Command::Iso(a) => crate::iso::run(&ctx, a),
        Command::Microvm(a) => crate::microvm::run(&ctx, a),
        Command::Boot(a) => crate::qemu::run(&ctx, a),
        Command::Push(a) => crate::push::run(&ctx, a),
        Command::Sbom(a) => crate::sbom_cmd::run(&ctx, a),
        Command::Inspect(a) => crate::inspect::run(&ctx, a),
        Command::Up(a) => crate::up::run(&ctx, a),
        Command::Deploy(a) => crate::deploy::run(&ctx, a),
        Command::Completions { shell } => completions(&ctx, shell),
    }
}

fn summary(p: &Profile) -> String {
    match &p.settings {
        Settings::Origin(o) => format!(
            "{}s segments, window {}, {} fps, {}",
            profile::fmt_num(o.segment_duration),
            o.list_size,
            o.fps,
            o.variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join("/")
        ),
        Settings::Swarm(s) => format!(
            "{} clients, {}/s ramp, variant {}, reconnect {}",
            s.clients,
            profile::fmt_num(s.ramp_rate),
            s.variant,
            if s.reconnect { "yes" } else { "no" }
        ),
    }
}

fn profiles_list(ctx: &Ctx, json: bool, markdown: bool) -> Result<()> {
    let all = profile::load_all(&ctx.root)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|p| {
                serde_json::json!({
                    "kind": p.kind, "name": p.name, "id": p.id(), "image": p.image_ref(),
                    "description": p.description, "file": p.file, "summary": summary(p),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else if markdown {
        writeln!(out, "| profile | image | settings | description |")?;
        writeln!(out, "|---|---|---|---|")?;
        for p in &all {
            writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                p.id(),
                p.image_ref(),
                summary(p),
                p.description
            )?;
        }
    } else {
        let rows: Vec<[String; 3]> = all
            .iter()
            .map(|p| [p.id(), p.image_ref(), summary(p)])
            .collect();
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(7);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max(5);
        writeln!(out, "{:w0$}  {:w1$}  SETTINGS", "PROFILE", "IMAGE")?;
        for r in rows {
            writeln!(out, "{:w0$}  {:w1$}  {}", r[0], r[1], r[2])?;
        }
        writeln!(out, "{} profiles", all.len())?;
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn profiles_show(ctx: &Ctx, id: &str, json: bool) -> Result<()> {
    let p = profile::load_id(&ctx.root, id)?;
    let derived = p.derived();
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "id": p.id(), "image": p.image_ref(), "file": p.file, "profile": p,
            "env": p.env().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "ports": p.ports(), "healthcheck": p.healthcheck(), "derived": derived,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "{}  ({})", p.id(), p.file)?;
    writeln!(out, "  {}", p.description)?;
    writeln!(out, "image:")?;
    writeln!(out, "  reference     {}", p.image_ref())?;
    writeln!(out, "  entrypoint    /bin/{}", p.image.binary)?;
    writeln!(
        out,
        "  user          {} ({}:{})",
        p.image.user.name, p.image.user.uid, p.image.user.gid
    )?;
    writeln!(
        out,
        "  ports         {}",
        p.ports()
            .iter()
            .map(|x| format!("{x}/tcp"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(out, "  layers        {}", p.image.layers.join(", "))?;
    let h = &p.image.healthcheck;
    writeln!(out, "  healthcheck   {} (interval {}, timeout {}, start period {}, start interval {}, retries {})",
        h.test.join(" "), h.interval, h.timeout, h.start_period, h.start_interval, h.retries)?;
    writeln!(
        out,
        "environment (profile defaults; -e or a flag at run time overrides):"
    )?;
    for (k, v) in p.env() {
        writeln!(out, "  {k}={v}")?;
    }
    writeln!(out, "derived:")?;
    match derived {
        Derived::Origin {
            gop_frames,
            window_seconds,
            segment_lifetime_seconds,
            segments_held_per_variant,
            tmpfs_bytes,
            variants,
        } => {
            writeln!(out, "  gop                 {gop_frames} frames")?;
            writeln!(
                out,
                "  window              {} s",
                profile::fmt_num(window_seconds)
            )?;
            writeln!(
                out,
                "  segment lifetime    {} s (window + delete threshold)",
                profile::fmt_num(segment_lifetime_seconds)
            )?;
            writeln!(
                out,
                "  segments held       {segments_held_per_variant} per variant"
            )?;
            writeln!(
                out,
                "  tmpfs/RAM need      {} ({tmpfs_bytes} bytes)",
                human_bytes(tmpfs_bytes)
            )?;
            writeln!(out, "  variants            {}", variants.len())?;
            let o = p.origin().expect("origin profile");
            for (v, d) in o.variants.iter().zip(&variants) {
                writeln!(out, "    {:6} {:>9}  video {}/{}/{}  audio {:>5}  {:>6} kbit/s  segment {} ({} bytes)",
                    v.name, v.resolution, v.video, v.maxrate, v.bufsize, v.audio,
                    d.bandwidth_bps / 1000, human_bytes(d.segment_bytes), d.segment_bytes)?;
            }
        }
        Derived::Swarm {
            ramp_duration_seconds,
            memory_bytes,
            file_descriptors,
            ephemeral_ports,
        } => {
            writeln!(
                out,
                "  ramp duration       {} s",
                profile::fmt_num((ramp_duration_seconds * 10.0).round() / 10.0)
            )?;
            writeln!(out, "  memory estimate     {}", human_bytes(memory_bytes))?;
            writeln!(out, "  file descriptors    {file_descriptors}")?;
            writeln!(out, "  ephemeral ports     {ephemeral_ports}")?;
        }
    }
    if let Some(iso) = &p.iso {
        writeln!(out, "iso:")?;
        writeln!(out, "  volume id     {}", p.volume_id())?;
        writeln!(
            out,
            "  network       {}",
            match &iso.network {
                profile::Network::Dhcp => "dhcp".to_string(),
                profile::Network::Static {
                    address, gateway, ..
                } => format!("static {address} gw {gateway}"),
            }
        )?;
        writeln!(out, "  memory        {}", iso.memory)?;
        if !iso.cmdline.is_empty() {
            writeln!(out, "  cmdline       {}", iso.cmdline)?;
        }
    }
    Ok(())
}

fn run_check(ctx: &Ctx, json: bool) -> Result<()> {
    let report = check::run(&ctx.root, true);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            eprintln!("{f}");
        }
        eprintln!(
            "check: {} profiles, {} layer groups, {} problem(s)",
            report.profiles,
            report.layer_groups,
            report.findings.len()
        );
    }
    if report.findings.is_empty() {
        Ok(())
    } else {
        Err(BadInput(format!("check found {} problem(s)", report.findings.len())).into())
    }
}

/// The clap command with profile names attached as possible values, so completion scripts
/// offer them. Parsing does not use these (unknown names get imgbuild's own message).
pub fn command_with_profiles(root: &Root) -> Result<clap::Command> {
    let ids = profile::all_ids(root)?;
    let mut names: Vec<String> = Vec::new();
    for k in Kind::ALL {
        names.extend(profile::profile_names(root, k)?);
    }
    names.sort();
    names.dedup();
    let ids_pv = clap::builder::PossibleValuesParser::new(ids.clone());
    let names_pv = clap::builder::PossibleValuesParser::new(names);
    let kinds_pv = clap::builder::PossibleValuesParser::new(Kind::ALL.map(|k| k.as_str()));
    let origin_ids: Vec<String> = ids
        .iter()
        .filter(|i| i.starts_with("origin/"))
        .cloned()
        .collect();
    let origin_pv = clap::builder::PossibleValuesParser::new(origin_ids);
    let cmd = Cli::command()
        .mut_subcommand("profiles", |s| {
            s.mut_subcommand("show", |s| {
                s.mut_arg("profile", |a| a.value_parser(ids_pv.clone()))
            })
        })
        .mut_subcommand("container", |s| {
            s.mut_arg("profile", |a| a.value_parser(ids_pv.clone()))
        })
        .mut_subcommand("iso", |s| {
            s.mut_arg("profile", |a| a.value_parser(origin_pv))
        })
        .mut_subcommand("up", |s| {
            s.mut_arg("kind", |a| a.value_parser(kinds_pv))
                .mut_arg("profile", |a| a.value_parser(names_pv))
        });
    Ok(cmd)
}

fn completions(ctx: &Ctx, shell: Shell) -> Result<()> {
    let mut cmd = command_with_profiles(&ctx.root)?;
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "imgbuild", &mut buf);
    if matches!(shell, clap_complete::Shell::Fish) {
        fish_positionals(&cmd, &mut buf);
    }
    std::io::stdout()
        .write_all(&buf)
        .context("writing the completion script")?;
    Ok(())
}

/// clap_complete's fish script completes option values but not positional ones; add a
/// line per positional argument with possible values (profile names, kinds), generically
/// from the command definition.
fn fish_positionals(cmd: &clap::Command, buf: &mut Vec<u8>) {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, buf: &mut Vec<u8>) {
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            let positionals: Vec<_> = sub.get_positionals().collect();
            for (i, arg) in positionals.iter().enumerate() {
                let values: Vec<String> = arg
                    .get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string())
                    .collect();
                if values.is_empty() {
                    continue;
                }
                // The subcommand chain, and this positional's position (count the words
                // after the last subcommand, options excluded).
                let mut cond = format!("__fish_imgbuild_using_subcommand {}", path[0]);
                for p in &path[1..] {
                    cond.push_str(&format!("; and __fish_seen_subcommand_from {p}"));
                }
                cond.push_str(&format!(
                    "; and test (count (string match -v -- '-*' (commandline -opc))) -eq {}",
                    path.len() + 1 + i
                ));
                let _ = writeln!(
                    buf,
                    "complete -c imgbuild -n \"{cond}\" -f -a \"{}\"",
                    values.join(" ")
                );
            }
            walk(sub, path, buf);
            path.pop();
        }
    }
    walk(cmd, &mut Vec::new(), buf);
}
