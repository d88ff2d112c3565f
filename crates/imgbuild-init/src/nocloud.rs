//! Cloud-init NoCloud, the subset imgbuild honours (boot mode only, optional).
//!
//! Source: a block device (`sr*`, `vd*`, `sd*`, `xvd*`, partitions included) holding an
//! ISO9660 filesystem whose volume id is `CIDATA` (any case), mounted read-only.
//! - `meta-data`: `local-hostname` (the hostname) and `instance-id` (printed).
//! - `user-data`, only when it starts with `#cloud-config`:
//!   - `hostname:` (wins over `local-hostname`; `fqdn:` is used when `hostname:` is absent),
//!   - `write_files:` items with `path`, `content`, optional `permissions` (octal string),
//!     `encoding` (`b64`/`base64`, or plain), `append` (true/false); other keys are ignored,
//!   - a map named after the command-line prefix without its dot (`hls:` by default) of
//!     service environment overrides, e.g. `hls: {PORT: 18080}`.
//!
//! Everything else (users, packages, runcmd, network-config, MIME multipart, scripts) is
//! ignored, said in one line.

use crate::say::say;
use crate::yaml::{self, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    pub instance_id: Option<String>,
    pub local_hostname: Option<String>,
    /// Problems, one line each.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    pub append: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserData {
    pub hostname: Option<String>,
    pub write_files: Vec<WriteFile>,
    /// Service environment overrides, in file order.
    pub env: Vec<(String, String)>,
    /// Problems and ignored parts, one line each.
    pub notes: Vec<String>,
}

/// What a CIDATA volume contributed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoCloud {
    pub meta: MetaData,
    pub user: UserData,
}

impl NoCloud {
    /// The hostname NoCloud asks for: user-data `hostname` over meta-data `local-hostname`.
    pub fn hostname(&self) -> Option<&str> {
        self.user
            .hostname
            .as_deref()
            .or(self.meta.local_hostname.as_deref())
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The tree of `file`, with a note when a YAML error cut the reading short.
fn read_yaml(file: &str, src: &str, notes: &mut Vec<String>) -> Value {
    let parsed = yaml::parse(src);
    if let Some(e) = parsed.error {
        notes.push(format!(
            "{file} is not valid YAML ({e}); using only what comes before the error"
        ));
    }
    parsed.value
}

pub fn parse_meta_data(src: &str) -> MetaData {
    let mut notes = Vec::new();
    let v = read_yaml("meta-data", src, &mut notes);
    MetaData {
        instance_id: text(v.get("instance-id")),
        local_hostname: text(v.get("local-hostname")).or_else(|| text(v.get("hostname"))),
        notes,
    }
}

pub fn parse_user_data(src: &str, env_key: &str) -> UserData {
    let mut u = UserData::default();
    let first = src.lines().next().unwrap_or("").trim_end();
    if first != "#cloud-config" {
        if !src.trim().is_empty() {
            u.notes.push(format!(
                "user-data is not #cloud-config (starts with {:?}); ignored",
                first.chars().take(40).collect::<String>()
            ));
        }
        return u;
    }
    let v = read_yaml("user-data", src, &mut u.notes);
    u.hostname = text(v.get("hostname")).or_else(|| text(v.get("fqdn")));
    match v.get("write_files") {
        None | Some(Value::Null) => {}
        Some(Value::Seq(items)) => {
            for (n, item) in items.iter().enumerate() {
                match write_file(item) {
                    Ok(f) => u.write_files.push(f),
                    Err(e) => u
                        .notes
                        .push(format!("write_files item {}: {e}; skipped", n + 1)),
                }
            }
        }
        Some(_) => u.notes.push("write_files is not a list; ignored".into()),
    }
    match v.get(env_key) {
        None | Some(Value::Null) => {}
        Some(Value::Map(m)) => {
            for (k, val) in m {
                match val {
                    _ if k.is_empty() || k.contains('=') => u
                        .notes
                        .push(format!("{env_key}: bad variable name {k:?}; skipped")),
                    Value::Str(s) => u.env.push((k.clone(), s.clone())),
                    Value::Null => u.env.push((k.clone(), String::new())),
                    _ => u
                        .notes
                        .push(format!("{env_key}.{k} is not a plain value; skipped")),
                }
            }
        }
        Some(_) => u.notes.push(format!("{env_key} is not a map; ignored")),
    }
    if let Value::Map(m) = &v {
        let ignored: Vec<&str> = m
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !["hostname", "fqdn", "write_files", env_key].contains(k))
            .collect();
        if !ignored.is_empty() {
            u.notes.push(format!(
                "user-data keys not supported, ignored: {}",
                ignored.join(", ")
            ));
        }
    }
    u
}

fn truthy(v: Option<&Value>) -> bool {
    matches!(
        v.and_then(Value::as_str),
        Some("true" | "True" | "yes" | "on" | "1")
    )
}

fn write_file(item: &Value) -> Result<WriteFile, String> {
    let path = text(item.get("path")).ok_or("no path")?;
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    let raw = item.get("content").and_then(Value::as_str).unwrap_or("");
    let content = match text(item.get("encoding")).as_deref() {
        None | Some("text/plain") => raw.as_bytes().to_vec(),
        Some("b64" | "base64") => base64(raw).ok_or("content is not valid base64")?,
        Some(other) => return Err(format!("encoding {other:?} not supported")),
    };
    let mode = match text(item.get("permissions")) {
        None => 0o644,
        Some(p) => u32::from_str_radix(p.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("permissions {p:?} is not octal"))?,
    };
    Ok(WriteFile {
        path: PathBuf::from(path),
        content,
        mode,
        append: truthy(item.get("append")),
    })
}

/// Standard base64 (whitespace ignored, padding optional).
pub fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Write the user-data files (parents created); each result is printed.
pub fn write_files(files: &[WriteFile]) {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    for f in files {
        if let Some(dir) = f.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let r = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(f.append)
            .truncate(!f.append)
            .mode(f.mode)
            .open(&f.path)
            .and_then(|mut file| {
                file.write_all(&f.content)?;
                file.set_permissions(std::fs::Permissions::from_mode(f.mode))
            });
        match r {
            Ok(()) => say!(
                "NoCloud wrote {} ({} bytes, mode {:o})",
                f.path.display(),
                f.content.len(),
                f.mode
            ),
            Err(e) => say!("NoCloud cannot write {}: {e}", f.path.display()),
        }
    }
}

// ---- finding and reading the CIDATA volume ----

/// The ISO9660 volume id of the device at `dev`, if it holds one.
pub fn iso9660_label(dev: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    f.seek(SeekFrom::Start(16 * 2048)).ok()?;
    let mut pvd = [0u8; 72];
    f.read_exact(&mut pvd).ok()?;
    volume_id(&pvd)
}

/// Volume id from the first bytes of a primary volume descriptor.
pub fn volume_id(pvd: &[u8]) -> Option<String> {
    if pvd.len() < 72 || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string())
}

/// Block devices worth probing, from /sys/class/block.
pub fn candidates() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| ["sr", "vd", "sd", "xvd"].iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Find a directory entry by its NoCloud name, tolerating ISO9660 name mangling
/// (`META_DAT.;1`, upper case) when the volume has neither Rock Ridge nor Joliet.
fn find_entry(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    let want = name.replace('-', "_").to_ascii_lowercase();
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().to_ascii_lowercase();
            let n = n
                .split(';')
                .next()
                .unwrap_or("")
                .trim_end_matches('.')
                .replace('-', "_");
            (n.len() >= 8 && want.starts_with(&n) || n == want).then(|| e.path())
        })
}

/// Look for a CIDATA volume, mount it read-only, read it, unmount it.
pub fn load(env_key: &str) -> Option<NoCloud> {
    use nix::mount::{mount, umount, MsFlags};
    let dev = candidates().into_iter().find(|n| {
        iso9660_label(&Path::new("/dev").join(n)).is_some_and(|l| l.eq_ignore_ascii_case("cidata"))
    })?;
    let dev_path = Path::new("/dev").join(&dev);
    let mnt = Path::new("/run/imgbuild/cidata");
    let _ = std::fs::create_dir_all(mnt);
    if let Err(e) = mount(
        Some(&dev_path),
        mnt,
        Some("iso9660"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        say!("NoCloud: CIDATA on /dev/{dev} but mounting it failed: {e}");
        return None;
    }
    say!("NoCloud: CIDATA volume on /dev/{dev}");
    let read = |name: &str| {
        find_entry(mnt, name)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let nc = NoCloud {
        meta: parse_meta_data(&read("meta-data")),
        user: parse_user_data(&read("user-data"), env_key),
    };
    let _ = umount(mnt);
    Some(nc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data() {
        let m = parse_meta_data("instance-id: iid-local01\nlocal-hostname: cloudimg\n");
        assert_eq!(m.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(m.local_hostname.as_deref(), Some("cloudimg"));
        let m = parse_meta_data("{\"instance-id\":\"x\",\"local-hostname\":\"y\"}");
        assert_eq!(m.local_hostname.as_deref(), Some("y"));
        assert_eq!(parse_meta_data(""), MetaData::default());
    }

    #[test]
    fn cloud_config_subset() {
        let src = r#"#cloud-config
hostname: edge-1
users:
  - name: bob
write_files:
  - path: /etc/motd
    content: |
      hello
    permissions: '0600'
  - path: /etc/blob
    encoding: b64
    content: aGk=
  - path: relative
    content: x
  - path: /etc/log
    content: more
    append: true
hls:
  PORT: 18080
  LOG_LEVEL: "debug"
"#;
        let u = parse_user_data(src, "hls");
        assert_eq!(u.hostname.as_deref(), Some("edge-1"));
        assert_eq!(u.write_files.len(), 3);
        assert_eq!(u.write_files[0].content, b"hello\n");
        assert_eq!(u.write_files[0].mode, 0o600);
        assert_eq!(u.write_files[1].content, b"hi");
        assert!(u.write_files[2].append);
        assert_eq!(
            u.env,
            vec![
                ("PORT".into(), "18080".into()),
                ("LOG_LEVEL".into(), "debug".into())
            ]
        );
        assert_eq!(u.notes.len(), 2, "{:?}", u.notes); // relative path, users key
        let nc = NoCloud {
            meta: parse_meta_data("local-hostname: meta"),
            user: u,
        };
        assert_eq!(nc.hostname(), Some("edge-1"));
    }

    /// Broken YAML never stops a boot: what precedes the error is used, with one note.
    #[test]
    fn broken_yaml_keeps_what_came_before() {
        let u = parse_user_data(
            "#cloud-config\nhostname: h\nhls: {PORT: 1\nfqdn: x\n",
            "hls",
        );
        assert_eq!(u.hostname.as_deref(), Some("h"));
        assert_eq!(u.notes.len(), 1, "{:?}", u.notes);
        assert!(
            u.notes[0].starts_with("user-data is not valid YAML (") && u.notes[0].contains("line"),
            "{:?}",
            u.notes
        );
        let m = parse_meta_data("local-hostname: m\ninstance-id: [i\n");
        assert_eq!(m.local_hostname.as_deref(), Some("m"));
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
        assert!(m.notes[0].starts_with("meta-data is not valid YAML"));
    }

    #[test]
    fn non_cloud_config_is_ignored() {
        let u = parse_user_data("#!/bin/sh\necho hi\n", "hls");
        assert_eq!(u.write_files.len(), 0);
        assert_eq!(u.notes.len(), 1);
        assert_eq!(parse_user_data("", "hls"), UserData::default());
    }

    #[test]
    fn base64_and_volume_id() {
        assert_eq!(base64("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64("aGk").unwrap(), b"hi");
        assert!(base64("a*b").is_none());
        let mut pvd = vec![0u8; 72];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].copy_from_slice(format!("{:<32}", "cidata").as_bytes());
        assert_eq!(volume_id(&pvd).as_deref(), Some("cidata"));
        pvd[1] = b'X';
        assert_eq!(volume_id(&pvd), None);
    }

    #[test]
    fn mangled_iso_names_are_found() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("META_DAT.;1"), "local-hostname: x").unwrap();
        std::fs::write(d.path().join("user-data"), "").unwrap();
        assert!(find_entry(d.path(), "meta-data").is_some());
        assert!(find_entry(d.path(), "user-data").is_some());
        assert!(find_entry(d.path(), "vendor-data").is_none());
    }
}
