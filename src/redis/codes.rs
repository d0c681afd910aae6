//! What kind of failure a Redis error is, from redis-rs' [`ErrorKind`] or the server's
//! error code ([`RedisError::code`], the first word of the reply, e.g. `WRONGTYPE`),
//! never from the message text: texts change between Redis versions and forks, codes
//! are part of the protocol.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The key holds another type than the command works on.
pub fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// The user lacks the ACL right (`NOPERM`).
pub fn is_no_perm(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || e.code() == Some("NOPERM")
}

/// Authentication failed or is required (`WRONGPASS`, `NOAUTH`, a refused AUTH).
pub fn is_auth_failure(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
        || is_no_perm(e)
}

/// The server does not speak RESP3 (Redis < 6: no HELLO).
pub fn is_resp3_unsupported(e: &RedisError) -> bool {
    e.kind() == ErrorKind::RESP3NotSupported
}

/// The key lives elsewhere now (Cluster redirections, a cluster that lost its slots, a
/// replica or a master that lost its replicas): re-resolve and reconnect.
pub fn is_redirect(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
        )
    )
}

/// A plain `ERR` reply (the code Redis uses for unknown commands and bad arguments).
pub fn is_generic_error(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server error as redis-rs builds it from a reply line.
    fn server(line: &str) -> RedisError {
        let reply = format!("-{line}\r\n");
        match redis::parse_redis_value(reply.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn kinds_come_from_the_code_not_the_text() {
        assert!(is_wrong_type(&server(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )));
        // The same words in another error's message do not count.
        assert!(!is_wrong_type(&server(
            "ERR WRONGTYPE mentioned in passing"
        )));
        assert!(is_no_perm(&server("NOPERM User u has no permissions")));
        assert!(!is_no_perm(&server("ERR NOPERM in the text")));
        assert!(is_auth_failure(&server(
            "WRONGPASS invalid username-password pair"
        )));
        assert!(is_auth_failure(&server("NOAUTH Authentication required.")));
        assert!(!is_auth_failure(&server("ERR password in the text")));
        for line in [
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "TRYAGAIN x",
            "CLUSTERDOWN The cluster is down",
            "READONLY You can't write",
            "MASTERDOWN Link down",
        ] {
            assert!(is_redirect(&server(line)), "{line}");
        }
        assert!(!is_redirect(&server("ERR MOVED in the text")));
        assert!(is_generic_error(&server("ERR unknown command 'X'")));
    }
}
