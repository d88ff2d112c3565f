//! Reading an image without unpacking it: the index of an image tar (each member's data
//! offset and size, GNU long names and PAX `path`/`size` records honoured; read with the
//! `tar` crate, the truncation checks ours) or an OCI layout directory, and readers of one
//! named member. `inspect`, `push` and `sbom` read their SOURCE
//! through it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::error::BadInput;
use crate::oci::tar;

/// Reads named files out of an image tar or an OCI directory (`push` and `sbom` read
/// their SOURCE through it too).
pub(crate) enum Source {
    Tar {
        file: PathBuf,
        entries: BTreeMap<String, (u64, u64)>,
    },
    Dir(PathBuf),
}

impl Source {
    pub(crate) fn open(path: &Path) -> Result<(Source, Vec<String>)> {
        if path.is_dir() {
            return Ok((Source::Dir(path.to_path_buf()), Vec::new()));
        }
        let f = File::open(path)
            .map_err(|e| BadInput(format!("{}: cannot open: {e}", path.display())))?;
        let len = f.metadata()?.len();
        // The `tar` crate walks the headers (GNU long names, PAX `path` and `size` — past
        // 8 GiB octal cannot say the size — honoured) and seeks over the data; whether each
        // entry and the end-of-archive blocks are really in the file is checked here.
        let mut archive = ::tar::Archive::new(BufReader::new(f));
        let mut entries = BTreeMap::new();
        let mut problems = Vec::new();
        // Where the header after the last entry read starts.
        let mut next_header = 0u64;
        for entry in archive.entries_with_seek()? {
            let entry = match entry {
                Ok(entry) => entry,
                Err(_) if next_header + tar::BLOCK as u64 > len => break, // named below
                Err(e) if entries.is_empty() => {
                    return Err(
                        BadInput(format!("{}: not a tar archive ({e})", path.display())).into(),
                    );
                }
                Err(e) => {
                    problems.push(format!("archive header at byte {next_header}: {e}"));
                    break;
                }
            };
            let data_off = entry.raw_file_position();
            let size = entry.size();
            next_header = data_off.saturating_add(
                size.div_ceil(tar::BLOCK as u64)
                    .saturating_mul(tar::BLOCK as u64),
            );
            if next_header > len {
                problems.push(format!(
                    "archive entry {} runs past the end of the file",
                    String::from_utf8_lossy(&entry.path_bytes())
                ));
                break;
            }
            if entry.header().entry_type() == ::tar::EntryType::Regular {
                let name = String::from_utf8_lossy(&entry.path_bytes())
                    .trim_start_matches("./")
                    .to_string();
                entries.insert(name, (data_off, size));
            }
        }
        if problems.is_empty() && next_header + tar::BLOCK as u64 > len {
            problems.push(format!(
                "archive ends at byte {next_header} without the end-of-archive blocks"
            ));
        }
        Ok((
            Source::Tar {
                file: path.to_path_buf(),
                entries,
            },
            problems,
        ))
    }

    pub(crate) fn size(&self, name: &str) -> Option<u64> {
        match self {
            Source::Tar { entries, .. } => entries.get(name).map(|e| e.1),
            Source::Dir(d) => std::fs::metadata(d.join(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        }
    }

    pub(crate) fn reader(&self, name: &str) -> Result<Option<Box<dyn Read>>> {
        Ok(match self {
            Source::Tar { file, entries } => match entries.get(name) {
                Some(&(off, size)) => {
                    let mut f = File::open(file)?;
                    f.seek(SeekFrom::Start(off))?;
                    Some(Box::new(BufReader::with_capacity(1 << 20, f.take(size))))
                }
                None => None,
            },
            Source::Dir(d) => match File::open(d.join(name)) {
                Ok(f) => Some(Box::new(BufReader::with_capacity(1 << 20, f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// A reader of `name` from byte `offset` on (push resumes and chunks with it).
    pub(crate) fn open_at(&self, name: &str, offset: u64) -> io::Result<Box<dyn Read>> {
        match self {
            Source::Tar { file, entries } => {
                let &(off, size) = entries.get(name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} is not in the archive"),
                    )
                })?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(off + offset.min(size)))?;
                Ok(Box::new(BufReader::with_capacity(
                    1 << 20,
                    f.take(size - offset.min(size)),
                )))
            }
            Source::Dir(d) => {
                let mut f = File::open(d.join(name))?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
            }
        }
    }

    /// The raw bytes of a small file (manifest, config), `None` when absent.
    pub(crate) fn read_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.reader(name)? {
            Some(mut r) => {
                let mut b = Vec::new();
                r.read_to_end(&mut b)?;
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn read_json(&self, name: &str) -> Result<Option<Value>> {
        match self.reader(name)? {
            Some(mut r) => {
                let mut b = Vec::new();
                r.read_to_end(&mut b)?;
                Ok(Some(
                    serde_json::from_slice(&b)
                        .with_context(|| format!("{name}: not valid JSON"))?,
                ))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn blob_names(&self) -> Vec<String> {
        match self {
            Source::Tar { entries, .. } => entries
                .keys()
                .filter(|k| k.starts_with("blobs/"))
                .cloned()
                .collect(),
            Source::Dir(d) => {
                let mut v = Vec::new();
                if let Ok(algs) = std::fs::read_dir(d.join("blobs")) {
                    for a in algs.flatten() {
                        if let Ok(files) = std::fs::read_dir(a.path()) {
                            for f in files.flatten() {
                                v.push(format!(
                                    "blobs/{}/{}",
                                    a.file_name().to_string_lossy(),
                                    f.file_name().to_string_lossy()
                                ));
                            }
                        }
                    }
                }
                v.sort();
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::tar::EntryType;

    /// Writes an outer image tar holding `members` (name, data) and returns its path.
    fn image_tar(dir: &Path, members: &[(&str, &[u8])], end: bool) -> PathBuf {
        let members: Vec<tar::TestMember> = members
            .iter()
            .map(|(n, d)| (n.as_bytes(), &b""[..], EntryType::File, *d))
            .collect();
        let p = dir.join("image.tar");
        std::fs::write(&p, tar::test_archive(&members, end)).unwrap();
        p
    }

    #[test]
    fn members_of_an_image_tar_are_read_by_name() {
        let d = tempfile::tempdir().unwrap();
        let long = format!("blobs/sha256/{}", "a".repeat(200));
        let p = image_tar(
            d.path(),
            &[
                ("manifest.json", br#"[{"Config":"c"}]"#),
                ("blobs/sha256/0123", b"0123456789"),
                (&long, b"long name"),
            ],
            true,
        );
        let (src, problems) = Source::open(&p).unwrap();
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(src.size("blobs/sha256/0123"), Some(10));
        assert_eq!(src.size("missing"), None);
        let v = src.read_json("manifest.json").unwrap().unwrap();
        assert_eq!(v[0]["Config"], "c");
        let mut tail = String::new();
        src.open_at("blobs/sha256/0123", 6)
            .unwrap()
            .read_to_string(&mut tail)
            .unwrap();
        assert_eq!(tail, "6789");
        assert_eq!(src.read_bytes(&long).unwrap().unwrap(), b"long name");
        assert_eq!(
            src.blob_names(),
            vec!["blobs/sha256/0123".to_string(), long.clone()]
        );
        assert!(src.read_bytes("missing").unwrap().is_none());
        assert_eq!(
            src.open_at("missing", 0).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn a_file_that_is_not_a_tar_is_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar");
        std::fs::write(&p, vec![b'x'; 2048]).unwrap();
        let e = Source::open(&p).err().unwrap();
        assert!(e.is::<BadInput>(), "{e}");
        assert!(e.to_string().contains("not a tar archive"), "{e}");
        let e = Source::open(&d.path().join("absent.tar")).err().unwrap();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }

    #[test]
    fn a_truncated_tar_is_read_as_far_as_it_goes_with_the_problem_named() {
        let d = tempfile::tempdir().unwrap();
        let p = image_tar(d.path(), &[("a", b"first"), ("b", b"second")], false);
        let (src, problems) = Source::open(&p).unwrap();
        assert_eq!(src.read_bytes("b").unwrap().unwrap(), b"second");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("without the end-of-archive blocks"));
        // Cut inside the second member's data.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..3 * tar::BLOCK + 3]).unwrap();
        let (src, problems) = Source::open(&p).unwrap();
        assert!(src.size("b").is_none());
        assert!(
            problems[0].contains("archive entry b runs past the end"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_oci_directory_is_read_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::fs::write(d.path().join("index.json"), b"{\"schemaVersion\":2}").unwrap();
        std::fs::write(d.path().join("blobs/sha256/ff"), b"blob").unwrap();
        let (src, problems) = Source::open(d.path()).unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            src.read_json("index.json").unwrap().unwrap()["schemaVersion"],
            2
        );
        assert_eq!(src.blob_names(), ["blobs/sha256/ff"]);
        assert_eq!(src.size("blobs/sha256/ff"), Some(4));
        assert!(src.reader("nothing").unwrap().is_none());
    }
}
