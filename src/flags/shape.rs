//! The flagd shape of a document, checked by hand for clear messages (`--validation
//! basic`, and the first pass of strict): an object with `flags` (map or array form),
//! flags with a state, variants of one type and a known default; metadata of scalars.
//! Also the normalisation into the form every client accepts.

use super::{token, DocumentError};
use serde_json::{Map, Value};

/// Fields a flag may carry in the form strict clients (the Python provider) accept.
const FLAG_FIELDS: [&str; 5] = [
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
];

pub(super) fn shape(pointer: impl Into<String>, message: impl Into<String>) -> DocumentError {
    DocumentError::Shape {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// Checks the flagd shape. Returns the number of flags.
pub(super) fn check(doc: &Value) -> Result<usize, DocumentError> {
    let top = doc.as_object().ok_or_else(|| {
        shape(
            "",
            "the document must be a JSON object with a \"flags\" member",
        )
    })?;
    if let Some(meta) = top.get("metadata") {
        check_metadata(meta, "/metadata")?;
    }
    if let Some(evals) = top.get("$evaluators") {
        let evals = evals
            .as_object()
            .ok_or_else(|| shape("/$evaluators", "must be an object of named rules"))?;
        for (name, rule) in evals {
            if name.is_empty() {
                return Err(shape("/$evaluators", "a rule name must not be empty"));
            }
            if !rule.is_object() {
                return Err(shape(
                    format!("/$evaluators/{}", token(name)),
                    "a shared rule must be a JSON object",
                ));
            }
        }
    }
    let flags = top
        .get("flags")
        .ok_or_else(|| shape("", "missing required member \"flags\""))?;
    match flags {
        Value::Object(map) => {
            for (name, flag) in map {
                if name.is_empty() {
                    return Err(shape("/flags", "a flag name must not be empty"));
                }
                check_flag(flag, &format!("/flags/{}", token(name)))?;
            }
            Ok(map.len())
        }
        Value::Array(list) => {
            let mut keys = std::collections::HashSet::with_capacity(list.len());
            for (i, flag) in list.iter().enumerate() {
                let ptr = format!("/flags/{i}");
                let key = flag
                    .get("key")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        shape(
                            &ptr,
                            "a flag in the array form needs a non-empty string \"key\"",
                        )
                    })?;
                check_flag(flag, &ptr)?;
                if !keys.insert(key) {
                    return Err(shape(ptr, format!("duplicate flag key {key:?}")));
                }
            }
            Ok(keys.len())
        }
        _ => Err(shape(
            "/flags",
            "must be an object (flag name -> flag) or an array of flags",
        )),
    }
}

/// Rewrites a checked document into the map form, flags keeping only the known fields.
pub(super) fn normalize(doc: &mut Value) {
    let Some(flags) = doc.get_mut("flags") else {
        return;
    };
    match flags {
        Value::Object(map) => map.values_mut().for_each(strip),
        Value::Array(list) => {
            let mut map = Map::new();
            for mut flag in list.drain(..) {
                let key = flag["key"].as_str().unwrap_or_default().to_string();
                strip(&mut flag);
                map.insert(key, flag);
            }
            *flags = Value::Object(map);
        }
        _ => {}
    }
}

/// Keeps only the flag fields strict clients accept.
pub(super) fn strip(flag: &mut Value) {
    if let Some(obj) = flag.as_object_mut() {
        obj.retain(|k, _| FLAG_FIELDS.contains(&k.as_str()));
    }
}

pub(super) fn check_flag(flag: &Value, ptr: &str) -> Result<(), DocumentError> {
    let obj = flag
        .as_object()
        .ok_or_else(|| shape(ptr, "a flag must be a JSON object"))?;
    match obj.get("state") {
        Some(Value::String(s)) if s == "ENABLED" || s == "DISABLED" => {}
        Some(other) => {
            return Err(shape(
                format!("{ptr}/state"),
                format!(
                    "must be \"ENABLED\" or \"DISABLED\", found {}",
                    brief(other)
                ),
            ))
        }
        None => return Err(shape(ptr, "missing required member \"state\"")),
    }
    let variants = match obj.get("variants") {
        Some(Value::Object(v)) if !v.is_empty() => v,
        Some(Value::Object(_)) => {
            return Err(shape(
                format!("{ptr}/variants"),
                "needs at least one variant",
            ))
        }
        Some(other) => {
            return Err(shape(
                format!("{ptr}/variants"),
                format!(
                    "must be an object (variant name -> value), found {}",
                    brief(other)
                ),
            ))
        }
        None => return Err(shape(ptr, "missing required member \"variants\"")),
    };
    let mut kind: Option<&'static str> = None;
    for (name, v) in variants {
        let this = match v {
            Value::Bool(_) => "boolean",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Object(_) => "object",
            other => {
                return Err(shape(
                    format!("{ptr}/variants/{}", token(name)),
                    format!(
                        "a variant must be a boolean, string, number or object, found {}",
                        brief(other)
                    ),
                ))
            }
        };
        if name.is_empty() {
            return Err(shape(
                format!("{ptr}/variants"),
                "a variant name must not be empty",
            ));
        }
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(shape(
                    format!("{ptr}/variants/{}", token(name)),
                    format!("all variants of a flag must have one type: found {k} and {this}"),
                ))
            }
            _ => {}
        }
    }
    match obj.get("defaultVariant") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if variants.contains_key(d) => {}
        Some(Value::String(d)) => {
            let mut names: Vec<&str> = variants.keys().map(String::as_str).collect();
            names.truncate(8);
            return Err(shape(
                format!("{ptr}/defaultVariant"),
                format!(
                    "names no variant of this flag: {d:?} (variants: {})",
                    names.join(", ")
                ),
            ));
        }
        Some(other) => {
            return Err(shape(
                format!("{ptr}/defaultVariant"),
                format!("must be a variant name or null, found {}", brief(other)),
            ))
        }
    }
    if let Some(t) = obj.get("targeting") {
        if !t.is_object() {
            return Err(shape(
                format!("{ptr}/targeting"),
                format!(
                    "must be a JSON object (a JsonLogic rule or {{}}), found {}",
                    brief(t)
                ),
            ));
        }
    }
    if let Some(m) = obj.get("metadata") {
        check_metadata(m, &format!("{ptr}/metadata"))?;
    }
    Ok(())
}

fn check_metadata(meta: &Value, ptr: &str) -> Result<(), DocumentError> {
    let obj = meta.as_object().ok_or_else(|| {
        shape(
            ptr,
            format!("metadata must be an object, found {}", brief(meta)),
        )
    })?;
    for (k, v) in obj {
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(shape(
                format!("{ptr}/{}", token(k)),
                format!(
                    "metadata values must be strings, numbers or booleans, found {}",
                    brief(v)
                ),
            ));
        }
    }
    Ok(())
}

/// A short description of a JSON value for error messages (never the whole value).
pub(super) fn brief(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 32 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
