//! A walk over one targeting rule (a flag's `targeting` or a shared rule) for what no
//! schema can say: unknown operators (with a hint), `$ref`s to missing shared rules,
//! flagd operators with unusable arguments, and the literal variant names the rule can
//! return.
//!
//! Only literals are judged: a result computed at evaluation time (`var`, `cat`, …) is
//! left alone. The positions a result comes from are the then/else branches of `if`, the
//! bucket names of `fractional`, and the rule itself (a bare string rule).

use super::operators;
use super::problem::{Path, Problem, ProblemKind, Seg};
use serde_json::{Map, Value};

/// A literal result or a shared rule returned as a result, and where it is.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A variant name (a string, or `true` / `false`, which clients turn into `"true"`
    /// / `"false"`).
    Literal(&'a str, Path<'a>),
    /// `{"$ref": NAME}` in a result position: the shared rule's results are this rule's.
    Ref(&'a str, Path<'a>),
}

/// One walk. With `variants`, literal results are checked against them; without (a shared
/// rule, whose flags are not known here), they are collected in `outcomes`.
pub struct Walk<'a, 'd> {
    /// The flag, for the problems' `flag`.
    pub flag: Option<&'a str>,
    /// The flag's variants.
    pub variants: Option<&'a Map<String, Value>>,
    /// The document's shared rules (only their names are used).
    pub evaluators: Option<&'d Map<String, Value>>,
    pub problems: Vec<Problem>,
    /// Results not checked here (see [`Walk::variants`]) and shared rules in result
    /// positions.
    pub outcomes: Vec<Outcome<'a>>,
    /// Every `$ref` met (for the reference graph of the shared rules).
    pub refs: Vec<(&'a str, Path<'a>)>,
}

impl<'a, 'd> Walk<'a, 'd> {
    pub fn new(
        flag: Option<&'a str>,
        variants: Option<&'a Map<String, Value>>,
        evaluators: Option<&'d Map<String, Value>>,
    ) -> Self {
        Walk {
            flag,
            variants,
            evaluators,
            problems: Vec::new(),
            outcomes: Vec::new(),
            refs: Vec::new(),
        }
    }

    /// Walks `rule`, found at `path`, as a whole rule (a result position).
    pub fn rule(&mut self, rule: &'a Value, path: &mut Path<'a>) {
        if rule.as_object().is_some_and(Map::is_empty) {
            return; // `targeting: {}`: no rule
        }
        self.value(rule, path, true);
    }

    fn problem(&mut self, kind: ProblemKind, pointer: String, message: String, fix: String) {
        self.problems.push(Problem {
            kind,
            flag: self.flag.map(str::to_string),
            pointer,
            message,
            fix,
        });
    }

    fn value(&mut self, v: &'a Value, path: &mut Path<'a>, result: bool) {
        match v {
            Value::Object(m) => {
                // Not exactly one key: not an operation; the schema says what is wrong.
                let mut entries = m.iter();
                if let (Some((op, args)), None) = (entries.next(), entries.next()) {
                    path.push(Seg::Key(op));
                    self.operation(op, args, path, result);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.value(item, path, false);
                    path.pop();
                }
            }
            Value::String(s) if result => self.literal(s, path),
            Value::Bool(b) if result => self.literal(if *b { "true" } else { "false" }, path),
            _ => {}
        }
    }

    fn literal(&mut self, name: &'a str, path: &Path<'a>) {
        match self.variants {
            Some(variants) if !variants.contains_key(name) => {
                let names = variants.keys().map(String::as_str);
                let hint = operators::did_you_mean(name, names.clone());
                let mut listed: Vec<&str> = names.take(8).collect();
                if variants.len() > 8 {
                    listed.push("…");
                }
                self.problem(
                    ProblemKind::UnknownVariant,
                    path.pointer(),
                    format!(
                        "the rule can return {name:?}, which is not a variant of this flag{hint}"
                    ),
                    format!("return one of the variants: {}", listed.join(", ")),
                );
            }
            Some(_) => {}
            None => self.outcomes.push(Outcome::Literal(name, path.clone())),
        }
    }

    /// `path` ends at the operator's key.
    fn operation(&mut self, op: &'a str, args: &'a Value, path: &mut Path<'a>, result: bool) {
        if op == "$ref" {
            let Value::String(name) = args else {
                return; // the schema: a reference is a string
            };
            self.reference(name, path, result);
            return;
        }
        if !operators::is_known(op) {
            self.problem(
                ProblemKind::UnknownOperator,
                path.pointer(),
                format!(
                    "unknown operator {op:?}{}",
                    operators::did_you_mean(op, operators::KNOWN.iter().copied())
                ),
                "use a JsonLogic operator flagd supports, fractional, sem_ver, starts_with, \
                 ends_with, or {\"$ref\": NAME} (see docs/validation.md)"
                    .into(),
            );
            return;
        }
        if let Some(e) = operators::check_args(op, args) {
            let pointer = match e.index {
                Some(i) => path.pointer_with(&[Seg::Index(i)]),
                None => path.pointer(),
            };
            self.problem(ProblemKind::OperatorArguments, pointer, e.message, e.fix);
            return;
        }
        let Value::Array(items) = args else {
            // A single argument (`{"var": "x"}`, `{"!": rule}`).
            self.value(args, path, false);
            return;
        };
        let n = items.len();
        for (i, item) in items.iter().enumerate() {
            // if: [cond, then, cond, then, …, else]
            let is_result = result
                && match op {
                    "if" => i % 2 == 1 || (n % 2 == 1 && i == n - 1),
                    _ => false,
                };
            path.push(Seg::Index(i));
            match (op, item) {
                // A bucket: its first item is the variant returned.
                ("fractional", Value::Array(bucket)) => {
                    for (j, part) in bucket.iter().enumerate() {
                        path.push(Seg::Index(j));
                        self.value(part, path, result && j == 0);
                        path.pop();
                    }
                }
                _ => self.value(item, path, is_result),
            }
            path.pop();
        }
    }

    fn reference(&mut self, name: &'a str, path: &Path<'a>, result: bool) {
        let known = self.evaluators.is_some_and(|e| e.contains_key(name));
        if !known {
            let names: Vec<&str> = self
                .evaluators
                .map(|e| e.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let fix = if names.is_empty() {
                "define it under \"$evaluators\" at the top of the document".to_string()
            } else {
                format!("use one of the shared rules: {}", names.join(", "))
            };
            self.problem(
                ProblemKind::UnresolvedRef,
                path.pointer(),
                format!(
                    "$ref {name:?} names no shared rule in \"$evaluators\"{}",
                    operators::did_you_mean(name, names.iter().copied())
                ),
                fix,
            );
            return;
        }
        self.refs.push((name, path.clone()));
        if result {
            self.outcomes.push(Outcome::Ref(name, path.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk(rule: Value, evaluators: Value) -> (Vec<String>, usize) {
        let variants = json!({"on": true, "off": false})
            .as_object()
            .unwrap()
            .clone();
        let evals = evaluators.as_object().unwrap().clone();
        let mut w = Walk::new(Some("f"), Some(&variants), Some(&evals));
        let mut path = Path::new(&[Seg::Key("flags"), Seg::Key("f"), Seg::Key("targeting")]);
        w.rule(&rule, &mut path);
        let n = w.outcomes.len();
        (w.problems.iter().map(|p| p.to_string()).collect(), n)
    }

    #[test]
    fn each_refusal_names_its_pointer() {
        let cases = [
            (
                json!({"if": [{"starts_wiht": [{"var": "email"}, "x"]}, "on", "off"]}),
                "/flags/f/targeting/if/0/starts_wiht: flag \"f\": unknown operator \"starts_wiht\" (did you mean \"starts_with\"?)",
            ),
            (json!({"if": [{"$ref": "nope"}, "on", "off"]}), "/flags/f/targeting/if/0/$ref: flag \"f\": $ref \"nope\" names no shared rule"),
            (json!({"if": [true, "on", "zzz"]}), "/flags/f/targeting/if/2: flag \"f\": the rule can return \"zzz\""),
            (json!({"if": [true, "onn", null]}), "(did you mean \"on\"?)"),
            (json!({"fractional": [["on", 50], ["of", 50]]}), "/flags/f/targeting/fractional/1/0:"),
            (json!({"fractional": [["on", "50"], ["off", 50]]}), "/flags/f/targeting/fractional/0: flag \"f\": fractional weight \"50\""),
            (json!({"if": [{"sem_ver": [{"var": "v"}, "~~", "1.0.0"]}, "on", "off"]}), "/flags/f/targeting/if/0/sem_ver/1:"),
            (json!("zzz"), "/flags/f/targeting: flag \"f\""),
            (json!({"if": [{"==": [1, 1]}, true, "x"]}), "the rule can return \"true\""),
        ];
        for (rule, want) in cases {
            let (problems, _) = walk(rule.clone(), json!({"known": {"==": [1, 1]}}));
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{rule}: {problems:?} lacks {want}"
            );
        }
    }

    #[test]
    fn valid_and_dynamic_forms_pass() {
        let rules = [
            json!({}),
            json!({"if": [{"var": "x"}, {"var": "y"}, {"cat": ["o", "n"]}]}),
            json!({"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, "on", null]}),
            json!({"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "on"]}),
            json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["on", 1], ["off", 1]]}),
            json!({"fractional": [["on"], [{"if": [true, "on", "off"]}, 1]]}),
            json!({"if": [{"some": [[1, 2], {"==": [{"var": ""}, 1]}]}, "on", "off"]}),
            json!({"if": [{"none": [[1], {"==": [{"var": ""}, 9]}]}, "on", "off"]}),
            json!({"if": [{"all": [[1], {">": [{"var": ""}, 0]}]}, "on", "off"]}),
            json!({"if": [{"in": ["a", {"merge": [["a"], ["b"]]}]}, "on", "off"]}),
            json!({"if": [{"<": [0, {"reduce": [[1, 2], {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}]}, "on", "off"]}),
            json!({"if": [{"map": [[1], {"*": [{"var": ""}, 2]}]}, "on", "off"]}),
            json!({"if": [{"filter": [[1], {"%": [{"var": ""}, 2]}]}, "on", "off"]}),
            json!({"if": [{"==": [{"substr": ["abc", 1]}, "bc"]}, "on", "off"]}),
            json!({"if": [{"missing": ["a"]}, "off", "on"]}),
            json!({"if": [{"missing_some": [1, ["a", "b"]]}, "off", "on"]}),
            json!({"if": [{"<=": [{"min": [1, 2]}, {"max": [1, 2]}, {"-": [5, {"/": [4, 2]}]}]}, "on", "off"]}),
            json!({"if": [{"!": {"!!": [{"var": "x"}]}}, "on", "off"]}),
            json!({"if": [{"ends_with": [{"var": "e"}, "x"]}, "on", {"if": [{"!==": [1, 2]}, "off", null]}]}),
            json!({"if": [{"$ref": "known"}, "on", "off"]}),
        ];
        for rule in rules {
            let (problems, _) = walk(rule.clone(), json!({"known": {"==": [1, 1]}}));
            assert!(problems.is_empty(), "{rule}: {problems:?}");
        }
        let (_, outcomes) = walk(json!({"$ref": "known"}), json!({"known": {}}));
        assert_eq!(
            outcomes, 1,
            "a shared rule in a result position is followed"
        );
    }
}
