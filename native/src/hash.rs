//! The partitioning hash shared with the kernel's JavaScript: FNV-1a (32-bit) over UTF-16 code units.
//!
//! Numbers are hashed by their JavaScript `String(k)` form, so the native and JS sides agree on
//! every key without either having to know how the other stores it.

const OFFSET_BASIS: u32 = 2166136261;
const PRIME: u32 = 16777619;

/// FNV-1a over the UTF-16 code units of `s`, each mixed as one 16-bit value.
#[inline]
pub fn fnv1a_utf16(s: &str) -> u32 {
    let mut h = OFFSET_BASIS;
    if s.is_ascii() {
        for &b in s.as_bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(PRIME);
        }
        return h;
    }
    for unit in s.encode_utf16() {
        h ^= unit as u32;
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The hash of a numeric key: the hash of `String(x)`.
pub fn hash_f64(x: f64) -> u32 {
    fnv1a_utf16(&js_number_to_string(x))
}

/// The digits and exponent ECMAScript's Number::toString picks: the fewest digits that round-trip,
/// and among those the closest to `x`, ties to an even last digit.
///
/// Rust's `{:e}` gives a shortest round-tripping digit string but breaks exact ties upwards, so the
/// correctly rounded string of that length (`{:.N e}` rounds half to even) is preferred when it
/// also round-trips.
fn shortest_digits(x: f64) -> String {
    let short = format!("{x:e}");
    let len = short.split('e').next().map(|m| m.chars().filter(char::is_ascii_digit).count()).unwrap_or(1);
    let exact = format!("{:.*e}", len.saturating_sub(1), x);
    if exact.parse::<f64>() == Ok(x) {
        exact
    } else {
        short
    }
}

/// `Number.prototype.toString()` (radix 10) as specified by ECMAScript's Number::toString.
pub fn js_number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if x.fract() == 0.0 && x.abs() <= 9007199254740992.0 {
        return format!("{}", x as i64);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let sci = shortest_digits(x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let e: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = e + 1; // value = 0.digits × 10^n
    let body = if k <= n && n <= 21 {
        let mut s = digits.clone();
        s.extend(std::iter::repeat_n('0', (n - k) as usize));
        s
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{}", "0".repeat((-n) as usize), digits)
    } else {
        let exp_sign = if n - 1 < 0 { '-' } else { '+' };
        let exp_abs = (n - 1).abs();
        if k == 1 {
            format!("{digits}e{exp_sign}{exp_abs}")
        } else {
            format!("{}.{}e{exp_sign}{exp_abs}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // 1387720790384734.25 is written out in full: it is exactly the double under test (its last bit is 0.25).
    #[allow(clippy::excessive_precision)]
    fn formats_like_javascript() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-0.0, "0"),
            (1387720790384734.25, "1387720790384734.2"),
            (-42.0, "-42"),
            (9007199254740994.0, "9007199254740994"),
            (1152921504606846976.0, "1152921504606847000"),
        ];
        for (x, s) in cases {
            assert_eq!(js_number_to_string(*x), *s);
        }
    }

    #[test]
    fn hashes_utf16_units() {
        assert_eq!(fnv1a_utf16(""), 2166136261);
        // "a": (2166136261 ^ 97) * 16777619 mod 2^32
        assert_eq!(fnv1a_utf16("a"), 0xE40C292C);
    }
}
