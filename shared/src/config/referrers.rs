//! `referrers` (top level, and per entry of `repos`): whether an image's OCI 1.1 referrers —
//! signatures, attestations, SBOMs — are copied with it, and which artifact types.

use super::raw::{quote, Obj, Problems, Reported};
use serde_json::Value;

const FIELDS: &[&str] = &["enabled", "artifact_types"];
/// Longest artifact type accepted (ECR's limit on `artifactType`).
const MAX_ARTIFACT_TYPE_LEN: usize = 255;

/// Which referrers follow an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    /// Copy referrers at all (default `true`).
    pub enabled: bool,
    /// Artifact types of an image's own referrers to copy; empty (the default): every type.
    /// Referrers of a copied referrer (a signature on an SBOM) are copied whatever their type.
    pub artifact_types: Vec<String>,
}

impl Default for Referrers {
    fn default() -> Self {
        Referrers {
            enabled: true,
            artifact_types: Vec::new(),
        }
    }
}

/// `o.referrers`, each field defaulting to `inherited`'s.
pub fn parse(o: &Obj, inherited: &Referrers, p: &mut Problems) -> Referrers {
    let Ok(Some(r)) = Obj::open(o.value("referrers"), &o.path("referrers"), FIELDS, p) else {
        return inherited.clone();
    };
    let enabled = r.bool("enabled", p).ok().flatten();
    let artifact_types = match r.array("artifact_types", p) {
        Ok(Some(items)) => artifact_types(&r.path("artifact_types"), &items, p),
        Ok(None) | Err(Reported) => None,
    };
    Referrers {
        enabled: enabled.unwrap_or(inherited.enabled),
        artifact_types: artifact_types.unwrap_or_else(|| inherited.artifact_types.clone()),
    }
}

fn artifact_types(path: &str, items: &[(String, &Value)], p: &mut Problems) -> Option<Vec<String>> {
    if items.is_empty() {
        p.add(
            path,
            "must hold at least one artifact type; omit it to copy referrers of every type",
        );
        return None;
    }
    let mut types = Vec::new();
    for (item, value) in items {
        let Value::String(t) = value else {
            p.wrong_type(item, "string", value);
            continue;
        };
        match check_media_type(t) {
            Ok(()) => types.push(t.clone()),
            Err(why) => p.add(item, format!("{} {why}", quote(t))),
        }
    }
    (types.len() == items.len()).then_some(types)
}

/// A media type as RFC 6838 names them: `type/subtype`, each 1–127 of letters, digits and
/// `!#$&-^_.+`, starting with a letter or digit; no parameters.
fn check_media_type(t: &str) -> Result<(), &'static str> {
    if t.len() > MAX_ARTIFACT_TYPE_LEN {
        return Err("is longer than 255 characters");
    }
    let name = |s: &str| {
        (1..=127).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match t.split_once('/') {
        Some((ty, sub)) if name(ty) && name(sub) => Ok(()),
        _ => Err("is not a media type (type/subtype, such as application/vnd.dev.cosign.artifact.sig.v1+json)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value, inherited: &Referrers) -> (Referrers, Vec<String>) {
        let mut p = Problems::default();
        let o = Obj::open(&v, "repos[0]", &["referrers"], &mut p)
            .unwrap()
            .unwrap();
        let r = parse(&o, inherited, &mut p);
        (r, p.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_inherit_and_fields_override_one_by_one() {
        let top = Referrers {
            enabled: true,
            artifact_types: vec!["application/spdx+json".into()],
        };
        assert_eq!(parsed(json!({}), &top), (top.clone(), vec![]));
        assert_eq!(
            parsed(json!({"referrers": {"enabled": false}}), &top).0,
            Referrers {
                enabled: false,
                ..top.clone()
            }
        );
        let sig = "application/vnd.dev.cosign.artifact.sig.v1+json";
        assert_eq!(
            parsed(json!({"referrers": {"artifact_types": [sig]}}), &top).0,
            Referrers {
                enabled: true,
                artifact_types: vec![sig.into()]
            }
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let (_, problems) = parsed(
            json!({"referrers": {"enabled": "yes", "artifact_types": ["application/json", "sig", 3], "x": 1}}),
            &Referrers::default(),
        );
        assert_eq!(
            problems,
            [
                "repos[0].referrers.x: unknown field (expected one of: enabled, artifact_types)",
                "repos[0].referrers.enabled: expected boolean, got string \"yes\"",
                "repos[0].referrers.artifact_types[1]: \"sig\" is not a media type (type/subtype, such as application/vnd.dev.cosign.artifact.sig.v1+json)",
                "repos[0].referrers.artifact_types[2]: expected string, got number 3",
            ]
        );
        let (_, problems) = parsed(
            json!({"referrers": {"artifact_types": []}}),
            &Referrers::default(),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("repos[0].referrers.artifact_types: must hold"));
        let (_, problems) = parsed(json!({"referrers": true}), &Referrers::default());
        assert_eq!(
            problems,
            ["repos[0].referrers: expected object, got boolean true"]
        );
    }
}
