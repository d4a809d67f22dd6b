//! Durations as operators write them: a number and a unit — `250ms`, `2s`, `1.5m`, `1h` — or
//! several of them in a row (`1m30s`). A bare number is seconds.

use std::time::Duration;

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration '{text}': {why} (write it as 500ms, 2s, 1m, 1h or 1m30s)")]
pub struct DurationError {
    /// What was given.
    pub text: String,
    /// What is wrong.
    pub why: &'static str,
}

/// Parse `text` (see the module documentation).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        text: text.to_string(),
        why,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return from_secs(secs).ok_or_else(|| err("out of range"));
    }
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number needs a unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let num = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
        };
        rest = &rest[unit_len..];
        // Whole numbers are exact; fractions go through floating point.
        let ns = match num.parse::<u128>() {
            Ok(n) => n.checked_mul(unit_ns).ok_or_else(|| err("out of range"))?,
            Err(_) => {
                let f: f64 = num.parse().map_err(|_| err("bad number"))?;
                let v = f * unit_ns as f64;
                if !v.is_finite() || !(0.0..=1e21).contains(&v) {
                    return Err(err("out of range"));
                }
                v.round() as u128
            }
        };
        total_ns = total_ns
            .checked_add(ns)
            .ok_or_else(|| err("out of range"))?;
    }
    if total_ns > 1_000_000_000_000 * 1_000_000_000 {
        return Err(err("out of range"));
    }
    Ok(Duration::new(
        (total_ns / 1_000_000_000) as u64,
        (total_ns % 1_000_000_000) as u32,
    ))
}

fn from_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Format a duration the way [`parse`] reads it (shortest exact form).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Serde helpers: a [`Duration`] as operators write it (`"1m30s"`); input may also be a number
/// of milliseconds.
pub mod human {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Millis(u64),
    }

    /// Serialize as text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Deserialize from text or milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(t) => super::parse(&t).map_err(de::Error::custom),
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        }
    }

    /// The same for `Option<Duration>` (null: none).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] Duration);

        /// Serialize as text or null.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Deserialize from text, milliseconds or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse(" 1h ").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "5x", "-1s", "1s5", "ms", "1e400"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("5x").unwrap_err().to_string().contains("500ms"));
    }

    proptest! {
        #[test]
        fn format_then_parse(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }
    }
}
