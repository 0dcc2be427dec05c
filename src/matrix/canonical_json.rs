//! Canonical JSON exactly as the Matrix spec defines it (appendices, "Canonical JSON"; room
//! versions 6+ enforce it strictly).
//!
//! The canonical form has no insignificant whitespace, object keys sorted by Unicode code point,
//! strings with only the escapes JSON requires (`\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r` and
//! `\u00xx` with lower-case hex for the other control characters; everything else is raw UTF-8),
//! and integers in `[-(2^53)+1, 2^53-1]` without fraction or exponent.
//!
//! Keys are sorted explicitly here: `serde_json::Map`'s iteration order is *not* trusted, because
//! a single dependency enabling `serde_json/preserve_order` flips it for the whole build.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest integer canonical JSON allows: 2^53 - 1.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// The smallest integer canonical JSON allows: -(2^53) + 1.
pub const MIN_SAFE_INTEGER: i64 = -MAX_SAFE_INTEGER;

/// Why a value cannot be written as, or a text is not, strict canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// A number with a fraction or exponent (or an integer-valued float in a `Value`).
    #[error("{path}: floats are not allowed in canonical JSON (got {value})")]
    Float { path: String, value: String },
    /// An integer outside `[-(2^53)+1, 2^53-1]`.
    #[error("{path}: integer {value} is outside the canonical JSON range [-(2^53)+1, 2^53-1]")]
    IntegerOutOfRange { path: String, value: String },
    /// The text is not JSON, or breaks a strict rule while parsing (the message names the line
    /// and column, and the rule).
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

impl CanonicalJsonError {
    /// Prefixes the JSON path of the failing value with `segment` while unwinding.
    fn within(mut self, segment: &dyn fmt::Display) -> CanonicalJsonError {
        match &mut self {
            CanonicalJsonError::Float { path, .. }
            | CanonicalJsonError::IntegerOutOfRange { path, .. } => {
                *path = if path == "$" {
                    format!("${segment}")
                } else {
                    format!("${segment}{}", &path[1..])
                };
            }
            CanonicalJsonError::Syntax(_) => {}
        }
        self
    }
}

/// The canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical JSON text of `value` to `out`. On error `out` holds a partial text.
pub fn write_canonical(value: &Value, out: &mut String) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out)
                    .map_err(|error| error.within(&format_args!("[{index}]")))?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object_without(map, &[], out)?,
    }
    Ok(())
}

/// Appends the canonical JSON text of `map` with the top-level keys in `skip` left out, as if
/// they had been removed first. Hashing and signing use this to avoid copying the event.
pub fn write_object_without(
    map: &Map<String, Value>,
    skip: &[&str],
    out: &mut String,
) -> Result<(), CanonicalJsonError> {
    let mut entries: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .collect();
    // UTF-8 byte order equals code point order, so sorting the `String`s sorts by code point.
    // Without `preserve_order` the map is already sorted and this is a linear check.
    if !entries.is_sorted_by(|left, right| left.0 <= right.0) {
        entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
    }
    out.push('{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_canonical(value, out).map_err(|error| error.within(&format_args!(".{key}")))?;
    }
    out.push('}');
    Ok(())
}

fn write_number(number: &Number, out: &mut String) -> Result<(), CanonicalJsonError> {
    use std::fmt::Write;
    if let Some(integer) = number.as_i64() {
        check_integer_range(integer, "$")?;
        write!(out, "{integer}").expect("writing to a String cannot fail");
        Ok(())
    } else if number.is_u64() {
        Err(CanonicalJsonError::IntegerOutOfRange {
            path: "$".to_owned(),
            value: number.to_string(),
        })
    } else {
        Err(CanonicalJsonError::Float {
            path: "$".to_owned(),
            value: number.to_string(),
        })
    }
}

fn check_integer_range(integer: i64, path: &str) -> Result<(), CanonicalJsonError> {
    if (MIN_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&integer) {
        Ok(())
    } else {
        Err(CanonicalJsonError::IntegerOutOfRange {
            path: path.to_owned(),
            value: integer.to_string(),
        })
    }
}

/// Appends `text` as a JSON string with only the escapes JSON requires.
pub fn write_json_string(text: &str, out: &mut String) {
    write_string(text, out);
}

/// Whether JSON requires `byte` to be escaped in a string.
#[inline]
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Writes a JSON string with only the escapes JSON requires.
fn write_string(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push('"');
    let bytes = text.as_bytes();
    // Fast path: most strings (IDs, keys, bodies) need no escape at all.
    if !bytes.iter().any(|&byte| needs_escape(byte)) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut clean_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every escaped byte is ASCII, so `index` is always on a character boundary.
        out.push_str(&text[clean_from..index]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        } else {
            out.push_str(escape);
        }
        clean_from = index + 1;
    }
    out.push_str(&text[clean_from..]);
    out.push('"');
}

/// Parses `text` as strict canonical-JSON-compatible JSON, the way room versions 6+ require:
/// rejects floats (any number with a fraction or exponent), integers outside
/// `[-(2^53)+1, 2^53-1]`, and objects with duplicate keys. Whitespace and key order in the input
/// do not matter. `-0` is read as the integer 0 (the spec's own canonical JSON example does this).
pub fn parse_strict(text: &str) -> Result<Value, CanonicalJsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = StrictSeed {
        lenient_numbers: false,
    }
    .deserialize(&mut deserializer)
    .map_err(|error| CanonicalJsonError::Syntax(error.to_string()))?;
    deserializer
        .end()
        .map_err(|error| CanonicalJsonError::Syntax(error.to_string()))?;
    // serde_json hands `-0`, `-0.0` and `-0e0` alike to the visitor (as the float -0.0), so the
    // last two, floats the visitor cannot see as such, are found in the text.
    if let Some((offset, literal)) = float_literal(text) {
        let line = 1 + text[..offset].matches('\n').count();
        let column = 1 + offset - text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
        return Err(CanonicalJsonError::Syntax(format!(
            "floats are not allowed in canonical JSON (got {literal}) at line {line} column {column}"
        )));
    }
    Ok(value)
}

/// The first number in JSON `text` written with a fraction or an exponent (outside strings),
/// with its byte offset.
fn float_literal(text: &str) -> Option<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut position = 0;
    let mut in_string = false;
    while position < bytes.len() {
        let byte = bytes[position];
        if in_string {
            match byte {
                // Skips the escaped character (an escaped quote does not end the string).
                b'\\' => position += 1,
                b'"' => in_string = false,
                _ => {}
            }
            position += 1;
            continue;
        }
        if byte == b'"' {
            in_string = true;
            position += 1;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let start = position;
            while position < bytes.len()
                && matches!(
                    bytes[position],
                    b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                )
            {
                position += 1;
            }
            let literal = &text[start..position];
            if literal.contains(['.', 'e', 'E']) {
                return Some((start, literal));
            }
        } else {
            position += 1;
        }
    }
    None
}

/// Parses `text` like [`parse_strict`] but reads integer-valued numbers written with a fraction
/// or exponent (`1e10`, `2.0`) as integers, as the spec's canonical JSON examples do
/// (`{"b": 1e10}` canonicalises to `{"b":10000000000}`). Non-integral numbers, out-of-range
/// values and duplicate keys are still rejected.
pub fn parse_canonicalizable(text: &str) -> Result<Value, CanonicalJsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = StrictSeed {
        lenient_numbers: true,
    }
    .deserialize(&mut deserializer)
    .map_err(|error| CanonicalJsonError::Syntax(error.to_string()))?;
    deserializer
        .end()
        .map_err(|error| CanonicalJsonError::Syntax(error.to_string()))?;
    Ok(value)
}

/// Checks that an already-parsed value is strict canonical JSON (no floats, integers in range).
/// Duplicate keys cannot be detected in a `Value`; use [`parse_strict`] on the text for that.
pub fn check_strict(value: &Value) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Number(number) => match number.as_i64() {
            Some(integer) => check_integer_range(integer, "$"),
            None if number.is_u64() => Err(CanonicalJsonError::IntegerOutOfRange {
                path: "$".to_owned(),
                value: number.to_string(),
            }),
            None => Err(CanonicalJsonError::Float {
                path: "$".to_owned(),
                value: number.to_string(),
            }),
        },
        Value::Array(items) => items.iter().enumerate().try_for_each(|(index, item)| {
            check_strict(item).map_err(|error| error.within(&format_args!("[{index}]")))
        }),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            check_strict(item).map_err(|error| error.within(&format_args!(".{key}")))
        }),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// Deserializes a `Value` while enforcing the strict rules; serde_json adds line and column to
/// every error raised here.
#[derive(Clone, Copy)]
struct StrictSeed {
    lenient_numbers: bool,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        if (MIN_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&value) {
            Ok(Value::from(value))
        } else {
            Err(E::custom(format_args!(
                "integer {value} is outside the canonical JSON range [-(2^53)+1, 2^53-1]"
            )))
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        match i64::try_from(value) {
            Ok(signed) => self.visit_i64(signed),
            Err(_) => Err(E::custom(format_args!(
                "integer {value} is outside the canonical JSON range [-(2^53)+1, 2^53-1]"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        // serde_json reports the integer literal `-0` as the float -0.0.
        if value == 0.0 && value.is_sign_negative() {
            return Ok(Value::from(0));
        }
        let integral = value.is_finite() && value.fract() == 0.0;
        if integral && value.abs() > MAX_SAFE_INTEGER as f64 {
            // An integer literal beyond 64 bits or a huge float: serde_json cannot tell which.
            return Err(E::custom(format_args!(
                "number {value} is outside the canonical JSON integer range [-(2^53)+1, 2^53-1]"
            )));
        }
        if integral && self.lenient_numbers {
            // In range, so the conversion is exact.
            return Ok(Value::from(value as i64));
        }
        Err(E::custom(format_args!(
            "floats are not allowed in canonical JSON (got {value})"
        )))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let value = access.next_value_seed(self)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_by_code_point_and_drops_whitespace() {
        let value = json!({"b": 1, "a": [true, null, "x"], "日": 1, "本": 2, "Z": {}});
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            r#"{"Z":{},"a":[true,null,"x"],"b":1,"日":1,"本":2}"#
        );
    }

    #[test]
    fn escapes_only_what_json_requires() {
        let value = json!("q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{1f}\u{7f}é日😀/");
        assert_eq!(
            to_canonical_string(&value).unwrap(),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}é日😀/\""
        );
    }

    #[test]
    fn integer_range_is_enforced_on_both_ends() {
        assert_eq!(
            to_canonical_string(&json!(MAX_SAFE_INTEGER)).unwrap(),
            "9007199254740991"
        );
        assert_eq!(
            to_canonical_string(&json!(MIN_SAFE_INTEGER)).unwrap(),
            "-9007199254740991"
        );
        assert!(matches!(
            to_canonical_string(&json!({"a": [MAX_SAFE_INTEGER + 1]})),
            Err(CanonicalJsonError::IntegerOutOfRange { path, .. }) if path == "$.a[0]"
        ));
        assert!(to_canonical_string(&json!(MIN_SAFE_INTEGER - 1)).is_err());
        assert!(to_canonical_string(&json!(u64::MAX)).is_err());
        assert!(matches!(
            to_canonical_string(&json!({"x": 1.5})),
            Err(CanonicalJsonError::Float { path, .. }) if path == "$.x"
        ));
    }

    #[test]
    fn strict_parsing_rejects_floats_ranges_and_duplicates() {
        assert_eq!(parse_strict(r#"{"a": -0}"#).unwrap(), json!({"a": 0}));
        // Strings that look like numbers, and escaped quotes, are not numbers.
        assert_eq!(
            parse_strict(r#"{"a\"": "-0.0", "b": ["1e5", -0]}"#).unwrap(),
            json!({"a\"": "-0.0", "b": ["1e5", 0]})
        );
        for bad in [
            // serde_json reads these three as it reads `-0`.
            r#"{"a": -0.0}"#,
            r#"{"a": [-0e0]}"#,
            r#"{"a": {"b": -0.0E+7}}"#,
            r#"{"a": 1.5}"#,
            r#"{"a": 1e10}"#,
            r#"{"a": 2.0}"#,
            r#"{"a": 9007199254740992}"#,
            r#"{"a": -9007199254740992}"#,
            r#"{"a": 18446744073709551616}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": {"b": [1, {"c": 1, "c": 1}]}}"#,
            r#"{"a": 1} x"#,
            "not json",
        ] {
            let error = parse_strict(bad).unwrap_err();
            assert!(matches!(error, CanonicalJsonError::Syntax(_)), "{bad}");
            assert!(error.to_string().contains("line 1"), "{error}");
        }
        let message = parse_strict(r#"{"a": 1, "a": 2}"#).unwrap_err().to_string();
        assert!(message.contains("duplicate key \"a\""), "{message}");
        let message = parse_strict(r#"{"a": 0.5}"#).unwrap_err().to_string();
        assert!(message.contains("floats are not allowed"), "{message}");
        let message = parse_strict("{\n  \"a\": -0.0}").unwrap_err().to_string();
        assert!(
            message.contains("(got -0.0) at line 2 column 8"),
            "{message}"
        );
    }

    #[test]
    fn canonicalizable_parsing_accepts_integral_exponents_only() {
        assert_eq!(
            parse_canonicalizable(r#"{"a": -0, "b": 1e10}"#).unwrap(),
            json!({"a": 0, "b": 10_000_000_000_i64})
        );
        assert!(parse_canonicalizable(r#"{"a": 0.5}"#).is_err());
        assert!(parse_canonicalizable(r#"{"a": 1e300}"#).is_err());
    }

    #[test]
    fn check_strict_names_the_path() {
        assert!(check_strict(&json!({"a": [1, 2, {"b": "x"}]})).is_ok());
        let error = check_strict(&json!({"a": [1, 2, {"b": 0.25}]})).unwrap_err();
        assert_eq!(
            error,
            CanonicalJsonError::Float {
                path: "$.a[2].b".into(),
                value: "0.25".into()
            }
        );
    }
}
