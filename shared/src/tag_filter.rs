//! Tag filters: the seed's glob table, compiled once and matched against every tag of a repository.
//!
//! A [`TagFilter`] holds one or more glob patterns; a tag is selected when it matches **at least one**
//! of them. The syntax is exactly the seed's table:
//!
//! | Pattern       | Meaning                                                  |
//! | :------------ | :------------------------------------------------------- |
//! | `*`           | any sequence of characters, but **not** a `/`            |
//! | `**`          | any sequence of characters, **including** a `/`          |
//! | `?`           | exactly one character that is not a `/`                  |
//! | `{alt1,alt2}` | any of the alternatives (an empty alternative is allowed) |
//!
//! Matching covers the whole tag (`v1.*` does not match `xv1.2`). Character classes (`[abc]`) and
//! backslash escapes are accepted as globset implements them, although the seed does not list them.
//!
//! Invariants: a `TagFilter` always holds at least one valid, non-empty pattern, and
//! [`TagFilter::patterns`] returns them exactly as written, in order. Two filters are equal when their
//! pattern lists are equal.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The pattern that selects every tag; the default when a repository lists no `tags`.
pub const ALL_TAGS: &str = "**";

/// A pattern that could not be compiled.
///
/// Displays as `invalid glob "v{1": unclosed alternate group; missing '}' …`; the reason is globset's
/// own description of the problem, without the glob repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {pattern:?}: {reason}")]
pub struct TagFilterError {
    /// Position of the bad pattern in the list given to [`TagFilter::new`].
    pub index: usize,
    /// The bad pattern, as written.
    pub pattern: String,
    /// Why it is invalid, in lower case (e.g. `unclosed character class; missing ']'`).
    pub reason: String,
}

/// A compiled set of tag globs; see the [module docs](self) for the syntax.
#[derive(Debug, Clone)]
pub struct TagFilter {
    patterns: Vec<String>,
    set: GlobSet,
}

impl TagFilter {
    /// Compiles `patterns` into one matcher. Fails on the first invalid pattern (an empty list or an
    /// empty pattern are invalid too); use [`TagFilter::validate`] to learn about all of them.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<TagFilter, TagFilterError> {
        if patterns.is_empty() {
            return Err(TagFilterError {
                index: 0,
                pattern: String::new(),
                reason: "a tag filter needs at least one pattern".to_owned(),
            });
        }
        let mut builder = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            builder.add(parse(index, pattern.as_ref())?);
        }
        let set = builder.build().map_err(|err| TagFilterError {
            // Only the regex engine can fail here (size limits); blame the first pattern it names.
            index: err
                .glob()
                .and_then(|g| patterns.iter().position(|p| p.as_ref() == g))
                .unwrap_or(0),
            pattern: err.glob().unwrap_or_default().to_owned(),
            reason: lower(&err.kind().to_string()),
        })?;
        Ok(TagFilter {
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            set,
        })
    }

    /// Every invalid pattern in `patterns`, in order (empty when [`TagFilter::new`] would succeed,
    /// except for an empty list, which callers report themselves). Parsing is cheap: nothing is
    /// compiled.
    pub fn validate<S: AsRef<str>>(patterns: &[S]) -> Vec<TagFilterError> {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(index, p)| parse(index, p.as_ref()).err())
            .collect()
    }

    /// The filter that selects every tag (`["**"]`).
    pub fn all() -> TagFilter {
        TagFilter::new(&[ALL_TAGS]).expect("`**` is a valid glob")
    }

    /// Whether `tag` matches at least one pattern.
    pub fn matches(&self, tag: &str) -> bool {
        self.set.is_match(tag)
    }

    /// The patterns, exactly as given to [`TagFilter::new`].
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether this filter selects every tag because one of its patterns is `**`.
    pub fn is_all(&self) -> bool {
        self.patterns.iter().any(|p| p == ALL_TAGS)
    }
}

impl PartialEq for TagFilter {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for TagFilter {}

/// Parses one pattern with the seed's semantics (`*` and `?` stop at `/`, `{a,}` allowed).
fn parse(index: usize, pattern: &str) -> Result<Glob, TagFilterError> {
    let error = |reason: String| TagFilterError {
        index,
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern.is_empty() {
        return Err(error("an empty pattern matches no tag".to_owned()));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .empty_alternates(true)
        .build()
        .map_err(|err| error(lower(&err.kind().to_string())))
}

/// Lower-cases the first letter of a message (globset's texts are already lower case; regex
/// engine messages may not be).
fn lower(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> TagFilter {
        TagFilter::new(patterns).unwrap()
    }

    /// Asserts `pattern` matches every tag in `yes` and none in `no`.
    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let f = filter(&[pattern]);
        for tag in yes {
            assert!(f.matches(tag), "{pattern:?} should match {tag:?}");
        }
        for tag in no {
            assert!(!f.matches(tag), "{pattern:?} should not match {tag:?}");
        }
    }

    #[test]
    fn star_does_not_cross_slash() {
        check(
            "*",
            &["", "latest", "v1.2.3", "a.b-c_d"],
            &["a/b", "/x", "x/"],
        );
        check(
            "v1.*",
            &["v1.", "v1.0", "v1.2.3-rc1"],
            &["v1/2", "v2.0", "xv1.0", "v1"],
        );
        check("a/*", &["a/b", "a/"], &["a/b/c", "b/c"]);
    }

    #[test]
    fn double_star_crosses_slash() {
        check("**", &["", "latest", "a/b", "a/b/c", "/"], &[]);
        check("a/**", &["a/b", "a/b/c"], &["b/c"]);
        check("**/x", &["x", "a/x", "a/b/x"], &["a/y"]);
        assert!(TagFilter::all().matches("a/b"));
        assert!(TagFilter::all().matches("sha256-0123.sig"));
        assert!(!filter(&["*"]).matches("a/b"));
    }

    #[test]
    fn question_mark_is_one_non_separator_char() {
        check("?", &["a", "1", "."], &["", "ab", "/"]);
        check(
            "v?.?.?",
            &["v1.2.3", "v9.0.0"],
            &["v1.2.34", "v10.2.3", "v1.2", "v1/2.3"],
        );
        check(
            "v?.?",
            &["v1.2", "v0.9"],
            &["v1.23", "v12.3", "v1.2.3", "v1/2"],
        );
    }

    #[test]
    fn alternatives() {
        check(
            "{latest,stable}",
            &["latest", "stable"],
            &["lat", "beta", "latest,stable", "stablex"],
        );
        check("v{1,2}.*", &["v1.0", "v2.5"], &["v3.0"]);
        check(
            "release{,-candidate}",
            &["release", "release-candidate"],
            &["release-"],
        );
    }

    #[test]
    fn seed_examples() {
        let f = filter(&["v1.*", "latest"]);
        assert!(f.matches("v1.0") && f.matches("latest"));
        assert!(!f.matches("v2.0") && !f.matches("latest2"));
        let f = filter(&["v?.?.?", "v?.?"]);
        assert!(f.matches("v1.2.3") && f.matches("v1.2"));
        assert!(!f.matches("v1.2.34") && !f.matches("v1.23"));
        assert!(filter(&["stable"]).matches("stable"));
    }

    #[test]
    fn literal_patterns_match_whole_tag() {
        check("latest", &["latest"], &["latest-1", "not-latest", "LATEST"]);
    }

    #[test]
    fn patterns_kept_in_order_and_equality() {
        let f = filter(&["b", "a"]);
        assert_eq!(f.patterns(), ["b".to_owned(), "a".to_owned()]);
        assert_eq!(f, filter(&["b", "a"]));
        assert_ne!(f, filter(&["a", "b"]));
        assert_eq!(TagFilter::all().patterns(), ["**".to_owned()]);
        assert!(TagFilter::all().is_all() && !f.is_all());
    }

    #[test]
    fn invalid_patterns_are_reported_with_index() {
        let err = TagFilter::new(&["ok", "v{1"]).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(err.pattern, "v{1");
        assert!(err.reason.starts_with("unclosed alternate group"), "{err}");
        assert!(err
            .to_string()
            .starts_with(r#"invalid glob "v{1": unclosed alternate group"#));
        assert!(
            !err.reason.contains("v{1"),
            "reason repeats the glob: {}",
            err.reason
        );

        let all = TagFilter::validate(&["v}", "fine", "[a", "", "x\\"]);
        let got: Vec<_> = all.iter().map(|e| (e.index, e.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    0,
                    "unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)"
                ),
                (2, "unclosed character class; missing ']'"),
                (3, "an empty pattern matches no tag"),
                (4, "dangling '\\'"),
            ]
        );
        assert!(TagFilter::validate(&["**", "v?.*"]).is_empty());
    }

    #[test]
    fn empty_list_is_rejected() {
        let none: [&str; 0] = [];
        assert!(TagFilter::new(&none).is_err());
    }
}
