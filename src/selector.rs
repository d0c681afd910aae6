//! Selectors, as flagd's sync server reads them: `source=NAME`, a bare `NAME` (a source),
//! `flagSetId=ID`, `flagSetId=` (flags that belong to no set), or empty (everything).

use serde_json::{Map, Value};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every flag.
    All,
    /// The flags of one source (`source=NAME` or a bare NAME).
    Source(String),
    /// Flags of one flag set; `None` selects flags without a set.
    FlagSet(Option<String>),
}

impl Selector {
    /// Parses a selector; an unknown `key=` is an error (INVALID_ARGUMENT at the edge).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Selector::All);
        }
        match s.split_once('=') {
            None => Ok(Selector::Source(s.to_string())),
            Some((k, v)) => match k.trim() {
                "source" => Ok(Selector::Source(v.trim().to_string())),
                "flagSetId" => {
                    let v = v.trim();
                    Ok(Selector::FlagSet((!v.is_empty()).then(|| v.to_string())))
                }
                other => Err(format!(
                    "unsupported selector key {other:?}: use source=NAME, flagSetId=ID or a bare source name"
                )),
            },
        }
    }
}

/// The flags of `doc` (a canonical flag document) in flag set `want` (`None`: flags that
/// belong to no set). A flag's own `metadata.flagSetId` wins over the document's.
pub fn flag_set(doc: &Value, want: Option<&str>) -> Value {
    let set_default = doc.pointer("/metadata/flagSetId").and_then(Value::as_str);
    let mut out = doc.as_object().cloned().unwrap_or_default();
    let flags: Map<String, Value> = doc
        .get("flags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, f)| {
                    let own = f.pointer("/metadata/flagSetId").and_then(Value::as_str);
                    own.or(set_default) == want
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.insert("flags".into(), Value::Object(flags));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_flagd_selector_forms() {
        assert_eq!(Selector::parse("").unwrap(), Selector::All);
        assert_eq!(
            Selector::parse("flags").unwrap(),
            Selector::Source("flags".into())
        );
        assert_eq!(
            Selector::parse("source=flags").unwrap(),
            Selector::Source("flags".into())
        );
        assert_eq!(
            Selector::parse("flagSetId=a").unwrap(),
            Selector::FlagSet(Some("a".into()))
        );
        assert_eq!(
            Selector::parse("flagSetId=").unwrap(),
            Selector::FlagSet(None)
        );
        assert!(Selector::parse("team=a").unwrap_err().contains("team"));
    }

    #[test]
    fn filters_by_flag_set_with_flag_level_override() {
        let doc = json!({
            "metadata": {"flagSetId": "base"},
            "flags": {
                "a": {"state": "ENABLED", "variants": {"x": 1}},
                "b": {"state": "ENABLED", "variants": {"x": 1}, "metadata": {"flagSetId": "other"}}
            }
        });
        let names =
            |v: Value| -> Vec<String> { v["flags"].as_object().unwrap().keys().cloned().collect() };
        assert_eq!(names(flag_set(&doc, Some("base"))), ["a"]);
        assert_eq!(names(flag_set(&doc, Some("other"))), ["b"]);
        assert!(names(flag_set(&doc, None)).is_empty());
        assert!(names(flag_set(&doc, Some("nope"))).is_empty());
        let unset = json!({"flags": {"c": {"state": "ENABLED", "variants": {"x": 1}}}});
        assert_eq!(names(flag_set(&unset, None)), ["c"]);
    }
}
