//! `imgbuild completions bash|zsh|fish`: a completion script with the profile names (read
//! from profiles/ at generation time) offered where a profile is expected.

use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;

use super::Ctx;
use crate::profile::{self, Kind};
use crate::root::Root;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `cmd` with profile names attached as possible values, so completion scripts
/// offer them. Parsing does not use these (unknown names get imgbuild's own message).
pub fn command_with_profiles(cmd: clap::Command, root: &Root) -> Result<clap::Command> {
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
    let cmd = cmd
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

/// `completions SHELL`: the script for `cmd` (the whole command line) on stdout.
pub fn run(ctx: &Ctx, cmd: clap::Command, shell: Shell) -> Result<()> {
    let mut cmd = command_with_profiles(cmd, &ctx.root)?;
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
