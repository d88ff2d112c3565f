//! `imgbuild profiles list|show`: every profile as a table (text, Markdown, JSON), or one
//! profile's values with its derived figures.

use std::io::Write;

use anyhow::Result;

use super::Ctx;
use crate::bytesize::human;
use crate::profile::{self, Derived, Profile, Settings};

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

/// `profiles list`.
pub fn list(ctx: &Ctx, json: bool, markdown: bool) -> Result<()> {
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

/// `profiles show`.
pub fn show(ctx: &Ctx, id: &str, json: bool) -> Result<()> {
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
                human(tmpfs_bytes)
            )?;
            writeln!(out, "  variants            {}", variants.len())?;
            let o = p.origin().expect("origin profile");
            for (v, d) in o.variants.iter().zip(&variants) {
                writeln!(out, "    {:6} {:>9}  video {}/{}/{}  audio {:>5}  {:>6} kbit/s  segment {} ({} bytes)",
                    v.name, v.resolution, v.video, v.maxrate, v.bufsize, v.audio,
                    d.bandwidth_bps / 1000, human(d.segment_bytes), d.segment_bytes)?;
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
            writeln!(out, "  memory estimate     {}", human(memory_bytes))?;
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
