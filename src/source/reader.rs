//! Reads the flag key. A small Lua script (run with EVALSHA_RO, so read-only ACL users
//! and replicas can run it) returns only the value's SHA-1 when it equals the one we
//! already hold: an unchanged 1 MB document costs a 40-byte reply per poll, not a GET.
//! Where scripts are not allowed (no EVALSHA_RO, Redis < 7, NOPERM) it falls back to GET.
//! A hash-stored source (`type=hash`) is read with HGETALL the same way; its value is the
//! field list as a JSON array (`cjson.encode` in the script), for `flags::parse_hash`.

use crate::redis::codes;
use crate::redis::reply::read_plain;
use crate::redis::Storage;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tracing::{debug, info};

const SCRIPT: &str = r#"local v
if ARGV[2] == 'hash' then
  local t = redis.call('HGETALL', KEYS[1])
  if #t == 0 then return false end
  v = cjson.encode(t)
else
  v = redis.call('GET', KEYS[1])
  if not v then return false end
end
local h = redis.sha1hex(v)
if h == ARGV[1] then return h end
return {h, v}"#;

/// What a read found.
#[derive(Debug, PartialEq)]
pub enum Fetched {
    /// The same bytes as the last read.
    Unchanged,
    /// The key does not exist.
    Missing,
    /// A (possibly) new value.
    Value(Vec<u8>),
}

#[derive(Debug)]
pub struct Reader {
    key: String,
    storage: Storage,
    /// SHA-1 (hex) of the last value read, as Redis computed it.
    last: String,
    /// The loaded script's SHA-1, or `None` to load it before the next use.
    script: Option<String>,
    /// Scripts refused on this connection: plain GET from now on.
    get_only: bool,
}

impl Reader {
    pub fn new(key: String, storage: Storage) -> Self {
        Reader {
            key,
            storage,
            last: String::new(),
            script: None,
            get_only: false,
        }
    }

    pub async fn fetch(&mut self, con: &mut MultiplexedConnection) -> redis::RedisResult<Fetched> {
        if !self.get_only {
            match self.by_script(con).await {
                Ok(f) => return Ok(f),
                Err(e) if is_script_refusal(&e) => {
                    info!(error = %e, "cannot run the polling script; reading with GET instead (polls then transfer the whole document)");
                    self.get_only = true;
                }
                Err(e) => return Err(e),
            }
        }
        let v = read_plain(con, &self.key, self.storage).await?;
        Ok(v.map_or(Fetched::Missing, Fetched::Value))
    }

    async fn by_script(&mut self, con: &mut MultiplexedConnection) -> redis::RedisResult<Fetched> {
        for _attempt in 0..2 {
            let sha = match &self.script {
                Some(s) => s.clone(),
                None => {
                    let s: String = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(SCRIPT)
                        .query_async(con)
                        .await?;
                    self.script = Some(s.clone());
                    s
                }
            };
            let reply: redis::RedisResult<Value> = redis::cmd("EVALSHA_RO")
                .arg(&sha)
                .arg(1)
                .arg(&self.key)
                .arg(&self.last)
                .arg(match self.storage {
                    Storage::Hash => "hash",
                    Storage::String => "string",
                })
                .query_async(con)
                .await;
            match reply {
                Ok(v) => return self.interpret(v),
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    debug!("polling script was flushed; loading it again");
                    self.script = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "script vanished twice in a row",
        )))
    }

    fn interpret(&mut self, v: Value) -> redis::RedisResult<Fetched> {
        match v {
            Value::Nil | Value::Boolean(false) => {
                self.last.clear();
                Ok(Fetched::Missing)
            }
            Value::BulkString(_) | Value::SimpleString(_) => Ok(Fetched::Unchanged),
            Value::Array(mut parts) if parts.len() == 2 => {
                let value = match parts.pop() {
                    Some(Value::BulkString(b)) => b,
                    _ => return Err(unexpected()),
                };
                self.last = match parts.pop() {
                    Some(Value::BulkString(h)) => String::from_utf8(h).map_err(|_| unexpected())?,
                    _ => return Err(unexpected()),
                };
                Ok(Fetched::Value(value))
            }
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply from the polling script",
    ))
}

/// Errors that mean "scripts are not available here" (NOPERM, unknown EVALSHA_RO on
/// Redis < 7, scripting disabled), not "the connection is broken" or "wrong type".
/// A wrong type is `WRONGTYPE`, not `ERR`, so it is not mistaken for a refusal.
fn is_script_refusal(e: &redis::RedisError) -> bool {
    codes::is_no_perm(e) || codes::is_generic_error(e)
}
