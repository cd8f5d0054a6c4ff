//! UTF-8 validation that costs little on text that is mostly ASCII with non-ASCII characters
//! sprinkled through it (where the standard library's ASCII fast path keeps dropping out).
//!
//! Bytes are classified 64 at a time into bit masks (non-ASCII, continuation); only the lead
//! bytes of multi-byte characters are looked at one by one, and the continuation bytes must be
//! exactly the ones their leads call for. Invalid input is handed to `std::str::from_utf8`, so the
//! error (and its `valid_up_to`) is the standard library's.

/// `bytes` as text, or the standard library's error.
#[inline]
pub fn validate(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if is_valid(bytes) {
        // SAFETY: checked by `is_valid`, which accepts exactly what from_utf8 accepts (tested below).
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// Non-ASCII bytes and continuation bytes (0x80..=0xBF) of 64 bytes, as bit masks.
#[cfg(target_arch = "x86_64")]
#[inline]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64; the loads read 4 × 16 bytes inside `block`.
    unsafe {
        // As signed bytes, 0x80..=0xBF are -128..=-65: less than -64 (0xC0).
        let c0 = _mm_set1_epi8(0xC0u8 as i8);
        let mut high = 0u64;
        let mut cont = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k) as *const __m128i);
            high |= (_mm_movemask_epi8(v) as u16 as u64) << (16 * k);
            cont |= (_mm_movemask_epi8(_mm_cmplt_epi8(v, c0)) as u16 as u64) << (16 * k);
        }
        (high, cont)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    let mut high = 0u64;
    let mut cont = 0u64;
    for (i, &b) in block.iter().enumerate() {
        high |= ((b >= 0x80) as u64) << i;
        cont |= (((b & 0xC0) == 0x80) as u64) << i;
    }
    (high, cont)
}

/// The length of the character a lead byte starts, if `b0` may start one and `b1` may follow it
/// (the second-byte ranges of RFC 3629 that exclude overlong forms, surrogates and values past
/// U+10FFFF); 0 if not.
#[inline]
fn width(b0: u8, b1: u8) -> u32 {
    match b0 {
        0xC2..=0xDF => 2,
        0xE0 => (b1 >= 0xA0) as u32 * 3,
        0xED => (b1 <= 0x9F) as u32 * 3,
        0xE1..=0xEF => 3,
        0xF0 => (b1 >= 0x90) as u32 * 4,
        0xF4 => (b1 <= 0x8F) as u32 * 4,
        0xF1..=0xF3 => 4,
        _ => 0,
    }
}

/// True if `bytes` is valid UTF-8.
pub fn is_valid(bytes: &[u8]) -> bool {
    let n = bytes.len();
    // Continuation bytes that the characters of the previous block still call for.
    let mut due = 0u64;
    let mut base = 0;
    while base < n {
        let (high, cont) = if base + 64 <= n {
            classify(bytes[base..base + 64].try_into().unwrap_or(&[0; 64]))
        } else {
            // Zero padding is ASCII: a character cut short by the end fails the mask check.
            let mut tail = [0u8; 64];
            tail[..n - base].copy_from_slice(&bytes[base..]);
            classify(&tail)
        };
        if high == 0 {
            if due != 0 {
                return false;
            }
            base += 64;
            continue;
        }
        let mut expected = due;
        due = 0;
        let mut leads = high & !cont;
        while leads != 0 {
            let i = leads.trailing_zeros();
            leads &= leads - 1;
            let p = base + i as usize;
            let w = width(bytes[p], if p + 1 < n { bytes[p + 1] } else { 0 });
            if w == 0 {
                return false;
            }
            // Bits i+1 .. i+w-1, possibly running into the next block.
            let bits = ((1u128 << (w - 1)) - 1) << (i + 1);
            expected |= bits as u64;
            due |= (bits >> 64) as u64;
        }
        if cont != expected {
            return false;
        }
        base += 64;
    }
    due == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_standard_library() {
        // Every sequence of up to 3 bytes from an alphabet of boundary values, placed at every
        // offset around a 64-byte block boundary.
        let alphabet = [
            0x00u8, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0,
            0xF1, 0xF4, 0xF5, 0xFF,
        ];
        let mut checked = 0;
        for &a in &alphabet {
            for &b in &alphabet {
                for &c in &alphabet {
                    for &d in &[0x80u8, 0x41] {
                        for at in [0usize, 60, 61, 62, 63, 64, 125] {
                            let mut v = vec![b'x'; at];
                            v.extend_from_slice(&[a, b, c, d]);
                            for len in [at + 2, at + 3, at + 4] {
                                assert_eq!(is_valid(&v[..len]), std::str::from_utf8(&v[..len]).is_ok(), "{:x?}", &v[at..len]);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
        let text = "naïve café — ΟΔΟΣ 東京 😀 ".repeat(50);
        for start in 0..text.len() {
            let slice = &text.as_bytes()[start..];
            assert_eq!(is_valid(slice), std::str::from_utf8(slice).is_ok(), "from {start}");
        }
        assert_eq!(validate(b"ab\xFFcd").unwrap_err().valid_up_to(), 2);
    }
}
