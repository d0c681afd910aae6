//! `--validation strict`: a shape-checked document against flagd's schema and the rules
//! no schema can express.
//!
//! The work is split so it can be remembered per flag: [`check_flag`] depends only on one
//! flag and the *names* of the shared rules; what depends on the shared rules' contents
//! (their own checks, the graph of references between them, and the variant names a
//! flag gets through a `$ref` in a result position) is done once per document in
//! [`check`].

use super::problem::{Path, Problem, ProblemKind, Problems, Seg};
use super::rules::{Outcome, Walk};
use super::schema::{self, Part};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What one flag's check found.
pub struct FlagFindings<'a> {
    pub problems: Vec<Problem>,
    /// Shared rules used as the flag's result, and where: their literal results must be
    /// variants of this flag, checked with the rules' contents in [`check`].
    pub result_refs: Vec<(&'a str, Path<'a>)>,
}

/// Checks one flag found at `base` (`["flags", name]` or `["flags", index]`).
pub fn check_flag<'a>(
    name: &'a str,
    flag: &'a Value,
    base: &[Seg<'a>],
    array_form: bool,
    evaluators: Option<&Map<String, Value>>,
) -> FlagFindings<'a> {
    let variants = flag.get("variants").and_then(Value::as_object);
    let mut walk = Walk::new(Some(name), variants, evaluators);
    if let Some(t) = flag.get("targeting") {
        let mut path = Path::new(base);
        path.push(Seg::Key("targeting"));
        walk.rule(t, &mut path);
    }
    let mut problems = walk.problems;
    // The walk's messages are the clearer ones; the schema speaks when it found nothing.
    if problems.is_empty() {
        let part = if array_form {
            Part::ArrayFlag
        } else {
            Part::Flag
        };
        if let Some(p) = schema::check(part, flag, || Path::new(base).pointer(), Some(name)) {
            problems.push(p);
        }
    }
    let result_refs = walk
        .outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Ref(r, path) => Some((r, path)),
            Outcome::Literal(..) => None,
        })
        .collect();
    FlagFindings {
        problems,
        result_refs,
    }
}

/// What a shared rule's own walk found.
struct Shared<'a> {
    outcomes: Vec<Outcome<'a>>,
    refs: Vec<(&'a str, Path<'a>)>,
}

/// What a document's shared rules and metadata are, checked once per document: what a
/// flag's check needs besides the flag itself.
pub struct Prepared<'a> {
    /// The document's shared rules (`$evaluators`).
    pub evaluators: Option<&'a Map<String, Value>>,
    shared: BTreeMap<&'a str, Shared<'a>>,
}

/// Checks the document-level parts (metadata, shared rules and the references between
/// them) into `out`, and returns what the flags' checks need.
pub fn prepare<'a>(top: &'a Map<String, Value>, out: &mut Problems) -> Prepared<'a> {
    if let Some(meta) = top.get("metadata") {
        out.extend(schema::check(
            Part::Metadata,
            meta,
            || "/metadata".into(),
            None,
        ));
    }
    let evaluators = top.get("$evaluators").and_then(Value::as_object);
    let mut shared: BTreeMap<&str, Shared<'_>> = BTreeMap::new();
    for (name, rule) in evaluators.into_iter().flatten() {
        let mut walk = Walk::new(None, None, evaluators);
        let mut path = Path::new(&[Seg::Key("$evaluators"), Seg::Key(name)]);
        walk.rule(rule, &mut path);
        if walk.problems.is_empty() {
            out.extend(schema::check(Part::Rule, rule, || path.pointer(), None));
        }
        out.extend(walk.problems);
        shared.insert(
            name,
            Shared {
                outcomes: walk.outcomes,
                refs: walk.refs,
            },
        );
    }
    reference_graph(&shared, out);
    Prepared { evaluators, shared }
}

/// Every strict problem of one flag found at `seg` under `flags`, into `out`.
pub fn flag<'a>(
    doc: &Prepared<'_>,
    name: &'a str,
    seg: Seg<'a>,
    flag: &'a Value,
    array_form: bool,
    out: &mut Problems,
) {
    let found = check_flag(
        name,
        flag,
        &[Seg::Key("flags"), seg],
        array_form,
        doc.evaluators,
    );
    out.extend(found.problems);
    let variants = flag.get("variants").and_then(Value::as_object);
    for (rule, at) in found.result_refs {
        for (literal, inside) in literals(rule, &doc.shared) {
            if variants.is_some_and(|v| !v.contains_key(literal)) {
                out.push(Problem {
                    kind: ProblemKind::UnknownVariant,
                    flag: Some(name.to_string()),
                    pointer: at.pointer(),
                    message: format!(
                        "the shared rule {rule:?} can return {literal:?} (at {}), which is \
                         not a variant of this flag",
                        inside.pointer()
                    ),
                    fix: "add that variant, or use a rule that returns this flag's variants".into(),
                });
            }
        }
    }
}

/// Every strict problem of a shape-checked document (the first few, and a count).
pub fn check(doc: &Value) -> Problems {
    let mut out = Problems::default();
    let Some(top) = doc.as_object() else {
        return out;
    };
    let prepared = prepare(top, &mut out);
    let flags: Box<dyn Iterator<Item = (&str, Seg<'_>, &Value)>> = match top.get("flags") {
        Some(Value::Object(m)) => Box::new(m.iter().map(|(k, f)| (k.as_str(), Seg::Key(k), f))),
        Some(Value::Array(a)) => Box::new(a.iter().enumerate().map(|(i, f)| {
            let key = f.get("key").and_then(Value::as_str).unwrap_or_default();
            (key, Seg::Index(i), f)
        })),
        _ => Box::new(std::iter::empty()),
    };
    let array_form = top.get("flags").is_some_and(Value::is_array);
    for (name, seg, f) in flags {
        flag(&prepared, name, seg, f, array_form, &mut out);
    }
    out
}

/// The literal results of a shared rule, following shared rules in its result positions
/// (each rule once, so a cycle ends).
fn literals<'a>(rule: &'a str, shared: &BTreeMap<&str, Shared<'a>>) -> Vec<(&'a str, Path<'a>)> {
    let mut seen = vec![rule];
    let mut todo = vec![rule];
    let mut found = Vec::new();
    while let Some(r) = todo.pop() {
        for o in shared
            .get(r)
            .map(|s| s.outcomes.as_slice())
            .unwrap_or_default()
        {
            match o {
                Outcome::Literal(l, p) => found.push((*l, p.clone())),
                Outcome::Ref(next, _) if !seen.contains(next) => {
                    seen.push(next);
                    todo.push(next);
                }
                Outcome::Ref(..) => {}
            }
        }
    }
    found
}

/// References between shared rules: no cycles, and each to a rule that comes later in
/// the document as clients receive it (keys sorted). Providers substitute shared rules
/// into the flags one at a time, in that order, and once: a reference inside a shared
/// rule to one already substituted stays unresolved (measured with the Python provider:
/// an evaluation error). See docs/validation.md.
fn reference_graph(shared: &BTreeMap<&str, Shared<'_>>, out: &mut Problems) {
    for (from, s) in shared {
        for (to, at) in &s.refs {
            let circle = route(to, from, shared);
            // A circle is reported once, from its first name.
            if circle.as_ref().is_some_and(|r| r.iter().any(|n| n < from)) {
                continue;
            }
            if let Some(route) = circle {
                out.push(Problem {
                    kind: ProblemKind::RefCycle,
                    flag: None,
                    pointer: at.pointer(),
                    message: format!(
                        "shared rules refer to each other in a circle: {}",
                        std::iter::once(*from)
                            .chain(route)
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    ),
                    fix: "break the circle: a shared rule cannot include itself".into(),
                });
            } else if to < from {
                out.push(Problem {
                    kind: ProblemKind::RefOrder,
                    flag: None,
                    pointer: at.pointer(),
                    message: format!(
                        "shared rule {from:?} refers to {to:?}, which clients substitute \
                         before {from:?} (in name order), so this $ref would stay unresolved"
                    ),
                    fix: format!(
                        "copy the rule {to:?} here, or rename so that the referring rule's \
                         name sorts first"
                    ),
                });
            }
        }
    }
}

/// The names from `start` to `goal` along references, if `goal` is reachable.
fn route<'a>(
    start: &'a str,
    goal: &str,
    shared: &BTreeMap<&str, Shared<'a>>,
) -> Option<Vec<&'a str>> {
    let mut seen: Vec<&str> = Vec::new();
    let mut stack: Vec<Vec<&'a str>> = vec![vec![start]];
    while let Some(route) = stack.pop() {
        let last = *route.last().expect("never empty");
        if last == goal {
            return Some(route);
        }
        if seen.contains(&last) {
            continue;
        }
        seen.push(last);
        for (next, _) in shared
            .get(last)
            .map(|s| s.refs.as_slice())
            .unwrap_or_default()
        {
            let mut longer = route.clone();
            longer.push(next);
            stack.push(longer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::flags::{parse, DocumentError, Options, ProblemKind, Validation};

    fn problems(doc: &str) -> Vec<(ProblemKind, String)> {
        match parse(doc.as_bytes(), &Options::default()) {
            Ok(_) => Vec::new(),
            Err(DocumentError::Invalid { problems }) => problems
                .list
                .iter()
                .map(|p| (p.kind, p.pointer.clone()))
                .collect(),
            Err(other) => panic!("{doc}: not a strict refusal: {other}"),
        }
    }

    const B: &str = r#""state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on""#;

    #[test]
    fn the_issues_examples_are_refused_with_their_pointers() {
        let cases = [
            (
                format!(
                    r#"{{"flags":{{"f":{{{B},"targeting":{{"if":[{{"starts_wiht":[{{"var":"email"}},"x"]}},"on","off"]}}}}}}}}"#
                ),
                (
                    ProblemKind::UnknownOperator,
                    "/flags/f/targeting/if/0/starts_wiht",
                ),
            ),
            (
                format!(
                    r#"{{"flags":{{"f":{{{B},"targeting":{{"if":[{{"$ref":"nope"}},"on","off"]}}}}}}}}"#
                ),
                (ProblemKind::UnresolvedRef, "/flags/f/targeting/if/0/$ref"),
            ),
            (
                format!(r#"{{"flags":{{"f":{{{B},"targeting":{{"if":[true,"zzz","off"]}}}}}}}}"#),
                (ProblemKind::UnknownVariant, "/flags/f/targeting/if/1"),
            ),
            (
                format!(
                    r#"{{"flags":[{{"key":"f",{B},"targeting":{{"fractional":[["on",1],["nope",1]]}}}}]}}"#
                ),
                (
                    ProblemKind::UnknownVariant,
                    "/flags/0/targeting/fractional/1/0",
                ),
            ),
            (
                format!(r#"{{"flags":{{"f":{{{B},"targeting":{{"fractional":[["on","1"]]}}}}}}}}"#),
                (
                    ProblemKind::OperatorArguments,
                    "/flags/f/targeting/fractional/0",
                ),
            ),
            (
                format!(
                    r#"{{"flags":{{"f":{{{B},"targeting":{{"sem_ver":["1.0.0","~~","1.0.0"]}}}}}}}}"#
                ),
                (
                    ProblemKind::OperatorArguments,
                    "/flags/f/targeting/sem_ver/1",
                ),
            ),
            (
                r#"{"$evaluators":{"a":{"!":{"$ref":"b"}},"b":{"!":{"$ref":"a"}}},"flags":{}}"#
                    .to_string(),
                (ProblemKind::RefCycle, "/$evaluators/a/!/$ref"),
            ),
            (
                r#"{"$evaluators":{"a":{"==":[1,1]},"b":{"!":{"$ref":"a"}}},"flags":{}}"#
                    .to_string(),
                (ProblemKind::RefOrder, "/$evaluators/b/!/$ref"),
            ),
            (
                format!(
                    r#"{{"$evaluators":{{"r":{{"if":[true,"zzz",null]}}}},"flags":{{"f":{{{B},"targeting":{{"if":[true,{{"$ref":"r"}},null]}}}}}}}}"#
                ),
                (ProblemKind::UnknownVariant, "/flags/f/targeting/if/1/$ref"),
            ),
            (
                format!(
                    r#"{{"flags":{{"f":{{{B},"targeting":{{"$ref":"r"}}}}}},"$evaluators":{{"r":{{"==":[1,1]}}}}}}"#
                ),
                (ProblemKind::Schema, "/flags/f/targeting"),
            ),
        ];
        for (doc, (kind, pointer)) in cases {
            let found = problems(&doc);
            assert_eq!(found, vec![(kind, pointer.to_string())], "{doc}");
        }
    }

    #[test]
    fn several_problems_are_reported_and_basic_mode_only_warns() {
        let doc = format!(
            r#"{{"flags":{{"a":{{{B},"targeting":{{"iff":[]}}}},"b":{{{B},"targeting":{{"if":[true,"x"]}}}}}}}}"#
        );
        assert_eq!(problems(&doc).len(), 2);
        let basic = Options {
            validation: Validation::Basic,
            ..Options::default()
        };
        let d = parse(doc.as_bytes(), &basic).unwrap();
        assert_eq!(d.warnings.len(), 2);
        assert!(d.warnings.to_string().contains("(did you mean \"if\"?)"));
        let e = parse(doc.as_bytes(), &Options::default()).unwrap_err();
        assert_eq!(e.reason(), "invalid_rules");
        assert_eq!(e.lines().len(), 2);
    }

    #[test]
    fn valid_forms_are_accepted() {
        for doc in [
            format!(r#"{{"flags":[{{"key":"f",{B},"targeting":{{}}}}]}}"#),
            format!(r#"{{"flags":{{"f":{{{B},"targeting":{{}}}}}}}}"#),
            r#"{"flags":{"f":{"state":"ENABLED","variants":{"a":1},"defaultVariant":null}}}"#.into(),
            r#"{"flags":{"f":{"state":"ENABLED","variants":{"a":{"x":[1]}}}}}"#.into(),
            format!(r#"{{"$evaluators":{{"a":{{"!":{{"$ref":"b"}}}},"b":{{"==":[1,1]}}}},"flags":{{"f":{{{B},"targeting":{{"if":[{{"$ref":"a"}},"on",null]}}}}}}}}"#),
            format!(r#"{{"flags":{{"f":{{{B},"targeting":{{"if":[{{"var":"$flagd.timestamp"}},{{"var":"v"}},"off"]}}}}}}}}"#),
            r#"{"flags":{"f":{"state":"ENABLED","variants":{"true":1,"false":0},"targeting":{"if":[{"var":"x"},true,false]}}}}"#.into(),
        ] {
            assert_eq!(problems(&doc), vec![], "{doc}");
        }
    }
}
