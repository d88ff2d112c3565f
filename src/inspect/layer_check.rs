//! `inspect --verify` of one layer: decompress it (gzip or zstd by its magic bytes, or
//! plain), hash the tar stream (the diff_id) and check on the way through that it is a
//! well-formed tar — header checksums, sizes, the end-of-archive marker, known entry types —
//! and that no entry or hard link escapes the image root. The stream is checked as it
//! flows, never held whole.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::oci::tar;

/// Hashes the uncompressed stream while checking it is a well-formed tar whose entries stay
/// inside the image root.
struct TarCheck {
    hash: Sha256,
    pending: Vec<u8>,
    /// Data bytes (incl. padding) still to skip before the next header.
    skip: u64,
    /// Bytes of a PAX/GNU body to collect.
    collect: Option<(u8, u64)>,
    body: Vec<u8>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// A PAX `size` record for the next entry (files past 8 GiB).
    pax_size: Option<u64>,
    ended: bool,
    entries: u64,
    problems: Vec<String>,
}

fn escapes(p: &[u8]) -> bool {
    let s = String::from_utf8_lossy(p);
    let s = s.trim_start_matches("./");
    s.starts_with('/') || s.split('/').any(|c| c == "..")
}

impl TarCheck {
    fn new() -> Self {
        TarCheck {
            hash: Sha256::new(),
            pending: Vec::new(),
            skip: 0,
            collect: None,
            body: Vec::new(),
            long_name: None,
            long_link: None,
            pax_size: None,
            ended: false,
            entries: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        self.hash.update(data);
        while !data.is_empty() {
            if self.ended {
                if data.iter().any(|&b| b != 0) {
                    self.problem("data after the end-of-archive marker".into());
                }
                return;
            }
            if self.skip > 0 {
                let k = (self.skip.min(data.len() as u64)) as usize;
                if let Some((_, want)) = self.collect {
                    let take = (want as usize - self.body.len().min(want as usize)).min(k);
                    self.body.extend_from_slice(&data[..take]);
                }
                self.skip -= k as u64;
                data = &data[k..];
                if self.skip == 0 {
                    self.finish_body();
                }
                continue;
            }
            let need = tar::BLOCK - self.pending.len();
            let k = need.min(data.len());
            self.pending.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.pending.len() == tar::BLOCK {
                let block: [u8; tar::BLOCK] = self.pending[..].try_into().expect("one block");
                self.pending.clear();
                self.header(&block);
            }
        }
    }

    fn finish_body(&mut self) {
        if let Some((flag, _)) = self.collect.take() {
            let body = std::mem::take(&mut self.body);
            if flag == b'L' {
                self.long_name = Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec());
            } else if flag == b'K' {
                self.long_link = Some(body.split(|&b| b == 0).next().unwrap_or(&[]).to_vec());
            } else {
                match tar::parse_pax(&body) {
                    Ok(recs) => {
                        for (k, v) in recs {
                            match k.as_str() {
                                "path" => self.long_name = Some(v),
                                "linkpath" => self.long_link = Some(v),
                                "size" => {
                                    match std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok())
                                    {
                                        Some(n) => self.pax_size = Some(n),
                                        None => self.problem(format!(
                                            "PAX size record {:?} is not a number",
                                            String::from_utf8_lossy(&v)
                                        )),
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => self.problem(format!("PAX header: {e}")),
                }
            }
        }
    }

    fn header(&mut self, block: &[u8; tar::BLOCK]) {
        match tar::parse_block(block) {
            Ok(None) => self.ended = true,
            Err(e) => {
                self.problem(format!("entry {}: {e}", self.entries + 1));
                self.ended = true;
            }
            Ok(Some(h)) => {
                let size = match h.flag {
                    b'x' | b'L' | b'K' | b'g' => h.size,
                    _ => self.pax_size.take().unwrap_or(h.size),
                };
                let padded = size
                    .div_ceil(tar::BLOCK as u64)
                    .saturating_mul(tar::BLOCK as u64);
                match h.flag {
                    b'x' | b'L' | b'K' => {
                        self.collect = Some((h.flag, h.size));
                        self.skip = padded;
                        if padded == 0 {
                            self.finish_body();
                        }
                    }
                    b'g' => self.skip = padded,
                    flag => {
                        self.entries += 1;
                        let name = self.long_name.take().unwrap_or(h.name);
                        let link = self.long_link.take().unwrap_or(h.link);
                        if escapes(&name) {
                            self.problem(format!(
                                "entry {} escapes the image root",
                                String::from_utf8_lossy(&name)
                            ));
                        }
                        if flag == b'1' && escapes(&link) {
                            self.problem(format!(
                                "hard link {} → {} escapes the image root",
                                String::from_utf8_lossy(&name),
                                String::from_utf8_lossy(&link)
                            ));
                        }
                        if !matches!(flag, 0 | b'0'..=b'7') {
                            self.problem(format!(
                                "entry {}: unknown type {:?}",
                                String::from_utf8_lossy(&name),
                                flag as char
                            ));
                        }
                        // Only regular files carry data.
                        self.skip = if matches!(flag, 0 | b'0' | b'7') {
                            padded
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }

    fn done(mut self) -> (String, Vec<String>) {
        if !self.ended {
            self.problem("the tar has no end-of-archive marker (truncated?)".into());
        }
        if self.skip > 0 || !self.pending.is_empty() {
            self.problem("the tar ends inside an entry".into());
        }
        let d = format!(
            "sha256:{}",
            self.hash
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        (d, self.problems)
    }
}

impl Write for TarCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
    let mut check = TarCheck::new();
    let res = if head[..got].starts_with(&[0x1f, 0x8b]) {
        io::copy(&mut flate2::read::MultiGzDecoder::new(r), &mut check)
    } else if head[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(r).and_then(|mut d| io::copy(&mut d, &mut check))
    } else {
        let mut r = r;
        io::copy(&mut r, &mut check)
    };
    res.map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(check.done())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tar::EntryType;

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
}
