//! Go's `time.ParseDuration` syntax, because Dex configs are written in it ("10m", "1h30m",
//! "168h", "300ms", "1.5h").

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("missing unit (one of ns, us, ms, s, m, h)")]
    MissingUnit,
    #[error("unknown unit `{0}` (expected one of ns, us, ms, s, m, h)")]
    UnknownUnit(String),
    #[error("expected a number followed by a unit, like 10m or 1h30m")]
    Syntax,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("duration too large")]
    Overflow,
}

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Go caps durations at i64 nanoseconds (about 292 years); so do we, so that what Go
/// rejects we reject too.
const MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a Go duration string. A leading `+` is accepted, `-` is rejected (no config value
/// can be a negative span) except for a zero value such as "-0".
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(if input.is_empty() {
            DurationError::Empty
        } else {
            DurationError::Syntax
        });
    }

    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &s[..int_len];
        s = &s[int_len..];
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::Syntax);
        }

        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(DurationError::MissingUnit);
        }
        let unit_str = &s[..unit_len];
        s = &s[unit_len..];
        let unit =
            unit_nanos(unit_str).ok_or_else(|| DurationError::UnknownUnit(unit_str.into()))?;

        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= MAX_NANOS)
                .ok_or(DurationError::Overflow)?;
        }
        let mut nanos = whole.checked_mul(unit).ok_or(DurationError::Overflow)?;

        // Digits beyond nanosecond precision cannot change the result; like Go, ignore them.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_digits.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        nanos = nanos
            .checked_add(frac * unit / scale)
            .ok_or(DurationError::Overflow)?;

        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
        if total > MAX_NANOS {
            return Err(DurationError::Overflow);
        }
    }

    if negative && total != 0 {
        return Err(DurationError::Negative);
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9, so it fits.
    let sub = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the short way a human would write it in the config ("6h", "1h30m",
/// "300ms"), for error messages.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        if s > 0 {
            out.push_str(&format!("{s}s"));
        }
    } else if secs == 0 && nanos % 1_000_000 == 0 {
        out.push_str(&format!("{}ms", nanos / 1_000_000));
    } else {
        let frac = format!("{nanos:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("168h"), Duration::from_secs(168 * 3600));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7\u{b5}s"), Duration::from_micros(7));
        assert_eq!(ok("7\u{3bc}s"), Duration::from_micros(7));
    }

    #[test]
    fn parses_compound_and_fractional_values() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(
            ok("2h45m30.5s"),
            Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500)
        );
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+5m"), Duration::from_secs(300));
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
    }

    #[test]
    fn zero_needs_no_unit() {
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_go_duration("10"), Err(DurationError::MissingUnit));
        assert_eq!(parse_go_duration("1h30"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_go_duration("10d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert_eq!(
            parse_go_duration("10 m"),
            Err(DurationError::UnknownUnit(" m".into()))
        );
        assert_eq!(parse_go_duration("m"), Err(DurationError::Syntax));
        assert_eq!(parse_go_duration("."), Err(DurationError::Syntax));
        assert_eq!(parse_go_duration("-"), Err(DurationError::Syntax));
        assert_eq!(parse_go_duration("-5m"), Err(DurationError::Negative));
        assert_eq!(parse_go_duration("3000000h"), Err(DurationError::Overflow));
        assert_eq!(
            parse_go_duration("99999999999999999999999999s"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn accepts_the_largest_go_duration_only() {
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
        assert_eq!(parse_go_duration("2562048h"), Err(DurationError::Overflow));
    }

    #[test]
    fn formats_durations_readably() {
        assert_eq!(format_duration(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
