//! Deterministic tar headers: ustar with the name split into the `prefix` + `name` fields
//! where it fits (as Go's archive/tar does), a PAX extended header only for what ustar cannot
//! hold (long names or link targets, ids above 2097151); sizes of 8 GiB and more use GNU
//! base-256 in the size field, so a header without a long name is always one block. No atime/ctime, no PAX time records,
//! empty user and group names. The same input always gives the same bytes.

use std::io::{self, Write};

pub const BLOCK: usize = 512;

/// What a tar entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    File,
    HardLink,
    Symlink,
    CharDevice,
    Dir,
}

impl EntryType {
    fn flag(self) -> u8 {
        match self {
            EntryType::File => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::CharDevice => b'3',
            EntryType::Dir => b'5',
        }
    }
}

/// One header's worth of metadata. `name` is the raw path inside the archive (directories
/// end with `/`); `link` the hard-link or symlink target.
#[derive(Clone, Debug)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
}

const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;

fn octal(field: &mut [u8], v: u64) {
    // Zero-padded octal, NUL-terminated, filling the field.
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// Splits a long name into ustar prefix (≤155) and name (≤100) at a `/`, taking the longest
/// prefix that fits (Go's `splitUSTARPath`). `None` when no split fits.
pub fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = name.len();
    if len <= 100 {
        return Some((&[], name));
    }
    let mut l = len;
    if l > 156 {
        l = 156;
    } else if name[l - 1] == b'/' {
        l -= 1;
    }
    let i = name[..l].iter().rposition(|&b| b == b'/')?;
    let (plen, nlen) = (i, len - i - 1);
    if i == 0 || nlen > 100 || nlen == 0 || plen > 155 {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "%d %s=%s\n" where the length counts itself.
    let body = key.len() + value.len() + 3; // space, '=', '\n'
    let mut n = body + 1;
    loop {
        let total = body + n.to_string().len();
        if total == n {
            break;
        }
        n = total;
    }
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(h: &Header, name: &[u8], prefix: &[u8], link: &[u8], size: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], h.mode as u64 & 0o7777);
    octal(&mut b[108..116], (h.uid as u64).min(MAX_OCTAL_7));
    octal(&mut b[116..124], (h.gid as u64).min(MAX_OCTAL_7));
    if size > MAX_OCTAL_11 {
        // GNU base-256: high bit set, big-endian binary (read by GNU tar, Go, libarchive).
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    } else {
        octal(&mut b[124..136], size);
    }
    octal(&mut b[136..148], h.mtime.min(MAX_OCTAL_11));
    b[156] = h.kind.flag();
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if h.kind == EntryType::CharDevice {
        octal(&mut b[329..337], h.dev.0 as u64);
        octal(&mut b[337..345], h.dev.1 as u64);
    }
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    // Checksum: sum of all bytes with the checksum field as spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| x as u32).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// The header block(s) of an entry: an optional PAX header + its records, then the ustar
/// header. Appends to `out`.
pub fn header_bytes(h: &Header, out: &mut Vec<u8>) {
    let mut pax = Vec::new();
    let (prefix, name) = match split_ustar(h.name) {
        Some(x) => x,
        None => {
            pax_record(&mut pax, "path", h.name);
            // The ustar name field keeps a truncated, deterministic stand-in.
            (&[][..], &h.name[..100])
        }
    };
    let link = if h.link.len() > 100 {
        pax_record(&mut pax, "linkpath", h.link);
        &h.link[..100]
    } else {
        h.link
    };
    if h.uid as u64 > MAX_OCTAL_7 {
        pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
    }
    if h.gid as u64 > MAX_OCTAL_7 {
        pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
    }
    if !pax.is_empty() {
        let ph = Header {
            name: b"././@PaxHeader",
            link: b"",
            kind: EntryType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: pax.len() as u64,
            mtime: h.mtime,
            dev: (0, 0),
        };
        let mut blk = ustar_block(&ph, ph.name, &[], &[], pax.len() as u64);
        blk[156] = b'x';
        // Recompute the checksum for the changed type flag.
        blk[148..156].copy_from_slice(b"        ");
        let sum: u32 = blk.iter().map(|&x| x as u32).sum();
        blk[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&blk);
        out.extend_from_slice(&pax);
        out.resize(out.len() + padding(pax.len() as u64), 0);
    }
    out.extend_from_slice(&ustar_block(h, name, prefix, link, h.size));
}

/// Zero bytes needed after `len` bytes of data to reach a block boundary.
pub fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

/// Writes the two zero blocks that end an archive.
pub fn finish(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK * 2])
}

/// Parsed header fields, for tests that check the exact header bytes the writer emits (the
/// image readers of `inspect`, `push` and `sbom` use the `tar` crate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub flag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        // base-256
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn cstr(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    &f[..end]
}

/// Parses one ustar header block; `Err` names what is wrong. `Ok(None)` for a zero block.
pub fn parse_block(b: &[u8; BLOCK]) -> Result<Option<Parsed>, String> {
    if b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    let want = parse_octal(&b[148..156]).ok_or("unreadable checksum field")?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                x as u64
            }
        })
        .sum();
    if sum != want {
        return Err(format!("header checksum {want} does not match {sum}"));
    }
    let num = |r: std::ops::Range<usize>, what: &str| {
        parse_octal(&b[r]).ok_or_else(|| format!("unreadable {what} field"))
    };
    let mut name = Vec::new();
    if &b[257..262] == b"ustar" {
        let prefix = cstr(&b[345..500]);
        if !prefix.is_empty() {
            name.extend_from_slice(prefix);
            name.push(b'/');
        }
    }
    name.extend_from_slice(cstr(&b[..100]));
    Ok(Some(Parsed {
        name,
        link: cstr(&b[157..257]).to_vec(),
        flag: b[156],
        mode: num(100..108, "mode")? as u32,
        uid: num(108..116, "uid")?,
        gid: num(116..124, "gid")?,
        size: num(124..136, "size")?,
        mtime: num(136..148, "mtime")?,
    }))
}

/// Reads PAX records (`path`, `linkpath`, `size`, …) from an extended header body.
pub fn parse_pax(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without length")?;
        let n: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad PAX record length")?;
        if n > rest.len() || n <= sp + 1 || rest[n - 1] != b'\n' {
            return Err("truncated PAX record".into());
        }
        let rec = &rest[sp + 1..n - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[n..];
    }
    Ok(out)
}

/// One member of [`test_archive`]: name, link target, kind, data.
#[cfg(test)]
pub type TestMember<'a> = (&'a [u8], &'a [u8], EntryType, &'a [u8]);

/// An archive of `members` as the writers make them (mode 0644, owner 0, mtime 1), ended by
/// the two zero blocks when `end`. For the tests of the readers.
#[cfg(test)]
pub fn test_archive(members: &[TestMember], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, link, kind, data) in members {
        let h = Header {
            name,
            link,
            kind: *kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: data.len() as u64,
            mtime: 1,
            dev: (0, 0),
        };
        header_bytes(&h, &mut out);
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64), 0);
    }
    if end {
        finish(&mut out).unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(name: &[u8], link: &[u8]) -> Header<'static> {
        Header {
            name: Box::leak(name.to_vec().into_boxed_slice()),
            link: Box::leak(link.to_vec().into_boxed_slice()),
            kind: EntryType::File,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1,
            dev: (0, 0),
        }
    }

    #[test]
    fn store_paths_split_into_prefix_and_name_without_pax() {
        let name = b"nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-2.39-52/lib/gconv/gconv-modules.d/gconv-modules-extra.conf";
        assert!(name.len() > 100);
        let mut out = Vec::new();
        header_bytes(&hdr(name, b""), &mut out);
        assert_eq!(out.len(), BLOCK, "one ustar block, no PAX header");
        let p = parse_block(out[..BLOCK].try_into().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(p.name, name);
        assert_eq!((p.mode, p.uid, p.size, p.mtime), (0o755, 1000, 5, 1));
    }

    #[test]
    fn names_that_cannot_split_get_a_pax_path_record() {
        let long = [b'a'; 120];
        let mut name = b"dir/".to_vec();
        name.extend_from_slice(&long);
        let mut out = Vec::new();
        header_bytes(&hdr(&name, &[b'l'; 150]), &mut out);
        assert_eq!(out.len(), BLOCK * 3);
        let ph = parse_block(out[..BLOCK].try_into().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(ph.flag, b'x');
        let recs = parse_pax(&out[BLOCK..BLOCK + ph.size as usize]).unwrap();
        assert_eq!(recs[0], ("path".to_string(), name.clone()));
        assert_eq!(recs[1], ("linkpath".to_string(), vec![b'l'; 150]));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'x'; 93]);
        assert!(
            v.starts_with(b"103 path="),
            "{}",
            String::from_utf8_lossy(&v)
        );
        assert_eq!(v.len(), 103);
    }

    #[test]
    fn huge_sizes_stay_in_one_block_as_base_256() {
        let mut h = hdr(b"blobs/sha256/x", b"");
        h.size = 9 << 30;
        let mut out = Vec::new();
        header_bytes(&h, &mut out);
        assert_eq!(out.len(), BLOCK);
        let p = parse_block(out[..BLOCK].try_into().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(p.size, 9 << 30);
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut out = Vec::new();
        header_bytes(&hdr(b"etc/passwd", b""), &mut out);
        out[3] ^= 1;
        assert!(parse_block(out[..BLOCK].try_into().unwrap()).is_err());
    }
}
