//! Config text as DeepSpeed reads it: `hjson.load` with a hook that refuses duplicate keys
//! (`deepspeed/runtime/config.py`), so comments (`//`, `#`, `/* */`), trailing commas and the
//! rest of HJSON work, and a key given twice in one object is an error naming it (plain JSON
//! readers silently keep the last value, so a config edited by appending silently changed).
//!
//! The `deser-hjson` crate parses; a serde visitor builds the `serde_json::Value` the schema
//! reads, checks duplicates and, like Python's hjson, turns integral floats below 1e10 into
//! integers (`5e8` is the integer 500000000). Errors carry the line and column.

use super::ConfigError;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses config text into a JSON value (an object at the top).
///
/// # Errors
/// [`ConfigError::Syntax`] with the line and column of a syntax error or a duplicate key.
pub(crate) fn parse(text: &str) -> Result<Value, ConfigError> {
    // Python's hjson strips a byte-order mark; deser-hjson mishandled a comment on the last
    // line without a newline before 2.2.6.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let owned;
    let text = if text.ends_with('\n') {
        text
    } else {
        owned = format!("{text}\n");
        owned.as_str()
    };
    match deser_hjson::from_str::<Root>(text) {
        Ok(Root(v)) => Ok(v),
        Err(e) => Err(syntax(e)),
    }
}

fn syntax(e: deser_hjson::Error) -> ConfigError {
    match e {
        deser_hjson::Error::Syntax {
            line,
            col,
            code,
            at,
        } => ConfigError::Syntax {
            line,
            column: col,
            message: format!("{}, at `{}`", describe(code), at.trim_end()),
        },
        deser_hjson::Error::Serde { line, col, message } => ConfigError::Syntax {
            line,
            column: col,
            message,
        },
        other => ConfigError::Syntax {
            line: 0,
            column: 0,
            message: other.to_string(),
        },
    }
}

/// A syntax error's kind in words.
fn describe(code: deser_hjson::ErrorCode) -> String {
    use deser_hjson::ErrorCode as C;
    match code {
        C::Eof => "the text ends in the middle of a value".into(),
        C::ExpectedMapColon => "expected `:` after a key".into(),
        C::ExpectedMapComma | C::ExpectedMapEnd => "expected `,` or `}`".into(),
        C::ExpectedArrayComma | C::ExpectedArrayEnd => "expected `,` or `]`".into(),
        C::TrailingCharacters => "unexpected text after the config's closing `}`".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The top-level object (HJSON allows it without braces; an empty file is `{}`).
struct Root(Value);

impl<'de> Deserialize<'de> for Root {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Build).map(Root)
    }
}

/// Any nested value.
struct Any(Value);

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Build).map(Any)
    }
}

/// Builds a `serde_json::Value`, refusing duplicate keys.
struct Build;

impl<'de> Visitor<'de> for Build {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON or HJSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // Python's hjson: `if int(res) == res and abs(res) < 1e10: res = int(res)`.
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e10 {
            return Ok(Value::from(v as i64));
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the number {v} is out of range")))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Any(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key `{key}` is given twice in one object (DeepSpeed refuses \
                     duplicate keys); keep one"
                )));
            }
            let Any(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Syntax {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn comments_and_trailing_commas_read_as_hjson_load_reads_them() {
        let text = "{\n  // the batch\n  \"train_batch_size\": 32, # per step\n  /* zero */\n  \
                    \"zero_optimization\": {\"stage\": 2,},\n  \"betas\": [0.9, 0.95,],\n}\n";
        assert_eq!(
            ok(text),
            json!({"train_batch_size": 32, "zero_optimization": {"stage": 2}, "betas": [0.9, 0.95]})
        );
        // A comment on the last line with no newline after it.
        assert_eq!(ok("{\"a\": 1}\n// end"), json!({"a": 1}));
        // Unquoted keys and values, as HJSON allows; an empty file is an empty config.
        assert_eq!(
            ok("{stage: 3\nmode: auto\n}"),
            json!({"stage": 3, "mode": "auto"})
        );
        assert_eq!(ok(""), json!({}));
        assert_eq!(ok("\u{feff}{\"a\": true}"), json!({"a": true}));
    }

    #[test]
    fn integral_floats_below_1e10_become_integers_as_in_python() {
        let v =
            ok("{\"a\": 5e8, \"b\": 1.0, \"c\": 0.5, \"d\": 1e14, \"e\": -3, \"f\": 500000000}");
        assert_eq!(v["a"].as_u64(), Some(500_000_000));
        assert_eq!(v["b"].as_u64(), Some(1));
        assert_eq!(v["c"].as_f64(), Some(0.5));
        assert!(v["d"].is_f64(), "1e14 stays a float: {}", v["d"]);
        assert_eq!(v["e"].as_i64(), Some(-3));
        assert_eq!(v["f"].as_u64(), Some(500_000_000));
    }

    #[test]
    fn a_duplicate_key_is_an_error_naming_it_with_its_line() {
        let (line, _, message) =
            err("{\n  \"zero_optimization\": {\n    \"stage\": 2,\n    \"stage\": 3\n  }\n}");
        assert!(message.contains("`stage` is given twice"), "{message}");
        assert_eq!(line, 4, "{message}");
        let (_, _, top) = err("{\"fp16\": {}, \"fp16\": {}}");
        assert!(top.contains("`fp16`"), "{top}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let (line, column, message) = err("{\n  \"a\": 1,\n  \"b\" 2\n}");
        assert_eq!(line, 3, "{message}");
        assert!(column > 0, "{message}");
        let (line, _, _) = err("{\"a\": [1, 2");
        assert!(line >= 1);
    }
}
