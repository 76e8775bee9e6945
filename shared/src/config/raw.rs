//! Phase one: walking the raw `serde_json::Value` by hand, collecting problems instead of stopping.
//!
//! Conventions every caller relies on:
//! - a field set to `null` is treated exactly like a missing field (Terraform's `jsonencode` writes
//!   `null` for unset optional attributes);
//! - a getter that finds a wrong type records one problem and returns `Err(Reported)`, so the caller
//!   can skip checks that would only repeat it;
//! - unknown fields are reported in sorted order, before the object's known fields are checked.

use serde_json::{Map, Value};

use super::Problem;

/// Marker: the value was bad and a problem has already been recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// What a getter returns: `Ok(None)` when absent or `null`, `Ok(Some(v))` when well typed.
pub type Field<T> = Result<Option<T>, Reported>;

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// Records a wrong-type problem and returns the marker.
    pub fn wrong_type(&mut self, path: &str, expected: &str, got: &Value) -> Reported {
        self.add(path, format!("expected {expected}, got {}", describe(got)));
        Reported
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain identifier; `key` alone at the root.
pub fn child(path: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (plain, path.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", quote(key)),
    }
}

/// `path[index]`.
pub fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A JSON string literal for `s`.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// A short description of a value for messages: `number 5`, `string "x"`, `null`, `array`.
pub fn describe(value: &Value) -> String {
    const MAX: usize = 60;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > MAX => {
            let cut: String = s.chars().take(MAX).collect();
            format!("string {}…", quote(&cut))
        }
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(a) => format!("array of {} item(s)", a.len()),
        Value::Object(_) => "object".to_owned(),
    }
}

/// An object being walked, with its path.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    /// Opens `value` as an object allowing only `fields`; reports a wrong type or unknown fields.
    /// `Ok(None)` when `value` is null.
    pub fn open(
        value: &'a Value,
        path: &str,
        fields: &[&str],
        problems: &mut Problems,
    ) -> Field<Obj<'a>> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            other => return Err(problems.wrong_type(path, "object", other)),
        };
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| !fields.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            problems.add(
                &child(path, key),
                format!("unknown field (expected one of: {})", fields.join(", ")),
            );
        }
        Ok(Some(Obj {
            map,
            path: path.to_owned(),
        }))
    }

    /// The path of field `key`.
    pub fn path(&self, key: &str) -> String {
        child(&self.path, key)
    }

    /// The raw value of `key`, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The raw value of `key` or `null`.
    pub fn value(&self, key: &str) -> &'a Value {
        static NULL: Value = Value::Null;
        self.map.get(key).unwrap_or(&NULL)
    }

    /// A string field.
    pub fn string(&self, key: &str, problems: &mut Problems) -> Field<&'a str> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(problems.wrong_type(&self.path(key), "string", other)),
        }
    }

    /// A boolean field.
    pub fn bool(&self, key: &str, problems: &mut Problems) -> Field<bool> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(problems.wrong_type(&self.path(key), "boolean", other)),
        }
    }

    /// An integer field within `min..=max`.
    pub fn integer(&self, key: &str, min: u64, max: u64, problems: &mut Problems) -> Field<u64> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path(key);
        let in_range = match value {
            Value::Number(n) if n.is_u64() || n.is_i64() => {
                n.as_u64().filter(|v| (min..=max).contains(v))
            }
            other => return Err(problems.wrong_type(&path, "integer", other)),
        };
        match in_range {
            Some(v) => Ok(Some(v)),
            None => {
                problems.add(
                    &path,
                    format!("must be between {min} and {max}, got {value}"),
                );
                Err(Reported)
            }
        }
    }

    /// An array field; items are returned with their paths.
    pub fn array(&self, key: &str, problems: &mut Problems) -> Field<Vec<(String, &'a Value)>> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (item(&path, i), v))
                    .collect(),
            )),
            Some(other) => Err(problems.wrong_type(&path, "array", other)),
        }
    }

    /// An object field whose keys are free-form (a map); entries come sorted by key.
    pub fn map(
        &self,
        key: &str,
        problems: &mut Problems,
    ) -> Field<Vec<(&'a str, String, &'a Value)>> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                let mut entries: Vec<_> = map
                    .iter()
                    .map(|(k, v)| (k.as_str(), child(&path, k), v))
                    .collect();
                entries.sort_by_key(|(k, _, _)| *k);
                Ok(Some(entries))
            }
            Some(other) => Err(problems.wrong_type(&path, "object", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(child("", "mode"), "mode");
        assert_eq!(child("repos[0]", "tags"), "repos[0].tags");
        assert_eq!(
            child("registries", "127.0.0.1:5000"),
            r#"registries["127.0.0.1:5000"]"#
        );
        assert_eq!(child("", "a b"), r#"["a b"]"#);
        assert_eq!(item("repos", 3), "repos[3]");
    }

    #[test]
    fn describes_values() {
        assert_eq!(describe(&json!(null)), "null");
        assert_eq!(describe(&json!(true)), "boolean true");
        assert_eq!(describe(&json!(1.5)), "number 1.5");
        assert_eq!(describe(&json!("x\"y")), r#"string "x\"y""#);
        assert_eq!(describe(&json!([1, 2])), "array of 2 item(s)");
        assert_eq!(describe(&json!({})), "object");
        assert!(describe(&json!("a".repeat(100))).ends_with("…"));
    }

    #[test]
    fn getters_report_types_and_treat_null_as_absent() {
        let v = json!({"s": 1, "b": "yes", "n": -1, "f": 2.5, "z": null, "x": 3});
        let mut p = Problems::default();
        let o = Obj::open(&v, "o", &["s", "b", "n", "f", "z"], &mut p)
            .unwrap()
            .unwrap();
        assert_eq!(o.string("s", &mut p), Err(Reported));
        assert_eq!(o.bool("b", &mut p), Err(Reported));
        assert_eq!(o.integer("n", 1, 9, &mut p), Err(Reported));
        assert_eq!(o.integer("f", 1, 9, &mut p), Err(Reported));
        assert_eq!(o.string("z", &mut p), Ok(None));
        assert_eq!(o.integer("missing", 1, 9, &mut p), Ok(None));
        let got: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "o.x: unknown field (expected one of: s, b, n, f, z)",
                "o.s: expected string, got number 1",
                "o.b: expected boolean, got string \"yes\"",
                "o.n: must be between 1 and 9, got -1",
                "o.f: expected integer, got number 2.5",
            ]
        );
        assert!(Obj::open(&json!(null), "o", &[], &mut p).unwrap().is_none());
    }
}
