//! Numbers in request bodies are stored as the client wrote them, or refused.
//!
//! serde_json reads a number as an `i64`, a `u64` or an `f64`. An integer beyond ±2^64 or a decimal
//! with more significant digits than an `f64` holds would come back changed
//! (`12345678901234567890123` as `1.2345678901234568e22`), and a payload a client stores must not
//! change. serde_json's `arbitrary_precision` would keep such numbers, but it breaks every
//! internally tagged enum and flattened struct that holds a number (serde's buffered content), and
//! features are unified across the workspace. So the JSON extractor checks the body's number
//! literals and answers 422 for one that would not survive: the client can send it as a string.
//!
//! serde_json's `float_roundtrip` feature is on (Cargo.toml): without it a float is parsed to within
//! an ULP or so, and the long digit strings PostgreSQL's jsonb writes back for large numbers (a
//! number near `f64::MAX` comes back as 309 digits) could parse to infinity, an error reading a
//! stored definition (schemathesis found one). `stored_form` below checks the read-back.

/// The first number literal in the JSON text `body` that an `f64`/`i64`/`u64` would change, if any.
/// `body` is valid JSON (the caller has parsed it).
pub fn first_inexact(body: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let lit = std::str::from_utf8(&body[start..i]).ok()?;
                if !is_exact(lit) {
                    return Some(lit);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether serde_json reads `lit` (a JSON number) as the same number.
fn is_exact(lit: &str) -> bool {
    if !lit.contains(['.', 'e', 'E']) {
        if lit.parse::<i64>().is_ok() || lit.parse::<u64>().is_ok() {
            return true;
        }
    } else if lit.len() <= 15 && !lit.contains(['e', 'E']) {
        // Up to 15 significant digits, a decimal round-trips through an f64.
        return true;
    }
    let Ok(f) = lit.parse::<f64>() else {
        return true; // not a number serde would take: its own error stands
    };
    if !f.is_finite() {
        return true; // serde_json refuses it itself
    }
    let Some(n) = serde_json::Number::from_f64(f) else {
        return true;
    };
    decimal(lit) == decimal(&n.to_string())
}

/// A decimal literal as (negative, significant digits without leading or trailing zeros, power of
/// ten of the last digit); zero is `(false, "", 0)`.
fn decimal(lit: &str) -> (bool, String, i64) {
    let (neg, rest) = match lit.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, lit),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(k) => (&rest[..k], rest[k + 1..].parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let mut exp = exp - frac.len() as i64;
    let trimmed = digits.trim_start_matches('0');
    let kept = trimmed.trim_end_matches('0');
    exp += (trimmed.len() - kept.len()) as i64;
    if kept.is_empty() {
        return (false, String::new(), 0);
    }
    (neg, kept.to_owned(), exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_an_f64_or_integer_holds_pass() {
        for ok in [
            r#"{"n": 1}"#,
            r#"{"n": -9223372036854775808}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": 0.1, "m": 1e3, "k": 2.5E-3, "z": -0.0, "w": 1.0}"#,
            r#"{"n": 1.7976931348623157e308}"#,
            r#"{"n": 12345678901234567}"#,
            r#"{"s": "12345678901234567890123", "t": "a\"1234567890123456789012345"}"#,
            r#"[0.30000000000000004, 5e-324]"#,
        ] {
            assert_eq!(first_inexact(ok.as_bytes()), None, "{ok}");
        }
    }

    #[test]
    fn numbers_that_would_change_are_found() {
        for (bad, lit) in [
            (
                r#"{"n": 12345678901234567890123}"#,
                "12345678901234567890123",
            ),
            (
                r#"{"a": [1, {"n": 18446744073709551616}]}"#,
                "18446744073709551616",
            ),
            (
                r#"{"n": 1.2345678901234567890123}"#,
                "1.2345678901234567890123",
            ),
            (
                r#"{"n": -99999999999999999999.5}"#,
                "-99999999999999999999.5",
            ),
        ] {
            assert_eq!(first_inexact(bad.as_bytes()), Some(lit), "{bad}");
        }
    }

    #[test]
    fn decimals_normalise() {
        assert_eq!(decimal("1000.0"), decimal("1e3"));
        assert_eq!(decimal("0.00120"), decimal("1.2e-3"));
        assert_eq!(decimal("0"), decimal("-0.0"));
    }
}

#[cfg(test)]
mod stored_form {
    /// PostgreSQL's jsonb keeps a number as a `numeric` and writes it back without an exponent
    /// (`1e300` comes back as 1 followed by 300 zeros). Every number the request side accepts must
    /// parse back to the same `f64` from that form, including the largest and the smallest.
    fn expanded(f: f64) -> String {
        let lit = serde_json::Number::from_f64(f).unwrap().to_string();
        let (neg, digits, exp) = super::decimal(&lit);
        let sign = if neg { "-" } else { "" };
        if exp >= 0 {
            format!("{sign}{digits}{}", "0".repeat(exp as usize))
        } else {
            let places = (-exp) as usize;
            if places >= digits.len() {
                format!("{sign}0.{}{digits}", "0".repeat(places - digits.len()))
            } else {
                let (i, fr) = digits.split_at(digits.len() - places);
                format!("{sign}{i}.{fr}")
            }
        }
    }

    #[test]
    fn numbers_read_back_from_their_expanded_form() {
        let mut bad = Vec::new();
        // Every exponent, each with a spread of mantissas (a fixed sequence, not random).
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..40_000u64 {
            bits = bits
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let exp = (i % 2046) + 1;
            let f = f64::from_bits((bits >> 12) | (exp << 52));
            // And the largest values, where a parse that rounds twice can overflow.
            let top = f64::from_bits(f64::MAX.to_bits() - (i % 20_000) * 7);
            for f in [f, -f, top, -top, f64::MIN_POSITIVE, 5e-324] {
                let text = format!("{{\"a\":[{}]}}", expanded(f));
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(g) if g["a"][0].as_f64() == Some(f) => {}
                    other => bad.push(format!("{f:e}: {other:?}")),
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} numbers do not read back: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }
}
