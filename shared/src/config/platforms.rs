//! `platforms` (top level, and per entry of `repos`): which platforms of a multi-arch image are
//! copied. Absent: every platform, and the index is copied as it is.

use super::raw::{quote, Obj, Problems, Reported};
use serde_json::Value;

/// One `os/architecture[/variant]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, …; `None` matches every variant.
    pub variant: Option<String>,
}

impl Platform {
    /// Whether an index entry's `platform` (os, architecture, variant) is this one. A missing
    /// variant on arm64 is `v8`, as the OCI image spec and containerd normalise it.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let normal = |v: Option<&str>| match (architecture, v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(want) => normal(Some(want)) == normal(variant),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `o.platforms`: `None` when absent (every platform; or `inherited`).
pub fn parse(
    o: &Obj,
    inherited: &Option<Vec<Platform>>,
    p: &mut Problems,
) -> Option<Vec<Platform>> {
    let path = o.path("platforms");
    let items = match o.array("platforms", p) {
        Ok(Some(items)) => items,
        Ok(None) | Err(Reported) => return inherited.clone(),
    };
    if items.is_empty() {
        p.add(
            &path,
            "must hold at least one platform (os/architecture, such as linux/amd64); omit it to copy every platform",
        );
        return inherited.clone();
    }
    let mut platforms = Vec::new();
    for (item, value) in &items {
        let Value::String(s) = value else {
            p.wrong_type(item, "string", value);
            continue;
        };
        match platform(s) {
            Some(pl) => platforms.push(pl),
            None => p.add(
                item,
                format!(
                    "{} is not a platform (os/architecture or os/architecture/variant, lowercase, such as linux/amd64 or linux/arm/v7)",
                    quote(s)
                ),
            ),
        }
    }
    (platforms.len() == items.len()).then_some(platforms)
}

fn platform(s: &str) -> Option<Platform> {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|w| word(w)) {
        return None;
    }
    Some(Platform {
        os: parts[0].to_string(),
        architecture: parts[1].to_string(),
        variant: parts.get(2).map(|v| v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value, inherited: &Option<Vec<Platform>>) -> (Option<Vec<Platform>>, Vec<String>) {
        let mut p = Problems::default();
        let o = Obj::open(&v, "repos[0]", &["platforms"], &mut p)
            .unwrap()
            .unwrap();
        let r = parse(&o, inherited, &mut p);
        (r, p.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn platforms_parse_inherit_and_match() {
        let (got, problems) = parsed(json!({"platforms": ["linux/amd64", "linux/arm/v7"]}), &None);
        assert!(problems.is_empty(), "{problems:?}");
        let got = got.unwrap();
        assert_eq!(got[0].to_string(), "linux/amd64");
        assert_eq!(got[1].to_string(), "linux/arm/v7");
        assert!(got[0].matches("linux", "amd64", None));
        assert!(!got[0].matches("linux", "arm64", None));
        assert!(got[1].matches("linux", "arm", Some("v7")));
        assert!(!got[1].matches("linux", "arm", Some("v6")));
        let arm64 = platform("linux/arm64/v8").unwrap();
        assert!(
            arm64.matches("linux", "arm64", None),
            "v8 is arm64's default"
        );
        assert!(platform("linux/arm64")
            .unwrap()
            .matches("linux", "arm64", Some("v8")));
        let inherited = Some(got.clone());
        assert_eq!(parsed(json!({}), &inherited).0, inherited);
        assert_eq!(parsed(json!({}), &None).0, None);
    }

    #[test]
    fn bad_platforms_name_their_field() {
        let (_, problems) = parsed(
            json!({"platforms": ["linux", "Linux/AMD64", 3, "a/b/c/d"]}),
            &None,
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("repos[0].platforms[0]: \"linux\" is not a platform"));
        assert!(problems[2].starts_with("repos[0].platforms[2]: expected string"));
        let (_, problems) = parsed(json!({"platforms": []}), &None);
        assert!(problems[0].starts_with("repos[0].platforms: must hold at least one platform"));
    }
}
