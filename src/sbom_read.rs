//! Reading an image's SBOM and files out of its layers (a container tar or OCI directory
//! opened as an [`crate::oci::source::Source`]): used by `imgbuild sbom`, `push` (the SBOM it
//! attaches as a referrer) and `inspect`.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::error::BadInput;
use crate::oci::source::Source;
use crate::sbom::SbomFormat;

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// A decompressing reader for a layer of `media_type`.
pub(crate) fn decompress<'a>(
    r: Box<dyn Read + 'a>,
    media_type: &str,
) -> io::Result<Box<dyn Read + 'a>> {
    layer_reader(r, media_type)
}

/// Every entry name of a layer tar, and the hex sha256 of the regular files in `hash`.
pub(crate) fn scan_layer(
    r: impl Read,
    hash: &std::collections::BTreeSet<String>,
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    use sha2::Digest;
    let mut names = Vec::new();
    let mut sums = BTreeMap::new();
    let mut archive = ::tar::Archive::new(r);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry_name(&entry).trim_end_matches('/').to_string();
        if entry.header().entry_type() == ::tar::EntryType::Regular && hash.contains(&name) {
            let mut d = sha2::Sha256::new();
            copy_whole(&mut entry, &mut d, &name)?;
            sums.insert(
                name.clone(),
                d.finalize().iter().map(|x| format!("{x:02x}")).collect(),
            );
        }
        names.push(name);
    }
    Ok((names, sums))
}

/// An entry's name as the image holds it (GNU long name or PAX `path` when there is one),
/// without a leading `./`.
fn entry_name<R: Read>(entry: &::tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes())
        .trim_start_matches("./")
        .to_string()
}

/// Copies all of an entry's data, failing when the tar ends before it does.
fn copy_whole<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    out: &mut impl io::Write,
    name: &str,
) -> Result<(), String> {
    let want = entry.size();
    let got = io::copy(entry, out).map_err(|e| e.to_string())?;
    if got != want {
        return Err(format!(
            "entry {name} is cut short: {got} of {want} bytes (truncated tar)"
        ));
    }
    Ok(())
}

fn layer_reader<'a>(r: Box<dyn Read + 'a>, media_type: &str) -> io::Result<Box<dyn Read + 'a>> {
    Ok(
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Box::new(flate2::read::MultiGzDecoder::new(r))
        } else if media_type.ends_with("+zstd") {
            Box::new(zstd::Decoder::new(r)?)
        } else {
            r
        },
    )
}

/// The first regular file of `wants` (no leading `/`) in one layer tar: (its index in
/// `wants`, its bytes).
pub(crate) fn find_in_layer(
    r: impl Read,
    wants: &[&str],
) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut archive = ::tar::Archive::new(r);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if entry.header().entry_type() != ::tar::EntryType::Regular {
            continue;
        }
        let name = entry_name(&entry);
        if let Some(i) = wants.iter().position(|w| name == *w) {
            let mut body = Vec::new();
            copy_whole(&mut entry, &mut body, &name)?;
            return Ok(Some((i, body)));
        }
    }
    Ok(None)
}

/// The SBOM an image holds: (format, bytes). imgbuild puts it in the image's last layer,
/// which is all that is read (an image without one costs one small read, not a scan).
pub(crate) fn from_image(path: &Path, src: &Source) -> Result<Option<(SbomFormat, Vec<u8>)>> {
    let index = src.read_json("index.json")?.ok_or_else(|| {
        BadInput(format!(
            "{}: no index.json: not an OCI-layout image",
            path.display()
        ))
    })?;
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let m: Value = src
        .read_json(&blob_name(&md))?
        .ok_or_else(|| BadInput(format!("{}: manifest {md} is missing", path.display())))?;
    let Some(l) = m["layers"].as_array().and_then(|l| l.last()) else {
        return Ok(None);
    };
    let d = l["digest"].as_str().unwrap_or_default();
    let mt = l["mediaType"].as_str().unwrap_or_default();
    let r = src
        .open_at(&blob_name(d), 0)
        .with_context(|| format!("layer {d}"))?;
    let r = layer_reader(r, mt)?;
    let formats = [SbomFormat::Spdx, SbomFormat::Cyclonedx];
    let wants = [crate::sbom::SPDX_PATH, crate::sbom::CYCLONEDX_PATH];
    Ok(find_in_layer(r, &wants)
        .map_err(|e| anyhow::anyhow!("{}: layer {d}: {e}", path.display()))?
        .map(|(i, b)| (formats[i], b)))
}
