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
use crate::oci::tar;
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
    mut r: impl Read,
    hash: &std::collections::BTreeSet<String>,
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    use sha2::Digest;
    let mut names = Vec::new();
    let mut sums = BTreeMap::new();
    let mut block = [0u8; tar::BLOCK];
    let mut long: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        if r.read_exact(&mut block).is_err() {
            break;
        }
        let Some(mut h) = tar::parse_block(&block)? else {
            break;
        };
        if !matches!(h.flag, b'x' | b'L') {
            h.size = pax_size.take().unwrap_or(h.size);
        }
        let padded = h.size.div_ceil(tar::BLOCK as u64) * tar::BLOCK as u64;
        if matches!(h.flag, b'x' | b'L') {
            let mut body = Vec::new();
            (&mut r)
                .take(padded)
                .read_to_end(&mut body)
                .map_err(|e| e.to_string())?;
            body.truncate(h.size as usize);
            long = if h.flag == b'x' {
                let recs = tar::parse_pax(&body)?;
                pax_size = pax_size_of(&recs);
                recs.into_iter().find(|(k, _)| k == "path").map(|(_, v)| v)
            } else {
                Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec())
            };
            continue;
        }
        let name = String::from_utf8_lossy(long.take().as_deref().unwrap_or(&h.name))
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if (h.flag == b'0' || h.flag == 0) && hash.contains(&name) {
            let mut d = sha2::Sha256::new();
            let mut left = h.size;
            let mut buf = vec![0u8; 1 << 16];
            while left > 0 {
                let n = (left as usize).min(buf.len());
                r.read_exact(&mut buf[..n]).map_err(|e| e.to_string())?;
                d.update(&buf[..n]);
                left -= n as u64;
            }
            io::copy(&mut (&mut r).take(padded - h.size), &mut io::sink())
                .map_err(|e| e.to_string())?;
            sums.insert(
                name.clone(),
                d.finalize().iter().map(|x| format!("{x:02x}")).collect(),
            );
        } else {
            io::copy(&mut (&mut r).take(padded), &mut io::sink()).map_err(|e| e.to_string())?;
        }
        names.push(name);
    }
    Ok((names, sums))
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

fn pax_size_of(recs: &[(String, Vec<u8>)]) -> Option<u64> {
    recs.iter()
        .find(|(k, _)| k == "size")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
}

/// The first regular file of `wants` (no leading `/`) in one layer tar: (its index in
/// `wants`, its bytes).
pub(crate) fn find_in_layer(
    mut r: impl Read,
    wants: &[&str],
) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut block = [0u8; tar::BLOCK];
    let mut long: Option<Vec<u8>> = None;
    // A PAX `size` record: the next entry's real size (the writer emits one past 8 GiB).
    let mut pax_size: Option<u64> = None;
    loop {
        if r.read_exact(&mut block).is_err() {
            return Ok(None);
        }
        let Some(mut h) = tar::parse_block(&block)? else {
            return Ok(None);
        };
        if !matches!(h.flag, b'x' | b'L') {
            h.size = pax_size.take().unwrap_or(h.size);
        }
        let padded = h.size.div_ceil(tar::BLOCK as u64) * tar::BLOCK as u64;
        let mut body = Vec::new();
        let hit = if h.flag == b'0' || h.flag == 0 {
            let name = long.as_deref().unwrap_or(&h.name);
            let name = String::from_utf8_lossy(name);
            wants
                .iter()
                .position(|w| name.trim_start_matches("./") == *w)
        } else {
            None
        };
        let take_body = matches!(h.flag, b'x' | b'L') || hit.is_some();
        if take_body {
            (&mut r)
                .take(padded)
                .read_to_end(&mut body)
                .map_err(|e| e.to_string())?;
            body.truncate(h.size as usize);
        } else {
            io::copy(&mut (&mut r).take(padded), &mut io::sink()).map_err(|e| e.to_string())?;
        }
        match h.flag {
            b'x' => {
                let recs = tar::parse_pax(&body)?;
                pax_size = pax_size_of(&recs);
                long = recs.into_iter().find(|(k, _)| k == "path").map(|(_, v)| v);
            }
            b'L' => long = Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec()),
            _ => {
                if let Some(i) = hit {
                    return Ok(Some((i, body)));
                }
                long = None;
            }
        }
    }
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
