//! The operators a targeting rule may use, and what flagd's own operators need.
//!
//! The list is the one in flagd's `targeting.json` (v0.2.15): JsonLogic's standard
//! operators flagd allows plus flagd's `fractional`, `sem_ver`, `starts_with`, `ends_with`.
//! The argument checks follow the same schema and the providers' implementations
//! (openfeature-provider-flagd's `custom_ops.py`, flagd's Go evaluators).

use serde_json::Value;

/// Every operator `targeting.json` accepts (`$ref` is handled apart).
pub const KNOWN: &[&str] = &[
    // data access
    "var",
    "missing",
    "missing_some",
    // logic and comparison
    "if",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    // arithmetic
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    // arrays
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    // strings
    "cat",
    "substr",
    // flagd
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
];

/// The comparison operators `sem_ver` accepts as its second argument.
pub const SEM_VER_OPERATORS: &[&str] = &["=", "!=", ">", "<", ">=", "<=", "~", "^"];

pub fn is_known(op: &str) -> bool {
    KNOWN.contains(&op)
}

/// The closest name in `candidates` to `name`, when it is a plausible typo (at most two
/// edits, counting a swap of neighbours as one, and fewer edits than the name is long).
pub fn closest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|(d, c)| *d <= 2 && *d < name.chars().count().max(c.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean "x"?)`, or nothing.
pub fn did_you_mean<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// What is wrong with the arguments of one of flagd's own operators, as (message, fix),
/// with the index of the argument at fault (`None`: the argument list itself).
pub struct ArgError {
    pub index: Option<usize>,
    pub message: String,
    pub fix: String,
}

fn arg_error(index: Option<usize>, message: String, fix: &str) -> Option<ArgError> {
    Some(ArgError {
        index,
        message,
        fix: fix.to_string(),
    })
}

/// Checks the arguments of `op` (only flagd's own operators; the standard ones are left to
/// the schema). Computed arguments (rules) are not judged: only literals can be.
pub fn check_args(op: &str, args: &Value) -> Option<ArgError> {
    match op {
        "starts_with" | "ends_with" => match args {
            Value::Array(a) if a.len() == 2 => None,
            _ => arg_error(
                None,
                format!("{op} takes two arguments, found {}", count(args)),
                &format!("write {{\"{op}\": [{{\"var\": \"email\"}}, \"text\"]}}"),
            ),
        },
        "sem_ver" => match args {
            Value::Array(a) if a.len() == 3 => match &a[1] {
                Value::String(s) if SEM_VER_OPERATORS.contains(&s.as_str()) => None,
                Value::String(s) => arg_error(
                    Some(1),
                    format!(
                        "unknown sem_ver comparison {s:?}{}",
                        did_you_mean(s, SEM_VER_OPERATORS.iter().copied())
                    ),
                    "use one of =, !=, >, <, >=, <=, ~ (same minor), ^ (same major)",
                ),
                _ => arg_error(
                    Some(1),
                    "the sem_ver comparison must be a literal string".into(),
                    "use one of =, !=, >, <, >=, <=, ~, ^",
                ),
            },
            _ => arg_error(
                None,
                format!("sem_ver takes three arguments, found {}", count(args)),
                "write {\"sem_ver\": [{\"var\": \"version\"}, \">=\", \"1.2.3\"]}",
            ),
        },
        "fractional" => fractional(args),
        _ => None,
    }
}

fn count(args: &Value) -> String {
    match args {
        Value::Array(a) => a.len().to_string(),
        _ => "a single value".into(),
    }
}

/// `fractional`: an optional bucketing key (a rule), then buckets `[variant, weight]`
/// (or `[variant]`, weight 1) whose weights are non-negative integers or rules.
fn fractional(args: &Value) -> Option<ArgError> {
    const FIX: &str = "write {\"fractional\": [[\"on\", 50], [\"off\", 50]]}, \
                       optionally with a bucketing rule first";
    let Value::Array(a) = args else {
        return arg_error(None, "fractional takes a list of buckets".into(), FIX);
    };
    let first_bucket = usize::from(!matches!(a.first(), Some(Value::Array(_))));
    if a.len() <= first_bucket {
        return arg_error(None, "fractional has no buckets".into(), FIX);
    }
    for (i, bucket) in a.iter().enumerate().skip(first_bucket) {
        let Value::Array(b) = bucket else {
            return arg_error(
                Some(i),
                "a fractional bucket must be a list [variant, weight]".into(),
                FIX,
            );
        };
        if b.is_empty() || b.len() > 2 {
            return arg_error(
                Some(i),
                format!(
                    "a fractional bucket has one or two items [variant, weight], found {}",
                    b.len()
                ),
                FIX,
            );
        }
        match b.get(1) {
            None | Some(Value::Object(_)) => {}
            Some(Value::Number(n)) if n.is_u64() => {}
            Some(w) => {
                let fix = match w {
                    Value::String(s) if s.parse::<u64>().is_ok() => {
                        format!("write the weight as a number: {s}, not \"{s}\"")
                    }
                    _ => "a weight is a non-negative integer, or a rule computing one".into(),
                };
                return arg_error(
                    Some(i),
                    format!(
                        "fractional weight {} is not a non-negative integer",
                        super::shape::brief(w)
                    ),
                    &fix,
                );
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typos_get_a_hint_and_strangers_do_not() {
        assert_eq!(
            closest("starts_wiht", KNOWN.iter().copied()),
            Some("starts_with")
        );
        assert_eq!(
            closest("fractionl", KNOWN.iter().copied()),
            Some("fractional")
        );
        assert_eq!(closest("semver", KNOWN.iter().copied()), Some("sem_ver"));
        assert_eq!(closest("completely_else", KNOWN.iter().copied()), None);
        assert_eq!(
            did_you_mean("~~", SEM_VER_OPERATORS.iter().copied()),
            " (did you mean \"~\"?)"
        );
    }

    #[test]
    fn flagd_operator_arguments() {
        let bad = [
            ("starts_with", json!(["a"])),
            ("ends_with", json!("x")),
            ("sem_ver", json!([{"var": "v"}, "~~", "1.0.0"])),
            ("sem_ver", json!([{"var": "v"}, ">="])),
            ("fractional", json!([["on", "50"], ["off", 50]])),
            ("fractional", json!([["on", -1]])),
            ("fractional", json!([["on", 1.5]])),
            ("fractional", json!([["on", 1, 2]])),
            ("fractional", json!([{"var": "id"}])),
            ("fractional", json!([{"var": "id"}, "on"])),
        ];
        for (op, args) in bad {
            assert!(check_args(op, &args).is_some(), "{op} {args}");
        }
        let good = [
            ("starts_with", json!([{"var": "id"}, "x"])),
            ("sem_ver", json!([{"var": "v"}, "^", "1.0.0"])),
            ("fractional", json!([["on", 50], ["off", 50]])),
            (
                "fractional",
                json!([{"cat": [{"var": "$flagd.flagKey"}, {"var": "id"}]}, ["on"], ["off", {"var": "w"}]]),
            ),
            (
                "fractional",
                json!([[true, 1], [{"if": [true, "a", "b"]}, 1]]),
            ),
            ("in", json!("anything")),
        ];
        for (op, args) in good {
            assert!(check_args(op, &args).is_none(), "{op} {args}");
        }
        let e = check_args("fractional", &json!([["on", "50"]])).unwrap();
        assert_eq!(e.index, Some(0));
        assert!(e.fix.contains("50, not \"50\""), "{}", e.fix);
    }
}
