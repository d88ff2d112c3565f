//! The image's software bill of materials: SPDX 2.3 JSON (default) or CycloneDX 1.5 JSON.
//!
//! It lists each Nix store path of the closure (name and version parsed from the store path
//! the way Nix's `parseDrvName` does, the NAR hash as a SHA256 checksum, its references as
//! DEPENDS_ON relationships) and each payload program (the binary's SHA256) with the Rust
//! crates it was built from: the packages of the workspace's Cargo.lock reachable from the
//! program's package, embedded into imgbuild when it is compiled. Cargo.lock does not tell
//! build-only or other-platform dependencies apart, so that list can be a superset of what
//! is linked, never a subset.
//!
//! Deterministic: no clock, no random ids; `created` is SOURCE_DATE_EPOCH and the document
//! namespace and CycloneDX serial number derive from the content. The document lives in the
//! image at [`SPDX_PATH`] / [`CYCLONEDX_PATH`], in a layer of its own (docs/push-and-sbom.md).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where the SBOM is in the image.
pub const SPDX_PATH: &str = "etc/imgbuild/sbom.spdx.json";
pub const CYCLONEDX_PATH: &str = "etc/imgbuild/sbom.cdx.json";

/// The workspace's Cargo.lock when imgbuild was compiled (the payloads are built from it).
const CARGO_LOCK: &str = include_str!("../Cargo.lock");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.5 JSON.
    Cyclonedx,
    /// No SBOM in the image.
    None,
}

impl SbomFormat {
    pub fn image_path(self) -> Option<&'static str> {
        match self {
            SbomFormat::Spdx => Some(SPDX_PATH),
            SbomFormat::Cyclonedx => Some(CYCLONEDX_PATH),
            SbomFormat::None => None,
        }
    }
}

/// One store path of the closure.
#[derive(Clone, Debug)]
pub struct StoreItem {
    /// `/nix/store/<hash>-<name>`.
    pub path: String,
    pub nar_hash: Option<String>,
    pub references: Vec<String>,
}

/// One payload program.
#[derive(Clone, Debug)]
pub struct PayloadItem {
    pub name: String,
    /// `/bin/<name>`.
    pub image_path: String,
    /// Hex SHA256 of the binary.
    pub sha256: String,
}

/// Everything the SBOM says.
#[derive(Clone, Debug)]
pub struct Input {
    /// `hls-origin:default`.
    pub image: String,
    /// RFC 3339 (SOURCE_DATE_EPOCH).
    pub created: String,
    /// imgbuild's version.
    pub tool_version: String,
    pub store: Vec<StoreItem>,
    pub payloads: Vec<PayloadItem>,
}

/// A crate of Cargo.lock.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// Hex SHA256 of the .crate (registry crates only).
    pub checksum: Option<String>,
    /// Workspace member (no `source`).
    pub local: bool,
}

/// The crates of Cargo.lock reachable from package `root` (itself included); empty when
/// Cargo.lock has no such package.
pub fn crates_of(root: &str) -> Vec<Crate> {
    crates_in(CARGO_LOCK, root)
}

fn crates_in(lock: &str, root: &str) -> Vec<Crate> {
    let Ok(v) = lock.parse::<toml::Table>() else {
        return Vec::new();
    };
    let pkgs = v
        .get("package")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    struct P {
        c: Crate,
        deps: Vec<String>,
    }
    let all: Vec<P> = pkgs
        .iter()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?.to_string();
            let version = p.get("version")?.as_str()?.to_string();
            Some(P {
                c: Crate {
                    name,
                    version,
                    checksum: p
                        .get("checksum")
                        .and_then(|c| c.as_str())
                        .map(str::to_string),
                    local: p.get("source").is_none(),
                },
                deps: p
                    .get("dependencies")
                    .and_then(|d| d.as_array())
                    .map(|d| {
                        d.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect();
    // A dependency is `name` (unique in the lock) or `name version` or `name version (src)`.
    let find = |dep: &str| -> Option<usize> {
        let mut it = dep.split(' ');
        let name = it.next()?;
        let version = it.next();
        all.iter()
            .position(|p| p.c.name == name && version.is_none_or(|v| p.c.version == v))
    };
    let Some(start) = all.iter().position(|p| p.c.name == root && p.c.local) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        for d in &all[i].deps {
            if let Some(j) = find(d) {
                todo.push(j);
            }
        }
    }
    let mut out: Vec<Crate> = seen.into_iter().map(|i| all[i].c.clone()).collect();
    out.sort();
    out
}

/// Nix's `parseDrvName`: the name ends at the first `-` followed by a non-letter.
pub fn name_version(store_path: &str) -> (String, Option<String>) {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    let rest = base.split_once('-').map_or(base, |(_, r)| r);
    let b = rest.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (rest[..i].to_string(), Some(rest[i + 1..].to_string()));
        }
    }
    (rest.to_string(), None)
}

/// A NAR hash (`sha256:<nix base32>`, `sha256:<hex>`, SRI `sha256-<base64>`, or bare hex
/// or base32 as closureInfo registrations have it) as hex.
pub fn nar_hash_hex(h: &str) -> Option<String> {
    use base64::Engine;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if let Some(b64) = h.strip_prefix("sha256-") {
        let b = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        return (b.len() == 32).then(|| hex(&b));
    }
    // `nix-store --dump-db` (closureInfo registration) writes bare hex or base32.
    let s = h.strip_prefix("sha256:").unwrap_or(h);
    if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Some(s.to_ascii_lowercase());
    }
    // Nix base32: 52 chars, alphabet without e o u t, least significant digit last.
    const ALPHA: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    if s.len() != 52 {
        return None;
    }
    let mut out = [0u8; 32];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = ALPHA.iter().position(|&a| a == c)? as u32;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = (digit << j) >> 8;
        if i + 1 < 32 {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(hex(&out))
}

fn spdx_id(kind: &str, s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("SBOM JSON");
    b.push(b'\n');
    b
}

/// The content fingerprint used for the namespace / serial number.
fn fingerprint(i: &Input) -> String {
    let mut h = Sha256::new();
    h.update(i.image.as_bytes());
    for s in &i.store {
        h.update(s.path.as_bytes());
        // Normalised: every closure form of the same store gives the same document.
        let nh = s
            .nar_hash
            .as_deref()
            .and_then(nar_hash_hex)
            .unwrap_or_default();
        h.update(nh.as_bytes());
    }
    for p in &i.payloads {
        h.update(p.name.as_bytes());
        h.update(p.sha256.as_bytes());
    }
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

fn purl(c: &Crate) -> String {
    format!("pkg:cargo/{}@{}", c.name, c.version)
}

/// The SPDX 2.3 document.
pub fn spdx(i: &Input) -> Vec<u8> {
    let fp = fingerprint(i);
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": i.image,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "comment": "The container image built by imgbuild",
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let store_ids: BTreeMap<&str, String> = i
        .store
        .iter()
        .map(|s| {
            let base = s.path.rsplit('/').next().unwrap_or(&s.path);
            (s.path.as_str(), spdx_id("Nix", base))
        })
        .collect();
    for s in &i.store {
        let (name, version) = name_version(&s.path);
        let id = &store_ids[s.path.as_str()];
        let mut p = json!({
            "SPDXID": id,
            "name": name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("Nix store path {}", s.path),
            "primaryPackagePurpose": "LIBRARY",
        });
        if let Some(v) = version {
            p["versionInfo"] = v.into();
        }
        if let Some(h) = s.nar_hash.as_deref().and_then(nar_hash_hex) {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": h}]);
            p["comment"] = "SHA256 is the hash of the store path's NAR serialisation".into();
        }
        packages.push(p);
        rels.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        for r in &s.references {
            if r != &s.path {
                if let Some(rid) = store_ids.get(r.as_str()) {
                    rels.push(json!({"spdxElementId": id, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": rid}));
                }
            }
        }
    }
    let mut crates_done = BTreeSet::new();
    for p in &i.payloads {
        let crates = crates_of(&p.name);
        let own = crates.iter().find(|c| c.name == p.name && c.local);
        let id = spdx_id("Payload", &p.name);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "sourceInfo": format!("payload program at {}", p.image_path),
            "primaryPackagePurpose": "APPLICATION",
        });
        if let Some(c) = own {
            pkg["versionInfo"] = c.version.clone().into();
        }
        packages.push(pkg);
        rels.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        for c in crates.iter().filter(|c| !(c.name == p.name && c.local)) {
            let cid = spdx_id("Crate", &format!("{}-{}", c.name, c.version));
            if crates_done.insert(cid.clone()) {
                let mut cp = json!({
                    "SPDXID": cid,
                    "name": c.name,
                    "versionInfo": c.version,
                    "downloadLocation": if c.local { "NOASSERTION".to_string() } else { format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version) },
                    "filesAnalyzed": false,
                    "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl(c)}],
                    "primaryPackagePurpose": "LIBRARY",
                });
                if let Some(sum) = &c.checksum {
                    cp["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
                }
                packages.push(cp);
            }
            rels.push(json!({"spdxElementId": id, "relationshipType": "STATIC_LINK", "relatedSpdxElement": cid}));
        }
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": i.image,
        "documentNamespace": format!("https://example.invalid/imgbuild/spdx/{}/{}", i.image.replace(':', "/"), &fp[..32]),
        "creationInfo": {
            "created": i.created,
            "creators": [format!("Tool: imgbuild-{}", i.tool_version)],
        },
        "packages": packages,
        "relationships": rels,
    });
    to_bytes(&doc)
}

/// The CycloneDX 1.5 document.
pub fn cyclonedx(i: &Input) -> Vec<u8> {
    let fp = fingerprint(i);
    let serial = format!(
        "urn:uuid:{}-{}-5{}-8{}-{}",
        &fp[0..8],
        &fp[8..12],
        &fp[13..16],
        &fp[17..20],
        &fp[20..32]
    );
    let mut components = Vec::new();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut top = BTreeSet::new();
    for s in &i.store {
        let (name, version) = name_version(&s.path);
        let mut c = json!({"type": "library", "bom-ref": s.path, "name": name,
            "properties": [{"name": "nix:store-path", "value": s.path}]});
        if let Some(v) = version {
            c["version"] = v.into();
        }
        if let Some(h) = s.nar_hash.as_deref().and_then(nar_hash_hex) {
            c["hashes"] = json!([{"alg": "SHA-256", "content": h}]);
        }
        components.push(c);
        top.insert(s.path.clone());
        deps.entry(s.path.clone()).or_default().extend(
            s.references
                .iter()
                .filter(|r| *r != &s.path && i.store.iter().any(|x| &x.path == *r))
                .cloned(),
        );
    }
    let mut crates_done = BTreeSet::new();
    for p in &i.payloads {
        let crates = crates_of(&p.name);
        let bref = format!("payload:{}", p.name);
        let mut c = json!({"type": "application", "bom-ref": bref, "name": p.name,
            "hashes": [{"alg": "SHA-256", "content": p.sha256}],
            "properties": [{"name": "imgbuild:image-path", "value": p.image_path}]});
        if let Some(own) = crates.iter().find(|c| c.name == p.name && c.local) {
            c["version"] = own.version.clone().into();
        }
        components.push(c);
        top.insert(bref.clone());
        let entry = deps.entry(bref).or_default();
        for k in crates.iter().filter(|c| !(c.name == p.name && c.local)) {
            let r = purl(k);
            entry.insert(r.clone());
            if crates_done.insert(r.clone()) {
                let mut cc = json!({"type": "library", "bom-ref": r, "name": k.name,
                    "version": k.version, "purl": r});
                if let Some(sum) = &k.checksum {
                    cc["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
                }
                components.push(cc);
            }
        }
    }
    deps.insert("image".into(), top);
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": i.created,
            "tools": {"components": [{"type": "application", "name": "imgbuild", "version": i.tool_version}]},
            "component": {"type": "container", "bom-ref": "image", "name": i.image},
        },
        "components": components,
        "dependencies": deps.into_iter().map(|(r, d)| json!({"ref": r, "dependsOn": d})).collect::<Vec<_>>(),
    });
    to_bytes(&doc)
}

/// The document in `format` (`None` for [`SbomFormat::None`]).
pub fn render(i: &Input, format: SbomFormat) -> Option<Vec<u8>> {
    match format {
        SbomFormat::Spdx => Some(spdx(i)),
        SbomFormat::Cyclonedx => Some(cyclonedx(i)),
        SbomFormat::None => None,
    }
}

/// SHA256 (hex) of a file.
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|x| format!("{x:02x}")).collect())
}

/// What `inspect` reports and `--verify` checks: the store paths and payloads an SBOM
/// names, from either format.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub format: String,
    pub store_paths: Vec<String>,
    /// (name, hex sha256)
    pub payloads: Vec<(String, String)>,
    pub crates: usize,
}

pub fn summarise(doc: &[u8]) -> Result<Summary, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    let mut s = Summary::default();
    if v["spdxVersion"].is_string() {
        s.format = v["spdxVersion"].as_str().unwrap_or_default().to_string();
        for p in v["packages"].as_array().into_iter().flatten() {
            let id = p["SPDXID"].as_str().unwrap_or_default();
            if id.starts_with("SPDXRef-Nix-") {
                if let Some(path) = p["sourceInfo"]
                    .as_str()
                    .and_then(|x| x.strip_prefix("Nix store path "))
                {
                    s.store_paths.push(path.to_string());
                }
            } else if id.starts_with("SPDXRef-Payload-") {
                let sum = p["checksums"][0]["checksumValue"]
                    .as_str()
                    .unwrap_or_default();
                s.payloads.push((
                    p["name"].as_str().unwrap_or_default().to_string(),
                    sum.to_string(),
                ));
            } else if id.starts_with("SPDXRef-Crate-") {
                s.crates += 1;
            }
        }
    } else if v["bomFormat"] == "CycloneDX" {
        s.format = format!(
            "CycloneDX-{}",
            v["specVersion"].as_str().unwrap_or_default()
        );
        for c in v["components"].as_array().into_iter().flatten() {
            let r = c["bom-ref"].as_str().unwrap_or_default();
            if r.starts_with("/nix/store/") {
                s.store_paths.push(r.to_string());
            } else if let Some(n) = r.strip_prefix("payload:") {
                let sum = c["hashes"][0]["content"].as_str().unwrap_or_default();
                s.payloads.push((n.to_string(), sum.to_string()));
            } else if r.starts_with("pkg:cargo/") {
                s.crates += 1;
            }
        }
    } else {
        return Err("neither SPDX nor CycloneDX".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_names_and_versions() {
        assert_eq!(
            name_version("/nix/store/abc-glibc-2.37-8"),
            ("glibc".into(), Some("2.37-8".into()))
        );
        assert_eq!(name_version("/nix/store/abc-hello"), ("hello".into(), None));
        assert_eq!(
            name_version("/nix/store/abc-xz-5.4.3-bin"),
            ("xz".into(), Some("5.4.3-bin".into()))
        );
        assert_eq!(
            name_version("abc-font-util-1.4.0"),
            ("font-util".into(), Some("1.4.0".into()))
        );
    }

    #[test]
    fn nar_hashes_in_every_form() {
        // The same hash in every form (base32 from `nix-hash --type sha256 --to-base32`).
        let hex = "15c723358ab50ed5be2f1f1658c30e3cad9f5a10b5c728d7fda1eff2024c8ebd";
        assert_eq!(nar_hash_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert_eq!(
            nar_hash_hex("sha256-FccjNYq1DtW+Lx8WWMMOPK2fWhC1xyjX/aHv8gJMjr0=").unwrap(),
            hex
        );
        assert_eq!(
            nar_hash_hex("sha256:1gcf9h1g5vx1zpbjiixm21d9zb9w1v1mh5hz5yzda3mmi8sj7iqm").unwrap(),
            hex
        );
        assert_eq!(nar_hash_hex(hex).unwrap(), hex);
        assert_eq!(nar_hash_hex("md5:x"), None);
    }

    #[test]
    fn crates_of_a_workspace_member_come_from_the_lock() {
        let lock = r#"
version = 4
[[package]]
name = "app"
version = "0.1.0"
dependencies = ["a", "b 2.0.0"]
[[package]]
name = "a"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"
[[package]]
name = "b"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
[[package]]
name = "b"
version = "2.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;
        let c = crates_in(lock, "app");
        let names: Vec<String> = c
            .iter()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect();
        assert_eq!(names, ["a@1.0.0", "app@0.1.0", "b@2.0.0"]);
        assert!(crates_in(lock, "nope").is_empty());
        // The real lock: hls-origin is a member with dependencies.
        assert!(crates_of("hls-origin").len() > 1);
    }
}
