//! Reading replies: RESP3 values as strings and numbers, a command from words, and the
//! plain read of a flag key (GET, or HGETALL as the field array).

use super::target::Storage;
use redis::aio::MultiplexedConnection;
use redis::Value;

/// A string reply (bulk, simple or verbatim) as a `String`.
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// An integer reply.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// Any scalar reply as text: strings, `OK`, integers.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        other => as_string(other),
    }
}

/// Runs a command given as words (`["CONFIG", "GET", "save"]`).
pub async fn query(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(con).await
}

/// Reads a key without a script: GET, or for a hash HGETALL as the JSON array
/// `[field, value, …]` (what the service's polling script returns for a hash, and what
/// `flags::parse_hash` reads). `None` when the key does not exist.
pub async fn read_plain(
    con: &mut MultiplexedConnection,
    key: &str,
    storage: Storage,
) -> redis::RedisResult<Option<Vec<u8>>> {
    if storage == Storage::String {
        return redis::cmd("GET").arg(key).query_async(con).await;
    }
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query_async(con).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    Ok(Some(hash_field_array(&fields)))
}

/// Hash fields as the JSON array `[field, value, …]`.
pub fn hash_field_array(fields: &[(String, String)]) -> Vec<u8> {
    let flat: Vec<&str> = fields
        .iter()
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    serde_json::to_vec(&flat).expect("strings always serialise")
}

/// The value out of a CONFIG GET reply (a map in RESP3, a pair list in RESP2).
pub fn config_value(v: &Value) -> Option<String> {
    match v {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| as_string(v)),
        Value::Array(items) if items.len() == 2 => as_string(&items[1]),
        _ => None,
    }
}
