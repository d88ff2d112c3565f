//! `inspect --verify` of one layer: decompress it (gzip or zstd by its magic bytes, or
//! plain), hash the tar stream (the diff_id) and check on the way through that it is a
//! well-formed tar — header checksums, sizes, the end-of-archive marker, known entry types —
//! and that no entry or hard link escapes the image root. The stream is checked as it
//! flows, never held whole: the `tar` crate reads the entries, the checks are ours.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::oci::tar;

/// Passes the uncompressed stream through, hashing it (the diff_id) and counting its bytes;
/// a read error (a failing decompressor) is kept so it is not taken for a malformed tar.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    read: u64,
    failed: Option<String>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hash.update(&buf[..n]);
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.get_or_insert_with(|| e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// The problems found, at most 20 (a broken tar would otherwise name every block).
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, p: String) {
        if self.0.len() < 20 {
            self.0.push(p);
        }
    }
}

fn escapes(p: &[u8]) -> bool {
    let s = String::from_utf8_lossy(p);
    let s = s.trim_start_matches("./");
    s.starts_with('/') || s.split('/').any(|c| c == "..")
}

/// Checks one entry: its name and hard-link target stay in the root, its type is known,
/// its PAX `size` record (if any) is a number.
fn check_entry<R: Read>(entry: &mut ::tar::Entry<'_, R>, problems: &mut Problems) {
    let name = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&name);
    if escapes(&name) {
        problems.push(format!("entry {shown} escapes the image root"));
    }
    let flag = entry.header().entry_type().as_byte();
    if flag == b'1' {
        if let Some(link) = entry.link_name_bytes().filter(|l| escapes(l)) {
            problems.push(format!(
                "hard link {shown} → {} escapes the image root",
                String::from_utf8_lossy(&link)
            ));
        }
    }
    if !matches!(flag, 0 | b'0'..=b'7') {
        problems.push(format!("entry {shown}: unknown type {:?}", flag as char));
    }
    match entry.pax_extensions() {
        Ok(Some(exts)) => {
            for ext in exts {
                match ext {
                    Ok(ext) if ext.key_bytes() == b"size" => {
                        if ext
                            .value()
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                            .is_none()
                        {
                            problems.push(format!(
                                "PAX size record {:?} is not a number",
                                String::from_utf8_lossy(ext.value_bytes())
                            ));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("PAX header: {e}")),
                }
            }
        }
        Ok(None) => {}
        Err(e) => problems.push(format!("PAX header: {e}")),
    }
}

/// Walks the tar stream with the `tar` crate, checking each entry; what the crate takes for
/// a plain end (the stream ending at a header boundary), a missing end marker, truncation
/// inside an entry and bytes after the marker are told apart here by where the stream ended.
fn check_tar(r: impl Read) -> Result<(String, Vec<String>), String> {
    let mut archive = ::tar::Archive::new(Hashing {
        inner: r,
        hash: Sha256::new(),
        read: 0,
        failed: None,
    });
    let mut problems = Problems::default();
    // Where the header after the last entry read starts.
    let mut next_header = 0u64;
    let mut entries = 0u64;
    let mut failure = None;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        match entry {
            Ok(mut entry) => {
                next_header = entry.raw_file_position().saturating_add(
                    entry
                        .size()
                        .div_ceil(tar::BLOCK as u64)
                        .saturating_mul(tar::BLOCK as u64),
                );
                if !entry.header().entry_type().is_pax_global_extensions() {
                    entries += 1;
                    check_entry(&mut entry, &mut problems);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let mut stream = archive.into_inner();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    if let Some(e) = stream.failed.take() {
        return Err(format!("cannot decompress: {e}"));
    }
    let at_end = rest.is_empty();
    match failure {
        // Cut inside a header block or inside an entry's data.
        Some(_)
            if at_end && (stream.read % tar::BLOCK as u64 != 0 || stream.read < next_header) =>
        {
            problems.push("the tar has no end-of-archive marker (truncated?)".into());
            problems.push("the tar ends inside an entry".into());
        }
        Some(e) => problems.push(format!("entry {}: {e}", entries + 1)),
        // The stream ended where the next header should have been.
        None if stream.read == next_header => {
            problems.push("the tar has no end-of-archive marker (truncated?)".into())
        }
        None if rest.iter().any(|&b| b != 0) => {
            problems.push("data after the end-of-archive marker".into())
        }
        None => {}
    }
    let d = format!(
        "sha256:{}",
        stream
            .hash
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok((d, problems.0))
}

/// Decompresses a layer (by its magic bytes) into the checker; returns diff_id and problems.
pub(super) fn check_layer(mut r: impl Read) -> Result<(String, Vec<String>), String> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let k = r.read(&mut head[got..]).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        got += k;
    }
    let r = io::Cursor::new(head[..got].to_vec()).chain(r);
    if head[..got].starts_with(&[0x1f, 0x8b]) {
        check_tar(flate2::read::MultiGzDecoder::new(r))
    } else if head[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d =
            zstd::stream::read::Decoder::new(r).map_err(|e| format!("cannot decompress: {e}"))?;
        check_tar(d)
    } else {
        check_tar(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tar::EntryType;
    use std::io::Write;

    use crate::oci::tar::test_archive as tar_of;

    fn sha256(b: &[u8]) -> String {
        let d = Sha256::digest(b);
        format!(
            "sha256:{}",
            d.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    }

    #[test]
    fn a_well_formed_layer_has_its_diff_id_and_no_problems() {
        let t = tar_of(
            &[
                (b"etc/", b"", EntryType::Dir, b""),
                (b"etc/hosts", b"", EntryType::File, b"127.0.0.1 localhost\n"),
                (b"etc/h2", b"etc/hosts", EntryType::HardLink, b""),
            ],
            true,
        );
        let (d, problems) = check_layer(&t[..]).unwrap();
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(d, sha256(&t));
    }

    #[test]
    fn compressed_layers_give_the_uncompressed_diff_id() {
        let t = tar_of(&[(b"a", b"", EntryType::File, b"abc")], true);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&t[..], 1).unwrap();
        for layer in [gz, zst] {
            let (d, problems) = check_layer(&layer[..]).unwrap();
            assert_eq!((d, problems), (sha256(&t), vec![]));
        }
        assert!(check_layer(&[0x1f, 0x8b, 0, 0][..])
            .unwrap_err()
            .contains("cannot decompress"));
    }

    #[test]
    fn entries_and_hard_links_escaping_the_root_are_named() {
        let long = [b"x/".repeat(140).as_slice(), b"../../etc/passwd"].concat();
        let t = tar_of(
            &[
                (b"../etc/passwd", b"", EntryType::File, b"x"),
                (b"bin/sh", b"/etc/shadow", EntryType::HardLink, b""),
                (&long, b"", EntryType::File, b""),
                (b"lib/ok", b"../../x", EntryType::Symlink, b""),
            ],
            true,
        );
        let (_, problems) = check_layer(&t[..]).unwrap();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("entry ../etc/passwd escapes"));
        assert!(problems[1].contains("hard link bin/sh → /etc/shadow escapes"));
        assert!(
            problems[2].ends_with("../../etc/passwd escapes the image root"),
            "the PAX path is the name checked: {}",
            problems[2]
        );
    }

    #[test]
    fn truncated_and_corrupt_tars_are_named() {
        let t = tar_of(&[(b"a", b"", EntryType::File, b"abc")], false);
        let (_, problems) = check_layer(&t[..]).unwrap();
        assert_eq!(
            problems,
            ["the tar has no end-of-archive marker (truncated?)"]
        );
        let cut = &t[..tar::BLOCK + 100];
        let (_, problems) = check_layer(cut).unwrap();
        assert!(
            problems.iter().any(|p| p == "the tar ends inside an entry"),
            "{problems:?}"
        );
        let mut bad = tar_of(&[(b"a", b"", EntryType::File, b"abc")], true);
        bad[0] ^= 0x20; // the name changes, the stored checksum does not
        let (_, problems) = check_layer(&bad[..]).unwrap();
        assert!(problems[0].starts_with("entry 1: "), "{problems:?}");
        let mut trailing = tar_of(&[(b"a", b"", EntryType::File, b"abc")], true);
        trailing.extend_from_slice(&[1u8; 10]);
        let (_, problems) = check_layer(&trailing[..]).unwrap();
        assert_eq!(problems, ["data after the end-of-archive marker"]);
    }

    #[test]
    fn an_unknown_entry_type_is_named() {
        let mut t = tar_of(&[(b"odd", b"", EntryType::File, b"")], true);
        let mut h = ::tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&t[..tar::BLOCK]);
        h.set_entry_type(::tar::EntryType::new(b'Z')); // no tar type at all
        h.set_cksum();
        t[..tar::BLOCK].copy_from_slice(h.as_bytes());
        let (_, problems) = check_layer(&t[..]).unwrap();
        assert_eq!(problems, ["entry odd: unknown type 'Z'"]);
    }
}
