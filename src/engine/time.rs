//! Simulated time: integer milliseconds since the start of a run, and duration parsing.
//!
//! Integer milliseconds (never floats) keep every comparison exact and every run reproducible.

/// A point in simulated time, in milliseconds since the run started.
pub type SimTime = u64;

/// One second in milliseconds.
pub const SECOND_MS: u64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?} has no number before its unit")]
    NoNumber(String),
    #[error("{0:?} has no unit (allowed: ms, s, m, h, d)")]
    NoUnit(String),
    #[error("{text:?} has unknown unit {unit:?} (allowed: ms, s, m, h, d)")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{0:?}: whole numbers only; use a smaller unit (e.g. \"36h\" for 1.5d)")]
    Fraction(String),
}

/// Parses a duration such as `"250ms"`, `"90s"`, `"15m"`, `"6h"` or `"7d"` into milliseconds.
/// One integer and one unit; no fractions, so every duration is an exact number of milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = trimmed
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(DurationError::NoNumber(trimmed.to_owned()));
    }
    let unit = &trimmed[digits_end..];
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(DurationError::Fraction(trimmed.to_owned()));
    }
    if unit.is_empty() {
        return Err(DurationError::NoUnit(trimmed.to_owned()));
    }
    let unit_ms = match unit {
        "ms" => 1,
        "s" => SECOND_MS,
        "m" | "min" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    let count: u64 = trimmed[..digits_end]
        .parse()
        .map_err(|_| DurationError::Overflow(trimmed.to_owned()))?;
    count
        .checked_mul(unit_ms)
        .ok_or_else(|| DurationError::Overflow(trimmed.to_owned()))
}

/// Formats milliseconds with the largest unit that divides them exactly ("7d", "90s", "250ms"),
/// so `parse_duration_ms(format_duration_ms(x)) == x`.
pub fn format_duration_ms(duration_ms: u64) -> String {
    if duration_ms == 0 {
        return "0ms".to_owned();
    }
    for (unit_ms, unit) in [
        (DAY_MS, "d"),
        (HOUR_MS, "h"),
        (MINUTE_MS, "m"),
        (SECOND_MS, "s"),
    ] {
        if duration_ms.is_multiple_of(unit_ms) {
            return format!("{}{unit}", duration_ms / unit_ms);
        }
    }
    format!("{duration_ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms("6h"), Ok(6 * HOUR_MS));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * DAY_MS));
        assert_eq!(parse_duration_ms(" 0s "), Ok(0));
    }

    #[test]
    fn refuses_malformed_durations() {
        assert_eq!(parse_duration_ms(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration_ms("s"),
            Err(DurationError::NoNumber(_))
        ));
        assert!(matches!(
            parse_duration_ms("90"),
            Err(DurationError::NoUnit(_))
        ));
        assert!(matches!(
            parse_duration_ms("1.5h"),
            Err(DurationError::Fraction(_))
        ));
        assert!(
            parse_duration_ms("1.5d")
                .unwrap_err()
                .to_string()
                .contains("whole numbers only")
        );
        assert!(matches!(
            parse_duration_ms("3w"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration_ms("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formatting_round_trips() {
        for duration_ms in [
            0,
            1,
            250,
            1_000,
            90_000,
            HOUR_MS,
            6 * HOUR_MS,
            7 * DAY_MS,
            1_001,
        ] {
            assert_eq!(
                parse_duration_ms(&format_duration_ms(duration_ms)),
                Ok(duration_ms)
            );
        }
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(DAY_MS), "1d");
    }
}
