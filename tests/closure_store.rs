//! The Nix closure as a user hands it to imgbuild: every input form Nix writes loads to the
//! same closure, the store becomes image entries byte-exact (names, modes, hard links,
//! symlinks), and a binary that could not start in the image is refused with the missing
//! piece named.
//!
//! Synthetic stores in temp dirs (`--store-root`) run in the quick tier; tests on real Nix
//! closures from `fixtures/make-closures` are `#[ignore = "full: needs nix"]`.

use imgbuild::{closure, elf, tree};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use closure::{check_executables, load, Closure, ClosureError};

/// The closure's graph (paths, sizes, references) without the NAR hashes, which only some
/// input forms carry, each in its own notation (SRI, hex or nix-base32).
fn graph_of(c: &Closure) -> Closure {
    let mut g = c.clone();
    for p in &mut g.paths {
        p.nar_hash = None;
    }
    g
}

/// Where two closures both give a path's NAR hash, it is the same hash.
fn hashes_agree(a: &Closure, b: &Closure) {
    for (x, y) in a.paths.iter().zip(&b.paths) {
        if let (Some(hx), Some(hy)) = (&x.nar_hash, &y.nar_hash) {
            assert_eq!(
                imgbuild::sbom::nar_hash_hex(hx),
                imgbuild::sbom::nar_hash_hex(hy),
                "{}: {hx} vs {hy}",
                x.path.display()
            );
        }
    }
}
use tree::{Content, Entry, Group, Kind, Tree};

// ---------------------------------------------------------------------------------------
// A synthetic store under a temp dir.

const HASH_A: &str = "0kwfpbiwpkrc415hz2ykpagpzw5pk1mr";
const HASH_B: &str = "6w1z088wcnwgiw7qnlrf5v4rnngspq7c";
const HASH_C: &str = "07v862jyjr4jfbiyxhkzm276y8p0dyv5";
const HASH_D: &str = "lffa14dadmwaw51849ix2y8b1xa7li9s";

struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("nix/store")).unwrap();
        Store { dir }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    /// Host path of `/nix/store/<base>/<rel>`.
    fn host(&self, base: &str, rel: &str) -> PathBuf {
        let p = self.root().join("nix/store").join(base);
        if rel.is_empty() {
            p
        } else {
            p.join(rel)
        }
    }
    fn file(&self, base: &str, rel: &str, data: &[u8], mode: u32) {
        let p = self.host(base, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fn link(&self, base: &str, rel: &str, target: &str) {
        let p = self.host(base, rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }
    fn write_input(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

fn sp(base: &str) -> String {
    format!("/nix/store/{base}")
}

/// a (a shell-ish program referencing b and itself), b (library referencing c), c (data),
/// d (a symlink to a). References: a → a b, b → c, c → none, d → a.
fn three_path_store() -> (Store, [String; 4]) {
    let s = Store::new();
    let a = format!("{HASH_A}-app");
    let b = format!("{HASH_B}-lib");
    let c = format!("{HASH_C}-data");
    let d = format!("{HASH_D}-top");
    s.file(
        &a,
        "bin/app",
        format!("#!{}/bin/sh\nexec {}/lib/x\n", sp(&a), sp(&b)).as_bytes(),
        0o555,
    );
    s.file(&b, "lib/libx.so", b"\0\0binary\0", 0o444);
    s.link(&b, "share/data", &format!("{}/table", sp(&c))); // reference only via a symlink
    s.file(&c, "table", b"1 2 3\n", 0o444);
    s.link(&d, "", &sp(&a));
    (s, [a, b, c, d])
}

fn refs(c: &Closure) -> BTreeMap<String, Vec<String>> {
    c.paths
        .iter()
        .map(|p| {
            (
                p.path.display().to_string(),
                p.references
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Loading

#[test]
fn every_input_form_loads_to_the_same_closure() {
    let (s, [a, b, c, d]) = three_path_store();
    let (a, b, c, d) = (sp(&a), sp(&b), sp(&c), sp(&d));
    let list = s.write_input("list", &format!("{d}\n{c}\n{b}\n{a}\n"));
    let scanned = load(&[list], Some(s.root())).unwrap();
    let expect: BTreeMap<String, Vec<String>> = [
        (a.clone(), vec![a.clone(), b.clone()]),
        (b.clone(), vec![c.clone()]),
        (c.clone(), vec![]),
        (d.clone(), vec![a.clone()]),
    ]
    .into_iter()
    .map(|(k, mut v)| {
        v.sort();
        (k, v)
    })
    .collect();
    // Sorted by path, references sorted, sizes known.
    assert_eq!(refs(&scanned), expect);
    let sizes: BTreeMap<String, u64> = scanned
        .paths
        .iter()
        .map(|p| (p.path.display().to_string(), p.nar_size.unwrap()))
        .collect();

    let size = |p: &str| sizes[p];
    let array = format!(
        r#"[{{"path":"{a}","narHash":"sha256-x","narSize":{},"references":["{a}","{b}"],"deriver":null,"registrationTime":1}},
            {{"path":"{b}","narSize":{},"references":["{c}"]}},
            {{"path":"{c}","narSize":{},"references":[]}},
            {{"path":"{d}","narSize":{},"references":["{a}"]}}]"#,
        size(&a),
        size(&b),
        size(&c),
        size(&d)
    );
    let object = format!(
        r#"{{"{a}":{{"narSize":{},"references":["{a}","{b}"]}},"{b}":{{"narSize":{},"references":["{c}"]}},
            "{c}":{{"narSize":{},"references":[]}},"{d}":{{"narSize":{},"references":["{a}"]}}}}"#,
        size(&a),
        size(&b),
        size(&c),
        size(&d)
    );
    let h = "a".repeat(64);
    let registration = format!(
        "{c}\n{h}\n{}\n\n0\n{b}\n{h}\n{}\n/nix/store/{HASH_A}-lib.drv\n1\n{c}\n\
         {a}\n{h}\n{}\n\n2\n{a}\n{b}\n{d}\n{h}\n{}\n\n1\n{a}\n",
        size(&c),
        size(&b),
        size(&a),
        size(&d)
    );
    let graph = format!("{d}\n\n1\n{a}\n{a}\n\n2\n{b}\n{a}\n{b}\n\n1\n{c}\n{c}\n\n0\n");
    let info = s.root().join("closure-info");
    fs::create_dir(&info).unwrap();
    fs::write(info.join("registration"), &registration).unwrap();
    fs::write(info.join("store-paths"), format!("{a}\n{b}\n{c}\n{d}\n")).unwrap();

    let inputs = [
        s.write_input("path-info.json", &array),
        s.write_input("path-info-object.json", &object),
        info,
        s.write_input("graph", &graph),
    ];
    for input in &inputs {
        let got = load(std::slice::from_ref(input), Some(s.root()))
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        assert_eq!(graph_of(&got), graph_of(&scanned), "{}", input.display());
    }
    // Several inputs merge.
    let merged = load(&inputs, Some(s.root())).unwrap();
    assert_eq!(graph_of(&merged), graph_of(&scanned));
    assert_eq!(merged.size(), sizes.values().sum::<u64>());
}

#[test]
fn a_reference_outside_the_closure_is_an_error_naming_it() {
    let (s, [a, b, ..]) = three_path_store();
    let (a, b) = (sp(&a), sp(&b));
    let missing = format!("/nix/store/{HASH_C}-data");
    let input = s.write_input(
        "in.json",
        &format!(
            r#"[{{"path":"{a}","narSize":1,"references":["{b}"]}},{{"path":"{b}","narSize":1,"references":["{missing}"]}}]"#
        ),
    );
    let e = load(&[input], Some(s.root())).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClosureError::MissingReference { .. }), "{msg}");
    assert!(
        msg.contains(&missing) && msg.contains(&b) && msg.contains("in.json"),
        "{msg}"
    );
}

#[test]
fn scanning_finds_references_only_to_listed_paths() {
    let (s, [a, b, c, _]) = three_path_store();
    // Without c in the list, b's reference to c is not one (only listed paths count).
    let list = s.write_input("list", &format!("{}\n{}\n", sp(&a), sp(&b)));
    let got = load(&[list], Some(s.root())).unwrap();
    assert_eq!(
        refs(&got),
        [(sp(&a), vec![sp(&a), sp(&b)]), (sp(&b), vec![]),]
            .into_iter()
            .collect()
    );
    // A hash in a file name counts too (Nix scans the NAR, names included).
    s.file(&c, &format!("see-{HASH_B}"), b"", 0o444);
    let list = s.write_input("list2", &format!("{}\n{}\n", sp(&b), sp(&c)));
    let got = load(&[list], Some(s.root())).unwrap();
    assert_eq!(got.paths[0].references, vec![PathBuf::from(sp(&b))]); // c (07v…) sorts first
}

#[test]
fn malformed_inputs_fail_with_one_line_naming_the_file() {
    let s = Store::new();
    let cases = [
        (
            "truncated.json",
            format!("[{{\"path\":\"/nix/store/{HASH_A}-x\",\"narS"),
        ),
        ("garbage.json", "{not json".to_string()),
        (
            "short-graph",
            format!("/nix/store/{HASH_A}-x\n\n3\n/nix/store/{HASH_A}-x\n"),
        ),
        ("list", "/nix/store/not-a-store-path\n".to_string()),
        ("empty", String::new()),
    ];
    for (name, text) in cases {
        let input = s.write_input(name, &text);
        let msg = load(&[input], Some(s.root())).unwrap_err().to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        assert!(!msg.contains('\n'), "{name}: not one line: {msg}");
    }
    let msg = load(&[s.root().join("nope")], None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn a_missing_store_path_is_a_clear_error() {
    let s = Store::new();
    let p = format!("/nix/store/{HASH_A}-gone");
    // Sizes must come from the store for a plain list: the load says which path is missing.
    let list = s.write_input("list", &format!("{p}\n"));
    let msg = load(&[list], Some(s.root())).unwrap_err().to_string();
    assert!(msg.contains(&p) && msg.contains("--store-root"), "{msg}");
    // With sizes in the input, packaging says it.
    let json = s.write_input(
        "in.json",
        &format!(r#"[{{"path":"{p}","narSize":1,"references":[]}}]"#),
    );
    let c = load(&[json], Some(s.root())).unwrap();
    let e = c
        .add_to_tree(&mut Tree::new(), Some(s.root()), None)
        .unwrap_err();
    assert!(matches!(e, ClosureError::StoreRead { .. }), "{e}");
    assert!(e.to_string().contains(&p), "{e}");
}

// ---------------------------------------------------------------------------------------
// Into the image tree

fn closure_of(s: &Store, bases: &[&str]) -> Closure {
    let list = s.write_input(
        "list",
        &bases.iter().map(|b| sp(b) + "\n").collect::<String>(),
    );
    load(&[list], Some(s.root())).unwrap()
}

fn tree_of(s: &Store, c: &Closure) -> Tree {
    let mut t = Tree::new();
    c.add_to_tree(&mut t, Some(s.root()), None).unwrap();
    t
}

#[test]
fn store_paths_become_image_entries_with_modes_and_groups() {
    let (s, [a, b, c, d]) = three_path_store();
    let cl = closure_of(&s, &[&a, &b, &c, &d]);
    let t = tree_of(&s, &cl);
    let app_path = format!("nix/store/{a}/bin/app");
    let app = t.get(&app_path).unwrap();
    assert_eq!(app.mode, 0o555);
    assert_eq!((app.uid, app.gid), (0, 0));
    assert_eq!(app.group, Group::StorePath(a.as_str().into()));
    match &app.kind {
        Kind::File(Content::Host { path, size, .. }) => {
            let host = path.resolve(app_path.as_bytes());
            assert_eq!(host, s.host(&a, "bin/app"));
            assert_eq!(*size, fs::metadata(host).unwrap().len());
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(t.get(format!("nix/store/{c}/table")).unwrap().mode, 0o444);
    assert_eq!(
        t.get(format!("nix/store/{a}")).unwrap().group,
        Group::StorePath(a.as_str().into())
    );
    assert_eq!(t.get("nix/store").unwrap().group, Group::Base);
    // Byte-sorted, parents first: the tree's order is the writers' order.
    let paths: Vec<&[u8]> = t.iter().map(|(p, _)| p).collect();
    assert!(paths.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        t.iter()
            .filter(|(p, _)| p.starts_with(b"nix/store/"))
            .count(),
        // a: dir, bin, app; b: dir, lib, libx.so, share, data; c: dir, table; d: link
        3 + 5 + 2 + 1
    );
}

#[test]
fn symlinks_are_kept_as_symlinks_and_never_followed() {
    let (s, [a, b, c, d]) = three_path_store();
    s.link(&c, "dangling", "/does/not/exist");
    s.link(&c, "etc-link", "/etc"); // leaving the store inside a path is fine
    s.link(&c, "relative", "table");
    let cl = closure_of(&s, &[&a, &b, &c, &d]);
    let t = tree_of(&s, &cl);
    let kind = |p: String| t.get(p).unwrap().kind.clone();
    assert_eq!(
        kind(format!("nix/store/{c}/dangling")),
        Kind::Symlink(b"/does/not/exist".to_vec())
    );
    assert_eq!(
        kind(format!("nix/store/{c}/etc-link")),
        Kind::Symlink(b"/etc".to_vec())
    );
    assert!(t.get(format!("nix/store/{c}/etc-link/passwd")).is_none());
    assert_eq!(
        kind(format!("nix/store/{c}/relative")),
        Kind::Symlink(b"table".to_vec())
    );
    // A store path that is itself a symlink to another store path.
    assert_eq!(
        kind(format!("nix/store/{d}")),
        Kind::Symlink(sp(&a).into_bytes())
    );
    assert_eq!(t.get(format!("nix/store/{d}")).unwrap().mode, 0o777);
}

#[test]
fn a_store_path_that_is_a_symlink_leaving_the_store_is_an_error() {
    let s = Store::new();
    let p = format!("{HASH_A}-result");
    s.link(&p, "", "/home/user/project/result");
    let json = s.write_input(
        "in.json",
        &format!(r#"[{{"path":"{}","narSize":1,"references":[]}}]"#, sp(&p)),
    );
    let c = load(&[json], Some(s.root())).unwrap();
    let e = c
        .add_to_tree(&mut Tree::new(), Some(s.root()), None)
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClosureError::EscapingSymlink { .. }), "{msg}");
    assert!(
        msg.contains(&sp(&p)) && msg.contains("/home/user/project/result"),
        "{msg}"
    );
}

#[test]
fn non_utf8_file_names_are_kept_byte_exact() {
    let s = Store::new();
    let p = format!("{HASH_A}-names");
    let dir = s.host(&p, "share");
    fs::create_dir_all(&dir).unwrap();
    let odd: &[u8] = b"caf\xe9 \xff\xfe name";
    let name = std::ffi::OsStr::from_bytes(odd);
    fs::write(dir.join(name), b"x").unwrap();
    symlink(
        std::ffi::OsStr::from_bytes(b"\xe9-target"),
        dir.join("to-odd"),
    )
    .unwrap();
    let c = closure_of(&s, &[&p]);
    let t = tree_of(&s, &c);
    let want = [format!("nix/store/{p}/share/").as_bytes(), odd].concat();
    assert!(t.get(&want).is_some(), "entry with the raw name is missing");
    assert_eq!(
        t.get(format!("nix/store/{p}/share/to-odd")).unwrap().kind,
        Kind::Symlink(b"\xe9-target".to_vec())
    );
}

#[test]
fn hard_links_within_the_closure_become_hard_links() {
    let s = Store::new();
    let (x, y, z) = (
        format!("{HASH_A}-x"),
        format!("{HASH_B}-y"),
        format!("{HASH_C}-z"),
    );
    s.file(&x, "share/a", b"same bytes", 0o444);
    fs::create_dir_all(s.host(&x, "share")).unwrap();
    fs::hard_link(s.host(&x, "share/a"), s.host(&x, "share/b")).unwrap();
    fs::create_dir_all(s.host(&y, "lib")).unwrap();
    fs::hard_link(s.host(&x, "share/a"), s.host(&y, "lib/c")).unwrap();
    // Linked with a file outside the closure only: stays a plain file.
    s.file(&z, "solo", b"solo", 0o444);
    fs::hard_link(s.host(&z, "solo"), s.root().join("outside")).unwrap();
    let c = closure_of(&s, &[&x, &y, &z]);
    let t = tree_of(&s, &c);
    // The byte-first image path is the file; the others link to it.
    let mut names = [
        format!("nix/store/{x}/share/a"),
        format!("nix/store/{x}/share/b"),
        format!("nix/store/{y}/lib/c"),
    ];
    names.sort();
    assert!(matches!(t.get(&names[0]).unwrap().kind, Kind::File(_)));
    for n in &names[1..] {
        let e = t.get(n).unwrap();
        assert_eq!(e.kind, Kind::HardLink(names[0].clone().into_bytes()), "{n}");
        assert_eq!(e.mode, 0o444);
    }
    assert!(matches!(
        t.get(format!("nix/store/{z}/solo")).unwrap().kind,
        Kind::File(_)
    ));
}

#[test]
fn fifos_in_a_store_path_are_refused() {
    let s = Store::new();
    let p = format!("{HASH_A}-odd");
    fs::create_dir_all(s.host(&p, "")).unwrap();
    let fifo = s.host(&p, "pipe");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !st.is_ok_and(|s| s.success()) {
        return; // no mkfifo here
    }
    let json = s.write_input(
        "in.json",
        &format!(r#"[{{"path":"{}","narSize":1,"references":[]}}]"#, sp(&p)),
    );
    let c = load(&[json], Some(s.root())).unwrap();
    let msg = c
        .add_to_tree(&mut Tree::new(), Some(s.root()), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("named pipe") && msg.contains("pipe"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Executables must start in the image

/// A minimal x86-64 ELF: `etype` (2 exec, 3 dyn), optional interpreter, DT_NEEDED names
/// and DT_RUNPATH.
fn make_elf(etype: u16, interp: Option<&str>, needed: &[&str], runpath: Option<&str>) -> Vec<u8> {
    const BASE: u64 = 0x400000;
    let mut strtab = vec![0u8];
    let mut add = |s: &str| {
        let o = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        o
    };
    let needed_offs: Vec<u64> = needed.iter().map(|n| add(n)).collect();
    let runpath_off = runpath.map(add);
    let has_dyn = !needed.is_empty() || runpath.is_some();
    let phnum = 1 + interp.is_some() as usize + has_dyn as usize;
    let strtab_off = 64 + 56 * phnum;
    let interp_bytes: Vec<u8> = interp
        .map(|i| [i.as_bytes(), b"\0"].concat())
        .unwrap_or_default();
    let interp_off = strtab_off + strtab.len();
    let dyn_off = (interp_off + interp_bytes.len()).div_ceil(8) * 8;
    let mut dynamic: Vec<u8> = Vec::new();
    let mut dent = |tag: u64, val: u64| {
        dynamic.extend_from_slice(&tag.to_le_bytes());
        dynamic.extend_from_slice(&val.to_le_bytes());
    };
    if has_dyn {
        for o in &needed_offs {
            dent(1, *o);
        }
        if let Some(o) = runpath_off {
            dent(29, o);
        }
        dent(5, BASE + strtab_off as u64);
        dent(0, 0);
    }
    let total = dyn_off + dynamic.len();
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b[16..18].copy_from_slice(&etype.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let mut ph = |ptype: u32, off: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[..4].copy_from_slice(&ptype.to_le_bytes());
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&(BASE + off).to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&p);
    };
    ph(1, 0, total as u64);
    if interp.is_some() {
        ph(3, interp_off as u64, interp_bytes.len() as u64);
    }
    if has_dyn {
        ph(2, dyn_off as u64, dynamic.len() as u64);
    }
    b.extend_from_slice(&strtab);
    b.extend_from_slice(&interp_bytes);
    b.resize(dyn_off, 0);
    b.extend_from_slice(&dynamic);
    b
}

fn put(t: &mut Tree, path: &str, bytes: Vec<u8>, mode: u32) {
    t.insert(path, Entry::file(Content::bytes(bytes), mode, Group::Base))
        .unwrap();
}

const LD: &str = "/nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-glibc/lib/ld-linux-x86-64.so.2";

#[test]
fn the_crafted_elf_reads_back() {
    let b = make_elf(2, Some(LD), &["libc.so.6", "libz.so.1"], Some("/x"));
    let n = elf::parse("t", &b).unwrap();
    assert_eq!(n.interpreter.as_deref(), Some(LD));
    assert_eq!(n.needed, ["libc.so.6", "libz.so.1"]);
}

#[test]
fn a_dynamic_binary_without_its_library_is_refused_naming_the_library() {
    let mut t = Tree::new();
    put(&mut t, &LD[1..], make_elf(3, None, &[], None), 0o555);
    put(
        &mut t,
        "nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
        make_elf(
            2,
            Some(LD),
            &["libz.so.1"],
            Some("/nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-zlib/lib"),
        ),
        0o555,
    );
    let e = check_executables(&t).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ClosureError::MissingLibrary { .. }), "{msg}");
    assert!(
        msg.contains("libz.so.1") && msg.contains("-app/bin/app") && msg.contains("-zlib/lib"),
        "{msg}"
    );
    // With the library where the RUNPATH points (through a symlink, as Nix installs them).
    put(
        &mut t,
        "nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-zlib/lib/libz.so.1.3",
        make_elf(3, None, &[], None),
        0o555,
    );
    t.insert(
        "nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-zlib/lib/libz.so.1",
        Entry::symlink("libz.so.1.3", Group::Base),
    )
    .unwrap();
    check_executables(&t).unwrap();
}

#[test]
fn a_library_missing_a_library_is_named_with_who_needs_it() {
    let mut t = Tree::new();
    put(&mut t, &LD[1..], make_elf(3, None, &[], None), 0o555);
    // libssl in the loader's own directory, needing libcrypto that is nowhere.
    put(
        &mut t,
        "nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-glibc/lib/libssl.so.3",
        make_elf(3, None, &["libcrypto.so.3"], Some("$ORIGIN")),
        0o444,
    );
    put(
        &mut t,
        "nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
        make_elf(2, Some(LD), &["libssl.so.3"], None),
        0o555,
    );
    let msg = check_executables(&t).unwrap_err().to_string();
    assert!(
        msg.contains("libcrypto.so.3") && msg.contains("needed by") && msg.contains("libssl.so.3"),
        "{msg}"
    );
    // $ORIGIN of the library resolves to its own directory.
    put(
        &mut t,
        "nix/store/0kwfpbiwpkrc415hz2ykpagpzw5pk1mr-glibc/lib/libcrypto.so.3",
        make_elf(3, None, &[], None),
        0o444,
    );
    check_executables(&t).unwrap();
}

#[test]
fn a_missing_interpreter_is_refused_naming_it() {
    let mut t = Tree::new();
    put(
        &mut t,
        "nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
        make_elf(2, Some("/lib64/ld-linux-x86-64.so.2"), &[], None),
        0o555,
    );
    let e = check_executables(&t).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ClosureError::MissingInterpreter { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("/lib64/ld-linux-x86-64.so.2") && msg.contains("-app/bin/app"),
        "{msg}"
    );
}

#[test]
fn static_binaries_scripts_libraries_and_data_pass() {
    let mut t = Tree::new();
    put(&mut t, "bin/static", make_elf(2, None, &[], None), 0o755);
    put(
        &mut t,
        "bin/script",
        b"#!/bin/sh\necho hi\n".to_vec(),
        0o755,
    );
    // A shared library is checked as a dependency of an executable, not alone.
    put(
        &mut t,
        "lib/libplugin.so",
        make_elf(3, None, &["libhost.so"], None),
        0o555,
    );
    // Not executable: never checked.
    put(
        &mut t,
        "share/blob",
        make_elf(2, Some("/nowhere"), &[], None),
        0o644,
    );
    check_executables(&t).unwrap();
}

#[test]
fn a_host_dynamic_binary_passes_with_its_loader_and_libc_in_the_tree() {
    let bin = Path::new("/bin/true");
    let needs = elf::read(bin).unwrap();
    let Some(interp) = needs.interpreter.clone() else {
        return; // a static /bin/true: nothing to check here
    };
    let host = |p: &str| tree::host_content(Path::new(p)).unwrap();
    let mut t = Tree::new();
    t.insert(
        "usr/bin/true",
        Entry::file(host("/bin/true"), 0o755, Group::Base),
    )
    .unwrap();
    let e = check_executables(&t).unwrap_err().to_string();
    assert!(e.contains(&interp), "{e}");
    t.insert(&interp, Entry::file(host(&interp), 0o755, Group::Base))
        .unwrap();
    let e = check_executables(&t).unwrap_err().to_string();
    assert!(
        e.contains("libc.so.6") && e.contains("/usr/bin/true"),
        "{e}"
    );
    for lib in &needs.needed {
        let host_lib = [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
        ]
        .iter()
        .map(|d| format!("{d}/{lib}"))
        .find(|p| Path::new(p).exists())
        .unwrap();
        t.insert(
            format!("usr/lib/x86_64-linux-gnu/{lib}"),
            Entry::file(host(&host_lib), 0o755, Group::Base),
        )
        .unwrap();
    }
    check_executables(&t).unwrap();
}

// ---------------------------------------------------------------------------------------
// Real Nix closures (fixtures/make-closures)

fn fixture() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(repo.join("fixtures/make-closures"))
        .output()
        .expect("running fixtures/make-closures");
    assert!(
        out.status.success(),
        "fixtures/make-closures failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    PathBuf::from(dir)
}

#[test]
#[ignore = "full: needs nix"]
fn every_input_form_of_a_real_nix_closure_loads_to_the_same_closure() {
    let f = fixture();
    let json = load(&[f.join("path-info.json")], None).unwrap();
    assert_eq!(json.paths.len(), 5);
    for input in [
        "path-info-object.json",
        "closure-info",
        "closure-info/registration",
        "export-graph",
        "store-paths.txt",
    ] {
        // Sizes too: the export graph and the plain list get theirs computed by imgbuild
        // from the store, and they must equal Nix's narSize.
        let got = load(&[f.join(input)], None).unwrap();
        assert_eq!(graph_of(&got), graph_of(&json), "{input}");
        hashes_agree(&got, &json);
    }
    let all: Vec<PathBuf> = ["path-info.json", "export-graph", "store-paths.txt"]
        .iter()
        .map(|i| f.join(i))
        .collect();
    assert_eq!(graph_of(&load(&all, None).unwrap()), graph_of(&json));
}

#[test]
#[ignore = "full: needs nix"]
fn a_real_nix_closure_packs_byte_exact_and_its_programs_run() {
    let f = fixture();
    let c = load(&[f.join("path-info.json")], None).unwrap();
    let mut t = Tree::new();
    c.add_to_tree(&mut t, None, None).unwrap();
    check_executables(&t).unwrap();
    let find = |suffix: &[u8]| -> (Vec<u8>, Entry) {
        t.iter()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(p, e)| (p.to_vec(), e.clone()))
            .unwrap_or_else(|| panic!("{} not in the tree", String::from_utf8_lossy(suffix)))
    };
    let (_, bb) = find(b"-busybox-static/bin/busybox");
    assert_eq!(bb.mode, 0o555);
    let (_, sh) = find(b"-busybox-static/bin/sh");
    assert_eq!(sh.kind, Kind::Symlink(b"busybox".to_vec()));
    find(b"-fixture-lib/share/fixture/caf\xe9");
    let top = fs::read_to_string(f.join("top")).unwrap();
    let (_, top_entry) = find(top.trim().trim_start_matches('/').as_bytes());
    assert!(matches!(top_entry.kind, Kind::Symlink(_)));
    // linked-a / linked-b (and after `nix-store --optimise` the same bytes in app) share
    // one inode: one file, the rest hard links to it.
    let links = t
        .iter()
        .filter(|(_, e)| matches!(e.kind, Kind::HardLink(_)))
        .count();
    assert!(links >= 1, "no hard links in the fixture closure");
    // Every file entry points at a real, readable store file of the right size.
    for (p, e) in t.iter() {
        if let Kind::File(Content::Host { path, size, .. }) = &e.kind {
            assert_eq!(fs::metadata(path.resolve(p)).unwrap().len(), *size);
        }
    }
    // The program of the closure runs (the container tests run it inside an image).
    let (hello, _) = find(b"-fixture-app/bin/hello");
    let out = std::process::Command::new(Path::new("/").join(std::ffi::OsStr::from_bytes(&hello)))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from the imgbuild fixture closure")
    );
}

#[test]
fn every_executable_that_cannot_start_is_listed_not_only_the_first() {
    let mut t = Tree::new();
    put(&mut t, &LD[1..], make_elf(3, None, &[], None), 0o555);
    // app misses libz and libpng; tool misses its loader.
    put(
        &mut t,
        "nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
        make_elf(2, Some(LD), &["libz.so.1", "libpng16.so.16"], None),
        0o555,
    );
    put(
        &mut t,
        "nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-tool/bin/tool",
        make_elf(2, Some("/lib64/ld-linux-x86-64.so.2"), &[], None),
        0o555,
    );
    let all = closure::unresolved(&t);
    let text: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(all.len(), 3, "{text:#?}");
    assert_eq!(
        all.iter().filter_map(|e| e.binary()).collect::<Vec<_>>(),
        [
            "/nix/store/07v862jyjr4jfbiyxhkzm276y8p0dyv5-tool/bin/tool",
            "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
            "/nix/store/6w1z088wcnwgiw7qnlrf5v4rnngspq7c-app/bin/app",
        ],
        "in image path order: {text:#?}"
    );
    let e = check_executables(&t).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ClosureError::Executables(ref v) if v.len() == 3),
        "{msg}"
    );
    for needle in [
        "libz.so.1",
        "libpng16.so.16",
        "-tool/bin/tool",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------
// Store walks remembered (closure::walk_record)

/// Sets the mtime of `p` (a file or a directory, not followed if a symlink is not asked) to 1,
/// as Nix leaves everything it registers.
fn mtime_one(p: &Path) {
    let f = fs::File::open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
}

/// Makes the store path `base` look registered by Nix: read-only and mtime 1 everywhere.
fn canonicalise(s: &Store, base: &str) {
    let root = s.host(base, "");
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        all.push(p);
    }
    // Deepest first, so a directory's mtime is set after its entries were changed.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        let dir = p.is_dir();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if dir { 0o555 } else { 0o444 }),
        )
        .unwrap();
        mtime_one(&p);
    }
}

/// Gives `p` (in a read-only store path) write permission for its owner, runs `f`, and takes
/// the permission back: what root (or a tool fixing a store) would do.
fn writable(p: &Path, f: impl FnOnce()) {
    let mode = fs::metadata(p).unwrap().permissions().mode();
    fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o200)).unwrap();
    f();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn print_of(t: &Tree, path: &str) -> (u64, u64) {
    match &t.get(path).unwrap().kind {
        Kind::File(Content::Host { size, stamp, .. }) => (*size, stamp.unwrap().get()),
        k => panic!("{path}: {k:?}"),
    }
}

#[test]
fn an_immutable_store_path_is_walked_once_and_again_only_when_a_directory_in_it_changed() {
    let s = Store::new();
    let base = format!("{HASH_A}-docs");
    s.file(&base, "share/doc/a", b"one", 0o444);
    s.file(&base, "bin/x", b"#!/bin/sh\n", 0o555);
    canonicalise(&s, &base);
    let cl = closure_of(&s, &[&base]);
    let cache = tempfile::tempdir().unwrap();
    let records = closure::walk_record::WalkRecords::in_cache(cache.path());
    let tree_with = |records| {
        let mut t = Tree::new();
        cl.add_to_tree(&mut t, Some(s.root()), records).unwrap();
        t
    };
    let fresh = tree_of(&s, &cl);
    let first = tree_with(Some(&records));
    assert!(cache.path().join("walks").join(&base).is_file());
    let a = format!("nix/store/{base}/share/doc/a");
    assert_eq!(print_of(&first, &a), print_of(&fresh, &a));
    // Taken from the record: the same entries as a walk.
    let again = tree_with(Some(&records));
    let paths = |t: &Tree| t.iter().map(|(p, _)| p.to_vec()).collect::<Vec<_>>();
    assert_eq!(paths(&again), paths(&fresh));
    assert_eq!(print_of(&again, &a), print_of(&fresh, &a));
    // A file written in place (what Nix never does: a corrupt store) is not seen while its
    // directory is unchanged — the record is what was used. A walk sees it.
    writable(&s.host(&base, "share/doc/a"), || {
        fs::write(s.host(&base, "share/doc/a"), b"two!").unwrap();
    });
    let trusted = tree_with(Some(&records));
    assert_eq!(print_of(&trusted, &a), print_of(&fresh, &a));
    assert_eq!(print_of(&tree_of(&s, &cl), &a).0, 4);
    // An entry added to a directory changes that directory: walked again, and recorded anew.
    writable(&s.host(&base, "share/doc"), || {
        fs::write(s.host(&base, "share/doc/b"), b"bee").unwrap();
    });
    let changed = tree_with(Some(&records));
    assert!(changed
        .get(format!("nix/store/{base}/share/doc/b"))
        .is_some());
    assert_eq!(print_of(&changed, &a).0, 4);
    assert_eq!(paths(&tree_with(Some(&records))), paths(&changed));
    // A path that is not immutable (writable, or mtime not 1) is never recorded.
    let other = format!("{HASH_B}-writable");
    s.file(&other, "f", b"x", 0o644);
    let cl2 = closure_of(&s, &[&other]);
    cl2.add_to_tree(&mut Tree::new(), Some(s.root()), Some(&records))
        .unwrap();
    assert!(!cache.path().join("walks").join(&other).exists());
    // Writable again, for the temp dir to be removed by a user who is not root.
    for p in [
        s.host(&base, ""),
        s.host(&base, "share"),
        s.host(&base, "share/doc"),
        s.host(&base, "bin"),
    ] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
