//! The config error: every problem found in one config, each with its JSON path.
//!
//! Invariant: a [`ConfigError`] always holds at least one [`Problem`]. When the config could not be
//! read or is not JSON at all, [`ConfigError::kind`] says so and the single problem sits at the root
//! (empty path).

use std::fmt;

/// One thing wrong with a config, at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a JSON path: `repos[2].tags[0]`, `registries["127.0.0.1:5000"].endpoint`;
    /// empty for the document itself.
    pub path: String,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Why a config was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The text is JSON but breaks the schema; `problems` lists every violation.
    Invalid,
    /// The config could not be read (missing file, S3 error, not UTF-8).
    Unreadable,
    /// The text is not JSON; the position is serde_json's (1-based).
    NotJson {
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
}

/// A rejected config: where it came from and everything wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config's name as given by the caller: a file path or `s3://bucket/key`.
    pub source_name: String,
    /// Every problem, in document order (never empty).
    pub problems: Vec<Problem>,
    /// Whether the config was invalid, unreadable or not JSON.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    /// A config that breaks the schema. `problems` must not be empty.
    pub fn invalid(source_name: impl Into<String>, problems: Vec<Problem>) -> ConfigError {
        debug_assert!(!problems.is_empty());
        ConfigError {
            source_name: source_name.into(),
            problems,
            kind: ConfigErrorKind::Invalid,
        }
    }

    /// A config that could not be read at all; `message` says why.
    pub fn unreadable(source_name: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            source_name: source_name.into(),
            problems: vec![Problem::new("", message)],
            kind: ConfigErrorKind::Unreadable,
        }
    }

    /// A config whose text is not JSON.
    pub fn not_json(source_name: impl Into<String>, err: &serde_json::Error) -> ConfigError {
        ConfigError {
            source_name: source_name.into(),
            problems: vec![Problem::new("", err.to_string())],
            kind: ConfigErrorKind::NotJson {
                line: err.line(),
                column: err.column(),
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.source_name;
        let message = self.problems.first().map_or("", |p| p.message.as_str());
        match self.kind {
            ConfigErrorKind::Unreadable => write!(f, "config {name} could not be read: {message}"),
            ConfigErrorKind::NotJson { .. } => {
                write!(f, "config {name} is not valid JSON: {message}")
            }
            ConfigErrorKind::Invalid => {
                write!(f, "config {name} has {} problem(s):", self.problems.len())?;
                for problem in &self.problems {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_problem() {
        let err = ConfigError::invalid(
            "cfg.json",
            vec![
                Problem::new("mode", "must be \"create\" or \"refresh\", got \"sync\""),
                Problem::new("", "expected object"),
            ],
        );
        assert_eq!(
            err.to_string(),
            "config cfg.json has 2 problem(s):\n  mode: must be \"create\" or \"refresh\", got \
             \"sync\"\n  (root): expected object"
        );
    }

    #[test]
    fn not_json_keeps_line_and_column() {
        let json_err = serde_json::from_str::<serde_json::Value>("{\n  \"mode\": }").unwrap_err();
        let err = ConfigError::not_json("c.json", &json_err);
        assert_eq!(
            err.kind,
            ConfigErrorKind::NotJson {
                line: 2,
                column: 11
            }
        );
        assert_eq!(
            err.to_string(),
            "config c.json is not valid JSON: expected value at line 2 column 11"
        );
        let err = ConfigError::unreadable("s3://b/k", "NoSuchKey");
        assert_eq!(
            err.to_string(),
            "config s3://b/k could not be read: NoSuchKey"
        );
    }
}
