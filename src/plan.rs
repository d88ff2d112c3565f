//! The Plan: the image `Tree` partitioned into ordered layers. Base (rootfs skeleton and
//! system files) first, then the Nix closure split by a layering algorithm, then each payload
//! binary in its own layer, then the small configuration layer last — so a rebuild that
//! changes one binary or one setting rewrites one layer and the rest come from the cache.
//!
//! Closure layering (`--layering`):
//! - `auto` (default): size-aware. The largest store paths become layer heads; each head's
//!   layer holds the head and every path only it uses (reachable from it without passing
//!   through another head); paths used by several heads are grouped by the set of heads that
//!   use them (one layer per set); paths no head uses form one last layer. The number of heads
//!   is the largest that keeps the closure within its layer budget.
//! - `popularity`: the nixpkgs "popularity contest": paths ranked by how many paths of the
//!   closure depend on them (transitively); the top ones get a layer each, the rest share one.
//! - `per-path`: every store path its own layer while the budget lasts; the smallest paths
//!   share the last one.
//!
//! Every tie is broken by name, so the same inputs always give the same plan. Each layer
//! also carries the parent directories of its entries (with their Tree metadata) so it
//! unpacks alone with the right modes.

use std::collections::{BTreeMap, BTreeSet};

use crate::tree::{Entry, Group, Tree};

/// Overlay allows 127 lower directories; images above that build but do not run.
pub const HARD_MAX_LAYERS: usize = 127;
pub const DEFAULT_MAX_LAYERS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--max-layers {0}: the limit is {HARD_MAX_LAYERS} (overlayfs stacks at most 127 layers; images above that do not run)")]
    TooManyLayers(usize),
    #[error("--max-layers {max}: this image needs at least {need} layers (base, {payloads} payload binar{ies}, config{sbom}{closure})", ies = if *payloads == 1 { "y" } else { "ies" }, sbom = if *sbom { ", SBOM" } else { "" }, closure = if *closure { ", one for the closure" } else { "" })]
    TooFewLayers {
        max: usize,
        need: usize,
        payloads: usize,
        sbom: bool,
        closure: bool,
    },
}

/// Every PlanError is the user's input (exit 2).
impl crate::error::Classify for PlanError {
    fn exit_class(&self) -> crate::error::ExitClass {
        crate::error::ExitClass::BadInput
    }
}

/// How the closure is split into layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layering {
    #[default]
    Auto,
    Popularity,
    PerPath,
}

#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub max_layers: usize,
    pub layering: Layering,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_layers: DEFAULT_MAX_LAYERS,
            layering: Layering::Auto,
        }
    }
}

/// One store path of the closure as the planner sees it: its base name (`<hash>-<name>`),
/// its size in the image and the base names it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreNode {
    pub name: String,
    pub size: u64,
    pub references: Vec<String>,
}

/// One layer: a description, the Tree groups it holds, and the image paths it writes
/// (byte-sorted, parents first, parent directories included). The paths are kept as runs of
/// the Tree's own order, not one by one: a store path's entries are consecutive in the
/// Tree, so a big closure's ~44k paths are a few hundred runs. A Plan is of the Tree it was
/// made from, unchanged since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub groups: Vec<Group>,
    /// Byte-sorted and disjoint.
    runs: Vec<Run>,
    /// Bytes of file content in this layer.
    pub size: u64,
}

/// `len` consecutive Tree paths from `first`; with `len` 0, the one path `first`, which the
/// Tree lacks (a parent directory removed from it: the writers refuse it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    first: Box<[u8]>,
    len: u32,
}

impl Layer {
    /// A layer of exactly `paths` of `tree` (in any order), as the planner would hold them:
    /// for tests and callers that pick paths themselves.
    pub fn with_paths<P: AsRef<[u8]>>(
        name: String,
        groups: Vec<Group>,
        tree: &Tree,
        paths: impl IntoIterator<Item = P>,
        size: u64,
    ) -> Layer {
        let mut runs: Vec<Run> = paths
            .into_iter()
            .map(|p| Run {
                first: p.as_ref().into(),
                len: u32::from(tree.get(p.as_ref()).is_some()),
            })
            .collect();
        runs.sort_unstable_by(|a, b| a.first.cmp(&b.first));
        runs.dedup();
        Layer {
            name,
            groups,
            runs,
            size,
        }
    }

    /// The layer's paths in byte order with their Tree entries (`None`: not in the Tree).
    pub fn entries<'a>(
        &'a self,
        tree: &'a Tree,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a Entry>)> + 'a {
        self.runs.iter().flat_map(move |r| {
            let missing = (r.len == 0).then_some((&r.first[..], None));
            let there = tree
                .range_from(&r.first)
                .take(r.len as usize)
                .map(|(p, e)| (p, Some(e)));
            missing.into_iter().chain(there)
        })
    }

    /// The layer's paths in byte order.
    pub fn paths<'a>(&'a self, tree: &'a Tree) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries(tree).map(|(p, _)| p)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub layers: Vec<Layer>,
}

/// Partitions `tree` into layers. `closure` gives the reference graph of the store paths in
/// the tree (paths in the tree but missing from it are taken as referencing nothing).
pub fn plan(tree: &Tree, closure: &[StoreNode], opts: &PlanOptions) -> Result<Plan, PlanError> {
    if opts.max_layers > HARD_MAX_LAYERS {
        return Err(PlanError::TooManyLayers(opts.max_layers));
    }
    // The tree's entries as runs of one group: (first path, how many).
    let mut by_group: BTreeMap<&Group, Vec<(&[u8], u32)>> = BTreeMap::new();
    let mut run: Option<(&Group, &[u8], u32)> = None;
    for (p, e) in tree.iter() {
        match &mut run {
            Some((g, _, n)) if *g == &e.group => *n += 1,
            _ => {
                if let Some((g, first, n)) = run.replace((&e.group, p, 1)) {
                    by_group.entry(g).or_default().push((first, n));
                }
            }
        }
    }
    if let Some((g, first, n)) = run {
        by_group.entry(g).or_default().push((first, n));
    }
    let mut store_sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut payloads: Vec<String> = Vec::new();
    for g in by_group.keys() {
        match g {
            Group::StorePath(s) => {
                store_sizes.insert(s.to_string(), 0);
            }
            Group::Payload(s) => payloads.push(s.to_string()),
            _ => {}
        }
    }
    for (_, e) in tree.iter() {
        if let Group::StorePath(s) = &e.group {
            *store_sizes.get_mut(&s[..]).expect("collected above") += e.size();
        }
    }
    let has_base = by_group.contains_key(&Group::Base);
    let has_config = by_group.contains_key(&Group::Config);
    let has_sbom = by_group.contains_key(&Group::Sbom);
    let fixed = has_base as usize + payloads.len() + has_config as usize + has_sbom as usize;
    let has_closure = !store_sizes.is_empty();
    let need = fixed + has_closure as usize;
    if opts.max_layers < need.max(1) {
        return Err(PlanError::TooFewLayers {
            max: opts.max_layers,
            need,
            payloads: payloads.len(),
            sbom: has_sbom,
            closure: has_closure,
        });
    }

    // The graph over the store paths present in the tree.
    let names: Vec<String> = store_sizes.keys().cloned().collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut refs: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for node in closure {
        if let Some(&i) = index.get(node.name.as_str()) {
            let mut r: Vec<usize> = node
                .references
                .iter()
                .filter_map(|x| index.get(x.as_str()).copied())
                .filter(|&j| j != i)
                .collect();
            r.sort_unstable();
            r.dedup();
            refs[i] = r;
        }
    }
    let sizes: Vec<u64> = names.iter().map(|n| store_sizes[n]).collect();
    let graph = Graph {
        names: &names,
        sizes: &sizes,
        refs: &refs,
    };
    let budget = opts.max_layers - fixed;
    let closure_sets: Vec<Vec<usize>> = if names.is_empty() {
        Vec::new()
    } else {
        match opts.layering {
            Layering::Auto => graph.auto(budget),
            Layering::Popularity => graph.popularity(budget),
            Layering::PerPath => graph.per_path(budget),
        }
    };

    // Assemble the ordered groups of every layer.
    let mut layer_groups: Vec<(String, Vec<Group>)> = Vec::new();
    if has_base {
        layer_groups.push(("base".into(), vec![Group::Base]));
    }
    for set in &closure_sets {
        let mut groups: Vec<Group> = set
            .iter()
            .map(|&i| Group::StorePath(names[i].as_str().into()))
            .collect();
        groups.sort();
        let first = short_name(&names[set[0]]);
        let name = if set.len() == 1 {
            format!("store {first}")
        } else {
            format!("store {first} + {} more", set.len() - 1)
        };
        layer_groups.push((name, groups));
    }
    for p in &payloads {
        layer_groups.push((
            format!("payload {p}"),
            vec![Group::Payload(p.as_str().into())],
        ));
    }
    if has_config {
        layer_groups.push(("config".into(), vec![Group::Config]));
    }
    if has_sbom {
        layer_groups.push(("sbom".into(), vec![Group::Sbom]));
    }

    let layers = layer_groups
        .into_iter()
        .map(|(name, groups)| {
            let mut runs: Vec<(&[u8], u32)> = groups
                .iter()
                .flat_map(|g| by_group.get(g).into_iter().flatten().copied())
                .collect();
            runs.sort_unstable();
            // Hashed: a group's name compares as text, its hash is a number.
            let members: std::collections::HashSet<&Group> = groups.iter().collect();
            // Parent directories, so the layer unpacks alone with the right modes: those of
            // other groups (or, a directory removed, of none), once each.
            let mut parents: BTreeSet<&[u8]> = BTreeSet::new();
            let mut size = 0;
            for &(first, n) in &runs {
                for (p, e) in tree.range_from(first).take(n as usize) {
                    size += e.size();
                    let mut q = p;
                    while let Some(i) = q.iter().rposition(|&b| b == b'/') {
                        q = &q[..i];
                        if parents.contains(q) {
                            break;
                        }
                        // A member did its own parents (a tree path from `first` to here is
                        // one of this run).
                        match tree.get(q) {
                            Some(e) if q >= first || members.contains(&e.group) => break,
                            _ => parents.insert(q),
                        };
                    }
                }
            }
            let mut all: Vec<Run> = runs
                .into_iter()
                .map(|(first, len)| Run {
                    first: first.into(),
                    len,
                })
                .chain(parents.into_iter().map(|q| Run {
                    first: q.into(),
                    len: u32::from(tree.get(q).is_some()),
                }))
                .collect();
            all.sort_unstable_by(|a, b| a.first.cmp(&b.first));
            split_at_missing(tree, &mut all);
            Layer {
                name,
                groups,
                runs: all,
                size,
            }
        })
        .collect();
    Ok(Plan { layers })
}

/// A path the tree lacks (`len` 0) sorts inside the run before it when that run holds its
/// children (a directory removed from the tree, its entries kept): that run is cut there, so
/// the layer's paths stay in byte order.
fn split_at_missing(tree: &Tree, runs: &mut Vec<Run>) {
    let mut i = 1;
    while i < runs.len() {
        if runs[i].len == 0 && runs[i - 1].len > 0 {
            let (prev, missing) = (&runs[i - 1], &runs[i].first);
            let before = tree
                .range_from(&prev.first)
                .take(prev.len as usize)
                .take_while(|(p, _)| *p < &missing[..])
                .count() as u32;
            if before < prev.len {
                let rest = tree
                    .range_from(&prev.first)
                    .nth(before as usize)
                    .map(|(p, _)| Box::from(p))
                    .expect("inside the run");
                let len = prev.len - before;
                runs[i - 1].len = before;
                runs.insert(i + 1, Run { first: rest, len });
                if before == 0 {
                    // Cannot happen (the run's first path sorts before the missing one), but
                    // an empty run must not pass for a missing path.
                    runs.remove(i - 1);
                    continue;
                }
            }
        }
        i += 1;
    }
}

/// `<hash>-glibc-2.39` → `glibc-2.39`.
pub fn short_name(base: &str) -> &str {
    match base.split_once('-') {
        Some((h, rest)) if h.len() == 32 => rest,
        _ => base,
    }
}

struct Graph<'a> {
    names: &'a [String],
    sizes: &'a [u64],
    refs: &'a [Vec<usize>],
}

impl Graph<'_> {
    fn n(&self) -> usize {
        self.names.len()
    }

    /// Indices by size (largest first), ties by name.
    fn by_size(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.n()).collect();
        v.sort_by(|&a, &b| {
            self.sizes[b]
                .cmp(&self.sizes[a])
                .then_with(|| self.names[a].cmp(&self.names[b]))
        });
        v
    }

    fn auto(&self, budget: usize) -> Vec<Vec<usize>> {
        let n = self.n();
        let order = self.by_size();
        let mut k = budget.min(n).min(HARD_MAX_LAYERS);
        loop {
            let heads = &order[..k];
            let mut head_of = vec![usize::MAX; n];
            for (hi, &h) in heads.iter().enumerate() {
                head_of[h] = hi;
            }
            // Which heads use each path (reaching it without passing through another head).
            let mut users = vec![0u128; n];
            for (hi, &h) in heads.iter().enumerate() {
                let bit = 1u128 << hi;
                let mut stack = vec![h];
                users[h] |= bit;
                while let Some(x) = stack.pop() {
                    for &y in &self.refs[x] {
                        if head_of[y] != usize::MAX || users[y] & bit != 0 {
                            continue;
                        }
                        users[y] |= bit;
                        stack.push(y);
                    }
                }
            }
            // Head layers: the head and what only it uses.
            let mut own: Vec<Vec<usize>> = heads.iter().map(|&h| vec![h]).collect();
            let mut shared: BTreeMap<u128, Vec<usize>> = BTreeMap::new();
            for x in 0..n {
                if head_of[x] != usize::MAX {
                    continue;
                }
                let u = users[x];
                if u.count_ones() == 1 {
                    own[u.trailing_zeros() as usize].push(x);
                } else {
                    shared.entry(u).or_default().push(x);
                }
            }
            let total = k + shared.len();
            if total <= budget || k == 0 {
                // Most shared first (they change least), then the heads by size, then the
                // paths no head uses.
                let mut shared: Vec<(u128, Vec<usize>)> = shared.into_iter().collect();
                for (_, v) in shared.iter_mut() {
                    v.sort_by(|&a, &b| self.names[a].cmp(&self.names[b]));
                }
                shared.sort_by(|(a, va), (b, vb)| {
                    (b.count_ones(), a == &0)
                        .cmp(&(a.count_ones(), b == &0))
                        .then_with(|| self.names[va[0]].cmp(&self.names[vb[0]]))
                });
                let (rest, shared): (Vec<_>, Vec<_>) =
                    shared.into_iter().partition(|(u, _)| *u == 0);
                let mut out: Vec<Vec<usize>> = shared.into_iter().map(|(_, v)| v).collect();
                for mut v in own {
                    let head = v[0];
                    v[1..].sort_by(|&a, &b| self.names[a].cmp(&self.names[b]));
                    debug_assert_eq!(v[0], head);
                    out.push(v);
                }
                out.extend(rest.into_iter().map(|(_, v)| v));
                return out;
            }
            k = k.saturating_sub((total - budget).max(1));
        }
    }

    fn popularity(&self, budget: usize) -> Vec<Vec<usize>> {
        let n = self.n();
        // Popularity: how many paths reach this one (itself included).
        let mut pop = vec![0usize; n];
        for s in 0..n {
            let mut seen = vec![false; n];
            let mut stack = vec![s];
            seen[s] = true;
            while let Some(x) = stack.pop() {
                pop[x] += 1;
                for &y in &self.refs[x] {
                    if !seen[y] {
                        seen[y] = true;
                        stack.push(y);
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            pop[b]
                .cmp(&pop[a])
                .then_with(|| self.sizes[b].cmp(&self.sizes[a]))
                .then_with(|| self.names[a].cmp(&self.names[b]))
        });
        split_top(order, budget, self.names)
    }

    fn per_path(&self, budget: usize) -> Vec<Vec<usize>> {
        let order = self.by_size();
        let mut sets = split_top(order, budget, self.names);
        // Own layers in name order, the shared rest last.
        let rest = if sets.last().is_some_and(|s| s.len() > 1) {
            sets.pop()
        } else {
            None
        };
        sets.sort_by(|a, b| self.names[a[0]].cmp(&self.names[b[0]]));
        sets.extend(rest);
        sets
    }
}

/// The first `budget - 1` of `order` alone, the rest together (or all alone if they fit).
fn split_top(order: Vec<usize>, budget: usize, names: &[String]) -> Vec<Vec<usize>> {
    if order.len() <= budget {
        return order.into_iter().map(|i| vec![i]).collect();
    }
    let alone = budget.saturating_sub(1);
    let mut out: Vec<Vec<usize>> = order[..alone].iter().map(|&i| vec![i]).collect();
    let mut rest = order[alone..].to_vec();
    rest.sort_by(|&a, &b| names[a].cmp(&names[b]));
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, Entry};

    const H: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    fn name(n: &str) -> String {
        format!("{H}-{n}")
    }

    /// A tree with base, a closure of `(name, size, refs)`, one payload and a config.
    fn fixture(paths: &[(&str, u64, &[&str])]) -> (Tree, Vec<StoreNode>) {
        let mut t = Tree::new();
        t.insert(
            "etc/passwd",
            Entry::file(Content::bytes(b"x".to_vec()), 0o644, Group::Base),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for (n, size, refs) in paths {
            let base = name(n);
            t.insert(
                format!("nix/store/{base}/data"),
                Entry::file(
                    Content::bytes(vec![0u8; *size as usize]),
                    0o444,
                    Group::StorePath(base.as_str().into()),
                ),
            )
            .unwrap();
            nodes.push(StoreNode {
                name: base,
                size: *size,
                references: refs.iter().map(|r| name(r)).collect(),
            });
        }
        t.insert(
            "bin/hls-origin",
            Entry::file(
                Content::bytes(b"elf".to_vec()),
                0o755,
                Group::Payload("hls-origin".into()),
            ),
        )
        .unwrap();
        t.insert(
            "etc/imgbuild/profile.json",
            Entry::file(Content::bytes(b"{}".to_vec()), 0o644, Group::Config),
        )
        .unwrap();
        (t, nodes)
    }

    fn names_of(p: &Plan) -> Vec<String> {
        p.layers.iter().map(|l| l.name.clone()).collect()
    }

    fn opts(max: usize, layering: Layering) -> PlanOptions {
        PlanOptions {
            max_layers: max,
            layering,
        }
    }

    // app → {big-lib, glibc}; tool → {glibc, small}; big-lib → glibc.
    const CLOSURE: &[(&str, u64, &[&str])] = &[
        ("app", 100, &["big-lib", "glibc", "app"]),
        ("big-lib", 5000, &["glibc"]),
        ("glibc", 3000, &[]),
        ("tool", 50, &["glibc", "small"]),
        ("small", 10, &[]),
        ("app-data", 20, &[]),
    ];

    #[test]
    fn base_first_payload_then_config_last() {
        let (t, n) = fixture(CLOSURE);
        let p = plan(&t, &n, &PlanOptions::default()).unwrap();
        let names = names_of(&p);
        assert_eq!(names.first().unwrap(), "base");
        assert_eq!(names[names.len() - 2], "payload hls-origin");
        assert_eq!(names.last().unwrap(), "config");
        // Every tree entry is in exactly one layer as its own group.
        for (path, e) in t.iter() {
            let owners = p
                .layers
                .iter()
                .filter(|l| l.groups.contains(&e.group) && l.paths(&t).any(|x| x == path))
                .count();
            assert_eq!(owners, 1, "{}", crate::tree::display_path(path));
        }
        // Parents are carried along.
        let cfg = p.layers.last().unwrap();
        assert_eq!(
            cfg.paths(&t).collect::<Vec<_>>(),
            [&b"etc"[..], b"etc/imgbuild", b"etc/imgbuild/profile.json"]
        );
    }

    #[test]
    fn auto_gives_large_paths_their_own_layer_and_groups_shared_ones() {
        let (t, n) = fixture(CLOSURE);
        // Budget for the closure: 7 - 3 = 4 layers.
        let p = plan(&t, &n, &opts(7, Layering::Auto)).unwrap();
        let closure: Vec<&Layer> = p
            .layers
            .iter()
            .filter(|l| l.name.starts_with("store"))
            .collect();
        assert!(closure.len() <= 4, "{:?}", names_of(&p));
        // The largest path is a head with its own layer.
        assert!(closure
            .iter()
            .any(|l| l.groups == vec![Group::StorePath(name("big-lib").into())]));
        // All six paths are placed.
        let placed: usize = closure.iter().map(|l| l.groups.len()).sum();
        assert_eq!(placed, 6);
    }

    #[test]
    fn auto_with_room_puts_what_only_a_head_uses_in_its_layer() {
        let (t, n) = fixture(&[
            ("big", 1000, &["only-big", "shared", "shared2"]),
            ("other", 900, &["shared", "shared2"]),
            ("only-big", 1, &[]),
            ("shared", 2, &[]),
            ("shared2", 3, &[]),
        ]);
        // Closure budget 3: three heads would leave `shared` a fourth layer, so two heads
        // (big, other) plus the layer of what both use.
        let p = plan(&t, &n, &opts(6, Layering::Auto)).unwrap();
        let groups: Vec<Vec<Group>> = p
            .layers
            .iter()
            .filter(|l| l.name.starts_with("store"))
            .map(|l| l.groups.clone())
            .collect();
        let sp = |x: &str| Group::StorePath(name(x).into());
        assert_eq!(
            groups,
            vec![
                vec![sp("shared"), sp("shared2")],
                vec![sp("big"), sp("only-big")],
                vec![sp("other")]
            ]
        );
    }

    #[test]
    fn the_budget_is_never_exceeded_and_plans_are_deterministic() {
        let mut paths: Vec<(String, u64, Vec<String>)> = Vec::new();
        for i in 0..300u64 {
            let refs = (0..3)
                .map(|k| format!("p{}", (i * 7 + k * 13 + 1) % 300))
                .collect();
            paths.push((format!("p{i}"), (i * 7919) % 1000 + 1, refs));
        }
        let refs: Vec<Vec<&str>> = paths
            .iter()
            .map(|p| p.2.iter().map(String::as_str).collect())
            .collect();
        let spec: Vec<(&str, u64, &[&str])> = paths
            .iter()
            .zip(&refs)
            .map(|(p, r)| (p.0.as_str(), p.1, r.as_slice()))
            .collect();
        let (t, n) = fixture(&spec);
        for layering in [Layering::Auto, Layering::Popularity, Layering::PerPath] {
            for max in [4, 10, 100, 127] {
                let a = plan(&t, &n, &opts(max, layering)).unwrap();
                assert!(
                    a.layers.len() <= max,
                    "{layering:?} {max}: {}",
                    a.layers.len()
                );
                let placed: usize = a
                    .layers
                    .iter()
                    .filter(|l| l.name.starts_with("store"))
                    .map(|l| l.groups.len())
                    .sum();
                assert_eq!(placed, 300);
                let mut rev = n.clone();
                rev.reverse();
                assert_eq!(a, plan(&t, &rev, &opts(max, layering)).unwrap());
            }
        }
    }

    #[test]
    fn popularity_puts_the_most_depended_on_path_first() {
        let (t, n) = fixture(CLOSURE);
        let p = plan(&t, &n, &opts(6, Layering::Popularity)).unwrap();
        assert_eq!(
            p.layers[1].groups,
            vec![Group::StorePath(name("glibc").into())]
        );
        assert_eq!(p.layers.len(), 6);
    }

    #[test]
    fn per_path_gives_each_path_a_layer_when_they_fit() {
        let (t, n) = fixture(CLOSURE);
        let p = plan(&t, &n, &opts(100, Layering::PerPath)).unwrap();
        assert_eq!(p.layers.len(), 3 + 6);
    }

    #[test]
    fn layer_limits_are_checked() {
        let (t, n) = fixture(CLOSURE);
        assert!(matches!(
            plan(&t, &n, &opts(128, Layering::Auto)),
            Err(PlanError::TooManyLayers(128))
        ));
        assert!(matches!(
            plan(&t, &n, &opts(3, Layering::Auto)),
            Err(PlanError::TooFewLayers { need: 4, .. })
        ));
        assert_eq!(
            plan(&t, &n, &opts(4, Layering::Auto)).unwrap().layers.len(),
            4
        );
    }
}
