//! String keys numbered in first-seen order, for keyed aggregates and word counts.
//!
//! An open-addressing table (linear probing, at most 3/4 full) of 16-byte entries that hold what
//! a probe compares: the key's first 8 bytes, its length and 24 bits of its hash, next to its
//! slot. A hit on a key of up to 8 bytes (most words) reads one entry and nothing else; longer
//! keys are compared with their bytes in one contiguous key arena (no allocation per key). Word
//! spans are looked up lowercase in place when they are ASCII (`| 0x20` on every byte read), so
//! the common word is neither copied nor lowercased into a buffer. The hash is wyhash's
//! short-input path (one 128-bit multiply for keys up to 8 bytes); it is not DoS-resistant, so a
//! hostile input can make lookups slow but never wrong.

use crate::batch::{StrBuilder, Strs};
use crate::error::NResult;
use crate::tokenize::{for_each_word_span, is_ascii_word, lower_word};

const S0: u64 = 0xa076_1d64_78bd_642f;
const S1: u64 = 0xe703_7ed1_a0b4_28db;
const S2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Smallest table (entries); must be a power of two.
const MIN_TABLE: usize = 1024;

#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The 8 bytes at `i`, with every byte's 0x20 bit set when `LOWER` (ASCII letters to lowercase).
#[inline]
fn read8<const LOWER: bool>(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8])) | if LOWER { 0x2020_2020_2020_2020 } else { 0 }
}

#[inline]
fn read4<const LOWER: bool>(b: &[u8], i: usize) -> u64 {
    (u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4])) | if LOWER { 0x2020_2020 } else { 0 }) as u64
}

/// Bytes 0, n/2 and n-1 of a key of 1 to 3 bytes (every byte of it).
#[inline]
fn read3<const LOWER: bool>(b: &[u8]) -> u64 {
    let n = b.len();
    (((b[0] as u64) << 16) | ((b[n >> 1] as u64) << 8) | b[n - 1] as u64) | if LOWER { 0x20_2020 } else { 0 }
}

/// The 64-bit hash of `b` (wyhash's construction; reads every byte of `b`). With `LOWER`, the
/// hash of `b` with every byte's 0x20 bit set: for an ASCII word, the hash of its lowercase form.
#[inline]
fn hash<const LOWER: bool>(b: &[u8]) -> u64 {
    let n = b.len();
    let mut seed = S0;
    let (a, c) = if n <= 16 {
        if n >= 4 {
            let q = (n >> 3) << 2;
            ((read4::<LOWER>(b, 0) << 32) | read4::<LOWER>(b, q), (read4::<LOWER>(b, n - 4) << 32) | read4::<LOWER>(b, n - 4 - q))
        } else if n > 0 {
            (read3::<LOWER>(b), 0)
        } else {
            (0, 0)
        }
    } else {
        let mut i = 0;
        while n - i > 16 {
            seed = mum(read8::<LOWER>(b, i) ^ S1, read8::<LOWER>(b, i + 8) ^ seed);
            i += 16;
        }
        (read8::<LOWER>(b, n - 16), read8::<LOWER>(b, n - 8))
    };
    mum(S1 ^ n as u64, mum(a ^ S1, c ^ seed ^ S2))
}

/// The hash of a key of at most 8 bytes from its bytes zero-padded to 8 (`head`) and its length.
#[inline]
fn hash_short(head: u64, n: usize) -> u64 {
    mum(head ^ S1, (n as u64) ^ S2)
}

/// The first 8 bytes of `b`, zero-padded.
#[inline]
fn head_of(b: &[u8]) -> u64 {
    if b.len() >= 8 {
        return read8::<false>(b, 0);
    }
    let mut pad = [0u8; 8];
    pad[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(pad)
}

/// The hash of key `b` (any bytes), as the index computes it.
#[cfg(test)]
fn hash_bytes(b: &[u8]) -> u64 {
    if b.len() <= 8 {
        hash_short(head_of(b), b.len())
    } else {
        hash::<false>(b)
    }
}

/// True if `key` equals `w` (with `LOWER`: `w` with every byte's 0x20 bit set). Overlapping
/// reads cover every byte, so short keys need no library call.
#[inline]
fn same<const LOWER: bool>(key: &[u8], w: &[u8]) -> bool {
    let n = key.len();
    if n != w.len() {
        return false;
    }
    if n > 16 {
        let mut i = 0;
        while i + 8 < n {
            if read8::<false>(key, i) != read8::<LOWER>(w, i) {
                return false;
            }
            i += 8;
        }
        read8::<false>(key, n - 8) == read8::<LOWER>(w, n - 8)
    } else if n >= 8 {
        read8::<false>(key, 0) == read8::<LOWER>(w, 0) && read8::<false>(key, n - 8) == read8::<LOWER>(w, n - 8)
    } else if n >= 4 {
        read4::<false>(key, 0) == read4::<LOWER>(w, 0) && read4::<false>(key, n - 4) == read4::<LOWER>(w, n - 4)
    } else {
        n == 0 || read3::<false>(key) == read3::<LOWER>(w)
    }
}

/// One table entry: what a probe compares, and the slot. Slot 0 marks an empty entry.
#[derive(Clone, Copy, Default)]
struct Entry {
    /// The key's first 8 bytes, zero-padded.
    head: u64,
    /// The key's length (capped at 255) in the top 8 bits, 24 bits of its hash below.
    len_tag: u32,
    /// `slot + 1`.
    slot: u32,
}

#[inline]
fn len_tag(n: usize, h: u64) -> u32 {
    ((n.min(255) as u32) << 24) | (h as u32 & 0x00ff_ffff)
}

/// String keys numbered 0, 1, 2 … in the order first seen.
pub struct StrIndex {
    table: Vec<Entry>,
    /// `64 - log2(table.len())`: the entry of a hash is its top bits.
    shift: u32,
    /// Every key's hash, by slot, to grow the table without hashing again.
    hashes: Vec<u64>,
    keys: StrBuilder,
}

impl Default for StrIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl StrIndex {
    pub fn new() -> Self {
        StrIndex {
            table: vec![Entry::default(); MIN_TABLE],
            shift: 64 - MIN_TABLE.trailing_zeros(),
            hashes: Vec::new(),
            keys: StrBuilder::with_capacity(0, 0),
        }
    }

    /// The slot of `key` and whether it was just added (as the last slot).
    #[inline]
    pub fn slot(&mut self, key: &str) -> (usize, bool) {
        let b = key.as_bytes();
        let head = head_of(b);
        let h = if b.len() <= 8 { hash_short(head, b.len()) } else { hash::<false>(b) };
        self.find::<false>(b, head, h)
    }

    /// The slot of the lowercase form of the word `text[a..b]` (a run of word characters, see
    /// [`crate::tokenize`]) and whether it was just added. An ASCII word is hashed and compared
    /// lowercase in place; any other is lowercased into `scratch` first.
    #[inline(always)]
    pub fn slot_of_word(&mut self, text: &str, a: usize, b: usize, scratch: &mut Vec<u8>) -> (usize, bool) {
        let bytes = text.as_bytes();
        let n = b - a;
        if n <= 8 && a + 8 <= bytes.len() {
            // One unaligned load covers the word: mask it to the word's bytes (n >= 1).
            let mask = u64::MAX >> (64 - 8 * n as u32);
            let raw = read8::<false>(bytes, a) & mask;
            if raw & 0x8080_8080_8080_8080 == 0 {
                let head = raw | (0x2020_2020_2020_2020 & mask);
                return self.find::<true>(&bytes[a..b], head, hash_short(head, n));
            }
        } else if n > 8 && is_ascii_word(&bytes[a..b]) {
            let w = &bytes[a..b];
            return self.find::<true>(w, read8::<true>(w, 0), hash::<true>(w));
        }
        scratch.clear();
        lower_word(&text[a..b], scratch);
        let head = head_of(scratch);
        let h = if scratch.len() <= 8 { hash_short(head, scratch.len()) } else { hash::<false>(scratch) };
        self.find::<false>(scratch, head, h)
    }

    /// Looks up key `w` (with `LOWER`: `w | 0x20` bytewise, where `w` is an ASCII word), given its
    /// head and hash as computed for the key.
    #[inline(always)]
    fn find<const LOWER: bool>(&mut self, w: &[u8], head: u64, h: u64) -> (usize, bool) {
        let n = w.len();
        let lt = len_tag(n, h);
        let mask = self.table.len() - 1;
        let mut i = (h >> self.shift) as usize;
        loop {
            let e = self.table[i];
            if e.slot == 0 {
                break;
            }
            // Up to 8 bytes, head and length are the whole key.
            if e.head == head && e.len_tag == lt && (n <= 8 || same::<LOWER>(self.keys.row(e.slot as usize - 1), w)) {
                return (e.slot as usize - 1, false);
            }
            i = (i + 1) & mask;
        }
        let slot = self.hashes.len();
        // Slots are u32 in the table (as key offsets in a column are).
        self.table[i] = Entry { head, len_tag: lt, slot: slot as u32 + 1 };
        self.hashes.push(h);
        if LOWER {
            self.keys.push_with(w.iter().map(|&b| b | 0x20));
        } else {
            self.keys.push_bytes(w);
        }
        // At most 3/4 full: probes mostly stay within the entry's cache line.
        if self.hashes.len() * 4 > self.table.len() * 3 {
            self.grow();
        }
        (slot, true)
    }

    fn grow(&mut self) {
        let size = self.table.len() * 2;
        let old = std::mem::replace(&mut self.table, vec![Entry::default(); size]);
        self.shift -= 1;
        let mask = size - 1;
        for e in old.into_iter().filter(|e| e.slot != 0) {
            let mut i = (self.hashes[e.slot as usize - 1] >> self.shift) as usize;
            while self.table[i].slot != 0 {
                i = (i + 1) & mask;
            }
            self.table[i] = e;
        }
    }

    /// Counts the words of `text` (see [`for_each_word_span`] for `row_starts` and `origin`):
    /// `counts[slot]` of each word's lowercase form goes up by one, and a new word gets a new
    /// slot with count 1. `counts` must have one entry per slot. Word count and the fused
    /// `[tokenize, count]` chain both run this loop.
    pub fn count_words(&mut self, counts: &mut Vec<f64>, text: &str, row_starts: &[u32], origin: u32) {
        debug_assert_eq!(counts.len(), self.hashes.len());
        let mut scratch = Vec::with_capacity(64);
        for_each_word_span(text, row_starts, origin, |a, b| match self.slot_of_word(text, a, b, &mut scratch) {
            (slot, false) => counts[slot] += 1.0,
            (_, true) => counts.push(1.0),
        });
    }

    /// The UTF-8 bytes of the key of `slot`.
    pub fn key(&self, slot: usize) -> &[u8] {
        self.keys.row(slot)
    }

    /// The keys, in slot order, as a string column.
    pub fn finish(self, column: &str) -> NResult<Strs<'static>> {
        self.keys.finish(column)
    }

    /// The keys, in slot order, as a string column, keeping the index (a snapshot).
    pub fn keys(&self, column: &str) -> NResult<Strs<'static>> {
        self.keys.clone().finish(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keys_in_first_seen_order() {
        let mut index = StrIndex::new();
        let words: Vec<String> = (0..5000).map(|i| format!("w{}", i * 7919 % 5003)).collect();
        let mut expected = std::collections::HashMap::new();
        for w in words.iter().chain(words.iter()) {
            let n = expected.len();
            let want = *expected.entry(w.clone()).or_insert(n);
            let (slot, added) = index.slot(w);
            assert_eq!(slot, want, "{w}");
            assert_eq!(added, slot == n && want == n);
        }
        for (i, w) in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "ééé",
            "東京",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(index.slot(w), (5000 + i, true));
            assert_eq!(index.slot(w), (5000 + i, false));
        }
        let mut scratch = Vec::new();
        // Words at the end of a text (no 8 bytes to load) and inside one; ASCII and not.
        for (text, a, b, want) in [
            ("ABCdefGHIjklmnopQ", 0, 17, (5009, false)),
            ("ÉÉÉ", 0, 6, (5010, false)),
            ("x ABcd", 2, 6, (5004, false)),
            ("x ABcd and more text", 2, 6, (5004, false)),
            ("Word", 0, 4, (5012, true)),
            ("a WORD to find", 2, 6, (5012, false)),
            ("toLongerWords here", 0, 13, (5013, true)),
            ("ΟΔΟΣ", 0, 8, (5014, true)),
        ] {
            assert_eq!(index.slot_of_word(text, a, b, &mut scratch), want, "{text}");
        }
        assert_eq!(index.slot("word"), (5012, false));
        assert_eq!(index.slot("tolongerwords"), (5013, false));
        assert_eq!(index.slot("οδος"), (5014, false));
    }

    #[test]
    fn compares_every_byte() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|x| b'a' + x % 26).collect();
            assert!(same::<false>(&a, &a.clone()));
            let upper: Vec<u8> = a.iter().map(|b| b.to_ascii_uppercase()).collect();
            assert!(same::<true>(&a, &upper));
            if n > 8 {
                assert_eq!(hash::<true>(&upper), hash_bytes(&a));
            }
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!same::<false>(&a, &b), "length {n}, byte {i}");
                assert_ne!(hash_bytes(&a), hash_bytes(&b), "length {n}, byte {i}");
            }
        }
    }
}
