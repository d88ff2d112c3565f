//! Where the [`Tree`](super::Tree)'s paths live: their bytes packed end to end in chunks of
//! 64 KiB that are filled once and never reallocated, freed all together with the tree; and
//! in buffers written by a closure walker thread ([`PathBuffer`], one per store path) that
//! the tree adopts as chunks as they are.
//!
//! Why: a path of its own (`Box<[u8]>`) costs malloc's header and rounding besides its bytes
//! (~19 bytes on an average closure path of ~91), for every one of a big closure's entries,
//! for the whole build. Packed, a path costs its bytes. The chunks are fixed-size and never
//! grow, so no buffer is ever copied to a bigger one (growing one buffer by doubling was
//! tried: its old copies stayed on the heap and it cost more than it saved — see
//! docs/ARCHITECTURE.md, the memory a container build keeps). A chunk is 64 KiB, under glibc's mmap
//! threshold (128 KiB), so chunks come from the heap like the boxes they replace.
//!
//! The map's keys are [`ArenaPath`]s: one pointer (8 bytes, half a `Box<[u8]>`: the map holds
//! ~11 keys a node) to the path's length (LEB128: one byte below 128, two below 16384) and
//! bytes in a chunk. They stay valid while the arena lives, since a chunk's bytes never move and are never changed or freed
//! before the arena is. The tree keeps both side by side and never lets a key out (it hands
//! out `&[u8]` borrowed from itself), which is the whole of this module's safety argument.

use std::{borrow::Borrow, cmp::Ordering, fmt, ptr::NonNull};

/// Size of a chunk; a path longer than a quarter of it gets a chunk of its own, of its size.
const CHUNK: usize = 64 * 1024;

/// Chunks of path bytes, each filled to at most its capacity and never reallocated.
#[derive(Default)]
pub(super) struct PathArena {
    chunks: Vec<Vec<u8>>,
}

impl PathArena {
    /// Copies `bytes` into the arena: the key for them, valid while the arena lives.
    pub(super) fn store(&mut self, bytes: &[u8]) -> ArenaPath {
        let mut len = [0u8; 10];
        let len = leb128(bytes.len(), &mut len);
        let need = len.len() + bytes.len();
        let chunk = if need > CHUNK / 4 {
            // Inserted before the current chunk, so that chunk keeps being filled.
            let at = self.chunks.len().saturating_sub(1);
            self.chunks.insert(at, Vec::with_capacity(need));
            &mut self.chunks[at]
        } else {
            match self.chunks.last() {
                Some(c) if c.capacity() - c.len() >= need => {}
                _ => self.chunks.push(Vec::with_capacity(CHUNK)),
            }
            self.chunks.last_mut().expect("a chunk was just made")
        };
        debug_assert!(chunk.capacity() - chunk.len() >= need);
        let start = chunk.len();
        // Within the capacity: the buffer is not reallocated, earlier keys into it stay valid.
        chunk.extend_from_slice(len);
        chunk.extend_from_slice(bytes);
        // `Vec::as_mut_ptr` (not `chunk[start..]`, which would borrow the whole buffer
        // mutably) leaves the pointers of the keys already in this chunk valid.
        // SAFETY: `start` is within the chunk's initialised length.
        let ptr = unsafe { NonNull::new_unchecked(chunk.as_mut_ptr().add(start)) };
        ArenaPath { ptr }
    }

    /// Takes the paths of `buffer` as they are, as one more chunk (its bytes are not copied,
    /// and it is not filled further): a key for each offset its `push` returned is
    /// [`Adopted::key`].
    pub(super) fn adopt(&mut self, buffer: PathBuffer) -> Adopted {
        let mut bytes = buffer.bytes;
        // Before any key into it exists: this may still move the bytes.
        bytes.shrink_to_fit();
        let adopted = Adopted {
            base: NonNull::new(bytes.as_mut_ptr()).expect("a Vec's buffer is not null"),
            len: bytes.len(),
        };
        if !bytes.is_empty() {
            // Before the current chunk, so that chunk keeps being filled.
            let at = self.chunks.len().saturating_sub(1);
            self.chunks.insert(at, bytes);
        }
        adopted
    }

    /// Bytes the arena holds (its chunks' capacity), for tests and accounting.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }
}

/// Paths written away from the tree, in the arena's format (length, then bytes), to be taken
/// whole by [`PathArena::adopt`]: a walker thread writes a store path's paths here, and the
/// tree keeps the buffer instead of copying each path out of it.
#[derive(Default)]
pub(super) struct PathBuffer {
    bytes: Vec<u8>,
}

impl PathBuffer {
    pub(super) fn with_capacity(bytes: usize) -> PathBuffer {
        PathBuffer {
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Appends the path that is `parts` one after the other; its offset in the buffer.
    pub(super) fn push(&mut self, parts: &[&[u8]]) -> usize {
        let at = self.bytes.len();
        let mut len = [0u8; 10];
        let total = parts.iter().map(|p| p.len()).sum();
        self.bytes.extend_from_slice(leb128(total, &mut len));
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        at
    }
}

/// A [`PathBuffer`] taken by an arena: where its paths now are.
pub(super) struct Adopted {
    base: NonNull<u8>,
    len: usize,
}

impl Adopted {
    /// The key of the path the buffer's `push` put at `at`.
    pub(super) fn key(&self, at: usize) -> ArenaPath {
        assert!(at < self.len, "offset {at} is outside the adopted paths");
        // SAFETY: `at` is within the adopted buffer (checked), which the arena keeps.
        let ptr = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(at)) };
        ArenaPath { ptr }
    }
}

/// `n` in LEB128 (7 bits a byte, low first, the high bit set on all but the last), in `buf`.
fn leb128(mut n: usize, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = low;
            return &buf[..=i];
        }
        buf[i] = low | 0x80;
        i += 1;
    }
}

/// A path stored in a [`PathArena`]: compared and borrowed as its bytes. Only the
/// tree that owns the arena holds these (module doc).
#[derive(Clone, Copy)]
pub(super) struct ArenaPath {
    /// The path's length in LEB128, then its bytes.
    ptr: NonNull<u8>,
}

// SAFETY: an ArenaPath is a shared reference to bytes that are never written again, owned by
// an arena that lives beside it in the same Tree; sending or sharing the Tree sends or shares
// both.
unsafe impl Send for ArenaPath {}
unsafe impl Sync for ArenaPath {}

impl ArenaPath {
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `PathArena::store` wrote the length and then that many bytes from `ptr`, in
        // a chunk that is never reallocated, changed or freed while the arena lives, and the
        // arena outlives every key (module doc). The length is read up to its last byte (the
        // one without the high bit), which `store` wrote.
        unsafe {
            let mut p = self.ptr.as_ptr() as *const u8;
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = *p;
                p = p.add(1);
                len |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            std::slice::from_raw_parts(p, len)
        }
    }
}

impl Borrow<[u8]> for ArenaPath {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for ArenaPath {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for ArenaPath {}

impl PartialOrd for ArenaPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// As the bytes, as `[u8]` orders (so the map's order is the `Box<[u8]>` map's was).
impl Ord for ArenaPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl fmt::Debug for ArenaPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_valid_and_chunks_are_never_reallocated_as_the_arena_fills() {
        let mut arena = PathArena::default();
        let mut keys = Vec::new();
        let mut want = Vec::new();
        // Several chunks' worth of short paths, with a few longer than a quarter chunk.
        for i in 0..20_000u32 {
            let p = if i % 5000 == 17 {
                vec![b'x'; CHUNK / 4 + 1 + i as usize]
            } else {
                format!("nix/store/{i:08}-name/lib/file{i}").into_bytes()
            };
            keys.push(arena.store(&p));
            want.push(p);
        }
        for (k, w) in keys.iter().zip(&want) {
            assert_eq!(k.bytes(), &w[..]);
        }
        let long: usize = want.iter().map(Vec::len).filter(|&l| l > CHUNK / 4).sum();
        let short: usize = want.iter().map(Vec::len).filter(|&l| l <= CHUNK / 4).sum();
        let longest_short = want.iter().map(Vec::len).filter(|&l| l <= CHUNK / 4).max();
        // Long paths take exactly their size; short ones fill chunks, each left with less
        // room than the path that did not fit, and the last one partly used.
        // Each path's length takes a byte or two (three for the longest here).
        let lens = 3 * want.len();
        let slack = (short / CHUNK + 1) * (longest_short.unwrap_or(0) + 2) + CHUNK;
        assert!(arena.capacity() >= long + short);
        assert!(
            arena.capacity() <= long + short + lens + slack,
            "{}",
            arena.capacity()
        );
    }

    #[test]
    fn lengths_across_leb128_byte_boundaries_read_back() {
        let mut arena = PathArena::default();
        for len in [0, 1, 127, 128, 129, 16383, 16384, 16385, 300_000] {
            let p: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(arena.store(&p).bytes(), &p[..], "length {len}");
        }
        assert_eq!(std::mem::size_of::<ArenaPath>(), 8);
        assert_eq!(std::mem::size_of::<Option<ArenaPath>>(), 8);
    }

    #[test]
    fn keys_compare_and_borrow_as_their_bytes() {
        let mut arena = PathArena::default();
        let a = arena.store(b"a/b");
        let b = arena.store(b"a/b");
        let c = arena.store(b"a/b\xff");
        let e = arena.store(b"");
        assert_eq!(a, b);
        assert!(a < c && e < a);
        assert_eq!(Borrow::<[u8]>::borrow(&c), b"a/b\xff");
        let mut map = std::collections::BTreeMap::new();
        map.insert(c, 1);
        map.insert(a, 2);
        assert_eq!(map.get(&b"a/b"[..]), Some(&2));
        assert_eq!(
            map.keys().map(ArenaPath::bytes).collect::<Vec<_>>(),
            [&b"a/b"[..], b"a/b\xff"]
        );
    }
}
