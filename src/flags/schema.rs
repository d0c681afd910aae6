//! flagd's published JSON schemas (flags.json, targeting.json, flagd.json; vendored in
//! `schemas/`, see `schemas/NOTICE.md`), compiled once and applied one part at a time.
//!
//! Each flag is checked alone against `flags.json#/definitions/anyFlag` (or the array
//! form's item, which adds `key`), each shared rule against `targeting.json`, and the
//! document's metadata against its definition. Together that is what validating the whole
//! document against `flags.json` (or `flagd.json` for the array form) checks, given the
//! shape checks already made (an object with `flags`; non-empty names), but a flag's result
//! depends on that flag alone, so it can be remembered per flag.
//!
//! The `jsonschema` crate does the work (no hand-written copy of the schema) with its
//! network and file resolution compiled out: the three files are registered under their
//! `$id`s, so every `$ref` resolves from the binary.

use super::problem::{Problem, ProblemKind};
use jsonschema::{error::ValidationErrorKind, Registry, ValidationError, Validator};
use serde_json::{json, Value};
use std::sync::LazyLock;

/// The flagd-schemas release the vendored files come from.
pub const VERSION: &str = env!("FLAGD_SCHEMA_VERSION");

/// `--version`: this release and the schema release it validates against.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (flagd schemas ",
    env!("FLAGD_SCHEMA_VERSION"),
    ")"
);

const FLAGS_ID: &str = "https://flagd.dev/schema/v0/flags.json";
const TARGETING_ID: &str = "https://flagd.dev/schema/v0/targeting.json";
const FLAGD_ID: &str = "https://flagd.dev/schema/v0/flagd.json";
const FLAGS_JSON: &str = include_str!("schemas/flags.json");
const TARGETING_JSON: &str = include_str!("schemas/targeting.json");
const FLAGD_JSON: &str = include_str!("schemas/flagd.json");

/// The compiled parts of the schema.
struct Schemas {
    /// One flag of the map form (`flags.json#/definitions/anyFlag`).
    flag: Validator,
    /// One flag of the array form (`flags.json#/definitions/flagsArray/items`).
    array_flag: Validator,
    /// One shared rule, or a flag's `targeting` (`targeting.json`).
    rule: Validator,
    /// The document's `metadata` (`baseConfig/properties/metadata`).
    metadata: Validator,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let parse = |text: &str| -> Value {
        serde_json::from_str(text).expect("the vendored flagd schemas are valid JSON")
    };
    let registry = Registry::new()
        .add(FLAGS_ID, parse(FLAGS_JSON))
        .and_then(|r| r.add(TARGETING_ID, lenient_sem_ver(parse(TARGETING_JSON))))
        .and_then(|r| r.add(FLAGD_ID, parse(FLAGD_JSON)))
        .and_then(|r| r.prepare())
        .expect("the vendored flagd schemas register");
    let build = |reference: String| {
        jsonschema::options()
            .offline()
            .with_registry(&registry)
            .build(&json!({ "$ref": reference }))
            .unwrap_or_else(|e| panic!("the vendored flagd schema compiles ({reference}): {e}"))
    };
    Schemas {
        flag: build(format!("{FLAGS_ID}#/definitions/anyFlag")),
        array_flag: build(format!("{FLAGS_ID}#/definitions/flagsArray/items")),
        rule: build(TARGETING_ID.to_string()),
        metadata: build(format!(
            "{FLAGS_ID}#/definitions/baseConfig/properties/metadata"
        )),
    }
});

/// The one place the vendored schema is loosened: `semVerString` in targeting.json
/// allows only full `MAJOR.MINOR.PATCH` versions, but every flagd provider compares a
/// `v` prefix and partial versions (`v1.0.0`, `1.1`, `1`) as the flagd testbed's
/// `semver-v-prefix-flag` and `semver-partial-version-flag` expect, and the Python
/// provider evaluates them without error (integration/validation/accepted/
/// sem-ver-lenient-versions.json, checked in compat_python.rs). Refusing them would be a
/// false refusal, so the pattern is replaced by one that also takes those forms; the file
/// itself stays as published (docs/validation.md).
fn lenient_sem_ver(mut targeting: Value) -> Value {
    const PATTERN: &str = r"^[vV]?(0|[1-9]\d*)(?:\.(0|[1-9]\d*)){0,2}(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$";
    let pattern = targeting.pointer_mut("/definitions/semVerString/pattern");
    *pattern.expect("targeting.json defines semVerString's pattern") = Value::from(PATTERN);
    targeting
}

/// Which part of the schema a value is checked against.
#[derive(Clone, Copy, Debug)]
pub enum Part {
    /// A flag in the map form.
    Flag,
    /// A flag in the array form (with its `key`).
    ArrayFlag,
    /// A shared rule (`$evaluators` entry).
    Rule,
    /// The document's `metadata`.
    Metadata,
}

/// Checks `value` against `part`. `pointer` gives where `value` sits in the document (the
/// reported pointers extend it; built only when there is a problem) and `flag` the flag
/// it belongs to. At most one problem per value: the most specific schema error (the
/// deepest in the value), as a person would look for it.
pub fn check(
    part: Part,
    value: &Value,
    pointer: impl FnOnce() -> String,
    flag: Option<&str>,
) -> Option<Problem> {
    let s = &*SCHEMAS;
    let validator = match part {
        Part::Flag => &s.flag,
        Part::ArrayFlag => &s.array_flag,
        Part::Rule => &s.rule,
        Part::Metadata => &s.metadata,
    };
    if validator.is_valid(value) {
        return None;
    }
    let first = validator.iter_errors(value).next()?;
    let best = most_specific(&first);
    Some(Problem {
        kind: ProblemKind::Schema,
        flag: flag.map(str::to_string),
        pointer: format!("{}{}", pointer(), best.instance_path().as_str()),
        message: describe(best),
        fix: format!("see flagd's schema (flags.json / targeting.json {VERSION})"),
    })
}

/// Inside an `anyOf` / `oneOf` failure, the branch with the fewest errors (the form the
/// author meant: a boolean flag with a bad rule fails the boolean branch on the rule
/// only, the number branch on every variant too) and, between those, the error deepest in
/// the value (the branch that got furthest).
fn most_specific<'a>(e: &'a ValidationError<'a>) -> &'a ValidationError<'a> {
    let context = match e.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            context
        }
        _ => return e,
    };
    let mut best: Option<(std::cmp::Reverse<usize>, usize, &ValidationError<'_>)> = None;
    for branch in context {
        let Some(deepest) = branch.iter().map(most_specific).max_by_key(|c| depth(c)) else {
            continue;
        };
        let rank = (std::cmp::Reverse(branch.len()), depth(deepest));
        if best.as_ref().is_none_or(|(n, d, _)| rank > (*n, *d)) {
            best = Some((rank.0, rank.1, deepest));
        }
    }
    best.map_or(e, |(_, _, b)| b)
}

fn depth(e: &ValidationError<'_>) -> usize {
    e.instance_path().as_str().matches('/').count()
}

/// The error's message, without a long copy of the offending value.
fn describe(e: &ValidationError<'_>) -> String {
    const LIMIT: usize = 160;
    let text = match e.kind() {
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            "matches none of the forms the schema allows here".to_string()
        }
        _ if e.instance().to_string().len() > 40 => e.masked().to_string(),
        _ => e.to_string(),
    };
    if text.chars().count() > LIMIT {
        let cut: String = text.chars().take(LIMIT).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_schemas_compile_and_judge() {
        let flag = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "targeting": {"if": [{"==": [{"var": "x"}, 1]}, "on", null]}});
        assert!(check(Part::Flag, &flag, || "/flags/a".into(), Some("a")).is_none());
        let bad = json!({"state": "ENABLED", "variants": {"on": true},
            "targeting": {"sem_ver": [{"var": "v"}, "~~", "1.0.0"]}});
        let p = check(Part::Flag, &bad, || "/flags/a".into(), Some("a")).unwrap();
        assert_eq!(p.pointer, "/flags/a/targeting/sem_ver/1", "{p}");
        assert_eq!(p.kind, ProblemKind::Schema);
        assert!(check(Part::ArrayFlag, &flag, || "/flags/0".into(), None).is_some());
        assert!(check(Part::Rule, &json!({"in": ["a", "b"]}), || "".into(), None).is_none());
        // draft-07 ignores the siblings of `$ref`: flagSetId may be any scalar.
        assert!(check(
            Part::Metadata,
            &json!({"flagSetId": 1}),
            || "/metadata".into(),
            None
        )
        .is_none());
        assert!(check(
            Part::Metadata,
            &json!({"v": [1]}),
            || "/metadata".into(),
            None
        )
        .is_some());
        assert_eq!(VERSION, "0.2.15");
    }

    #[test]
    fn sem_ver_takes_the_versions_providers_compare_and_nothing_looser() {
        let rule = |v: &str| json!({"sem_ver": [{"var": "version"}, ">=", v]});
        for ok in [
            "1.0.0",
            "v1.0.0",
            "V2.1.3",
            "1.1",
            "1",
            "1.2.3-rc.1+build.5",
            "v1.2-beta",
        ] {
            assert!(
                check(Part::Rule, &rule(ok), || "".into(), None).is_none(),
                "{ok}"
            );
        }
        for bad in ["", "x1.0.0", "1.0.0.0", "01.0.0", "1.0.", "vv1", "1..0"] {
            assert!(
                check(Part::Rule, &rule(bad), || "".into(), None).is_some(),
                "{bad}"
            );
        }
    }
}
