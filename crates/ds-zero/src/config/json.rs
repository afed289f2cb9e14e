//! A strict reader over DeepSpeed's JSON: every key read is recorded, and `finish` turns any
//! key left unread into an error naming it, with the closest known key as a suggestion.

use super::ConfigError;
use super::inert::leaves_off;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One JSON object being read at `path` (e.g. `optimizer.params`).
pub(crate) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key closest to `key`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'k>(key: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

impl<'a> Obj<'a> {
    /// Reads `value` as an object at `path`.
    pub(crate) fn new(path: impl Into<String>, value: &'a Value) -> Result<Self, ConfigError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Obj {
                path,
                map,
                seen: BTreeSet::new(),
            }),
            other => Err(ConfigError::Type {
                key: path,
                expected: "an object",
                found: describe(other),
            }),
        }
    }

    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key`, marking it read; `"auto"` is refused here for every key.
    pub(crate) fn raw(&mut self, key: &'a str) -> Result<Option<&'a Value>, ConfigError> {
        self.seen.insert(key);
        match self.map.get(key) {
            Some(Value::String(s)) if s == "auto" => Err(ConfigError::Auto {
                key: self.key(key),
                reason: "nothing fills it here (`ds train` and `ds config check` do); write the \
                         value you want"
                    .into(),
            }),
            Some(Value::Null) | None => Ok(None),
            Some(v) => Ok(Some(v)),
        }
    }

    /// Whether the object has `key` (without marking it read).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub(crate) fn f64(&mut self, key: &'a str) -> Result<Option<f64>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.type_err(key, "a number", &Value::Number(n.clone()))),
            Some(v) => Err(self.type_err(key, "a number", v)),
        }
    }

    pub(crate) fn f32(&mut self, key: &'a str) -> Result<Option<f32>, ConfigError> {
        Ok(self.f64(key)?.map(|v| v as f32))
    }

    /// A non-negative integer (DeepSpeed accepts integral floats such as `5e8` for sizes).
    pub(crate) fn u64(&mut self, key: &'a str) -> Result<Option<u64>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
                    _ => {
                        Err(self.type_err(key, "a non-negative integer", &Value::Number(n.clone())))
                    }
                }
            }
            Some(v) => Err(self.type_err(key, "a non-negative integer", v)),
        }
    }

    pub(crate) fn bool(&mut self, key: &'a str) -> Result<Option<bool>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(key, "true or false", v)),
        }
    }

    pub(crate) fn str(&mut self, key: &'a str) -> Result<Option<&'a str>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.type_err(key, "a string", v)),
        }
    }

    /// A pair of numbers such as `betas`.
    pub(crate) fn pair(&mut self, key: &'a str) -> Result<Option<(f32, f32)>, ConfigError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_f64(), a[1].as_f64()) {
                (Some(x), Some(y)) => Ok(Some((x as f32, y as f32))),
                _ => Err(self.type_err(
                    key,
                    "two numbers, e.g. [0.9, 0.999]",
                    &Value::Array(a.clone()),
                )),
            },
            Some(v) => Err(self.type_err(key, "two numbers, e.g. [0.9, 0.999]", v)),
        }
    }

    /// A nested object, or `None` when absent.
    pub(crate) fn obj(&mut self, key: &'a str) -> Result<Option<Obj<'a>>, ConfigError> {
        let path = self.key(key);
        match self.raw(key)? {
            None => Ok(None),
            Some(v) => Obj::new(path, v).map(Some),
        }
    }

    fn type_err(&self, key: &str, expected: &'static str, found: &Value) -> ConfigError {
        ConfigError::Type {
            key: self.key(key),
            expected,
            found: describe(found),
        }
    }

    /// Fails on the first key not read, suggesting the closest of `known` (the keys this
    /// object accepts) and naming keys of DeepSpeed features ds does not implement, unless
    /// their value leaves the feature off ([`leaves_off`]). Keys starting with `_` are
    /// comments, as in the configs published with `"_comment"` entries.
    pub(crate) fn finish(
        self,
        known: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Result<(), ConfigError> {
        for (key, value) in self.map {
            if self.seen.contains(key.as_str()) || key.starts_with('_') {
                continue;
            }
            if let Some((_, what)) = unsupported.iter().find(|(k, _)| k == key) {
                if leaves_off(key, value) {
                    continue;
                }
                return Err(ConfigError::Unsupported {
                    key: self.key(key),
                    feature: (*what).to_string(),
                });
            }
            let all = known
                .iter()
                .copied()
                .chain(unsupported.iter().map(|(k, _)| *k));
            return Err(ConfigError::UnknownKey {
                key: self.key(key),
                suggestion: suggest(key, all).map(|s| self.key(s)),
            });
        }
        Ok(())
    }
}

/// A short description of a JSON value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        Value::Null => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_but_not_unrelated_words() {
        let known = ["train_batch_size", "gradient_clipping", "zero_optimization"];
        assert_eq!(
            suggest("train_batch_sizee", known),
            Some("train_batch_size")
        );
        assert_eq!(
            suggest("gradient_cliping", known),
            Some("gradient_clipping")
        );
        assert_eq!(
            suggest("Zero_Optimisation", known),
            Some("zero_optimization")
        );
        assert_eq!(suggest("banana", known), None);
    }
}
