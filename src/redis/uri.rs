//! Parsing `--redis-uri`: redis://, rediss://, unix://, redis+sentinel:// and
//! redis+cluster:// (and their rediss+ forms). The `url` crate parses one host; the host
//! list of the multi-host forms is cut out first. Errors never echo the URI (it may hold
//! a password).

use super::error::TargetError;
use super::target::{host_port, RedisAddr, RedisTarget, RedisTls, SourceSpec, Storage};
use std::path::PathBuf;

/// Schemes that name several hosts; `url` reads one host only, so the host list is cut
/// out first and the rest parsed as a plain redis:// URI.
const MULTI_HOST: [&str; 4] = [
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
];

/// Splits `scheme://[auth@]h1:p1,h2:p2/rest` into the host list and a redis:// URI with
/// the first host, or returns `None` for single-host schemes.
/// A multi-host URI cut in parts: its scheme, its hosts, and a single-host equivalent.
type MultiHost = (String, Vec<(String, u16)>, String);

fn split_hosts(
    uri: &str,
    default_port: impl Fn(&str) -> u16,
) -> Result<Option<MultiHost>, TargetError> {
    let bad = |m: String| TargetError::Uri(m);
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(None);
    };
    if !MULTI_HOST.contains(&scheme) {
        return Ok(None);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    let mut nodes = Vec::new();
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad(format!("host {h:?}: unclosed [ in an IPv6 address")))?;
            (host, after.strip_prefix(':'))
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        let port = match port {
            None => default_port(scheme),
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                bad(format!(
                    "host {host:?}: port {p:?} is not a valid port (1-65535)"
                ))
            })?,
        };
        if host.is_empty() {
            return Err(bad(format!("empty host in the host list of {scheme}://")));
        }
        nodes.push((host.to_string(), port));
    }
    if nodes.is_empty() {
        return Err(bad(format!(
            "no host: expected {scheme}://host1:port1,host2:port2/…"
        )));
    }
    let plain = if scheme.starts_with("rediss") {
        "rediss"
    } else {
        "redis"
    };
    let first = host_port(&nodes[0].0, nodes[0].1);
    Ok(Some((
        scheme.to_string(),
        nodes,
        format!("{plain}://{userinfo}{first}{tail}"),
    )))
}

impl RedisTarget {
    /// Parses a URI that names at least one key.
    pub fn parse(uri: &str) -> Result<Self, TargetError> {
        Self::parse_keys_optional(uri)?.require_key()
    }

    /// Parses a URI; its `key=` may be left out when sources come from `--source`.
    pub fn parse_keys_optional(uri: &str) -> Result<Self, TargetError> {
        let bad = |m: String| TargetError::Uri(m);
        let multi = split_hosts(uri, |scheme| {
            if scheme.ends_with("sentinel") {
                26379
            } else {
                6379
            }
        })?;
        let parsed_uri = multi.as_ref().map_or(uri, |(_, _, u)| u.as_str());
        // Never echo the URI itself: it may hold a password.
        let url = url::Url::parse(parsed_uri).map_err(|e| {
            bad(format!(
                "not a valid URI ({e}); expected redis://[user:password@]host[:port][/db]?key=NAME"
            ))
        })?;
        if !matches!(url.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(bad(format!(
                "unsupported scheme {:?}: use redis://, rediss:// (TLS), unix://, \
                 redis+sentinel:// or redis+cluster://",
                url.scheme()
            )));
        }
        let mut keys: Vec<String> = Vec::new();
        let mut storage = Storage::String;
        let mut db_q: Option<String> = None;
        let mut user_q: Option<String> = None;
        let mut pass_q: Option<String> = None;
        let mut sentinel_user: Option<String> = None;
        let mut sentinel_pass: Option<String> = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "key" if v.is_empty() => {}
                "key" if keys.iter().any(|k| *k == v) => {
                    return Err(bad(format!("key={v} given twice")))
                }
                "key" => keys.push(v.into_owned()),
                "type" => storage = Storage::parse(&v).map_err(bad)?,
                "db" => db_q = Some(v.into_owned()),
                "user" | "username" => user_q = Some(v.into_owned()),
                "password" | "pass" => pass_q = Some(v.into_owned()),
                "sentinel_user" => sentinel_user = Some(v.into_owned()),
                "sentinel_password" => sentinel_pass = Some(v.into_owned()),
                "protocol" => {}
                other => {
                    return Err(bad(format!(
                        "unknown query parameter {other:?} (known: key, type, db, user, password, \
                         sentinel_user, sentinel_password)"
                    )))
                }
            }
        }
        let decode = |s: &str| {
            percent_decode(s)
                .map_err(|_| bad("user name or password is not valid percent-encoded UTF-8".into()))
        };
        let mut username = (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?;
        let mut password = url.password().map(decode).transpose()?;
        if user_q.is_some() {
            username = user_q;
        }
        if pass_q.is_some() {
            password = pass_q;
        }
        let path = url.path().trim_start_matches('/').to_string();
        let (addr, path_db) = match (&multi, url.scheme()) {
            (Some((scheme, nodes, _)), _) if scheme.ends_with("sentinel") => {
                let (master, db) = match path.split_once('/') {
                    Some((m, db)) => (m, (!db.is_empty()).then(|| db.to_string())),
                    None => (path.as_str(), None),
                };
                if master.is_empty() {
                    return Err(bad(format!(
                        "no master name: expected {scheme}://host1:26379,host2:26379/MASTER_NAME/DB?key=NAME"
                    )));
                }
                let auth = sentinel_pass.map(|p| (sentinel_user.take(), p));
                (
                    RedisAddr::Sentinel {
                        sentinels: nodes.clone(),
                        master: master.to_string(),
                        tls: scheme.starts_with("rediss"),
                        auth,
                    },
                    db,
                )
            }
            (Some((scheme, nodes, _)), _) => {
                if !path.is_empty() && path != "0" {
                    return Err(bad(format!(
                        "{scheme}:// has database 0 only (Redis Cluster), found {path:?}"
                    )));
                }
                (
                    RedisAddr::Cluster {
                        seeds: nodes.clone(),
                        tls: scheme.starts_with("rediss"),
                    },
                    None,
                )
            }
            (None, "redis" | "rediss") => {
                let host = match url.host() {
                    Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
                    Some(url::Host::Ipv4(a)) => a.to_string(),
                    Some(url::Host::Ipv6(a)) => a.to_string(),
                    _ => {
                        return Err(bad(
                            "no host: expected redis://host[:port]/db?key=NAME".into()
                        ))
                    }
                };
                if url.port() == Some(0) {
                    return Err(bad("port 0 is not a valid Redis port".into()));
                }
                let port = url.port().unwrap_or(6379);
                (
                    RedisAddr::Tcp {
                        host,
                        port,
                        tls: url.scheme() == "rediss",
                    },
                    (!path.is_empty()).then_some(path),
                )
            }
            (None, _) => {
                if url.path().is_empty() || url.path() == "/" {
                    return Err(bad(
                        "no socket path: expected unix:///path/to/redis.sock?key=NAME".into(),
                    ));
                }
                (RedisAddr::Unix(PathBuf::from(url.path())), None)
            }
        };
        if sentinel_user.is_some() && !matches!(addr, RedisAddr::Sentinel { .. }) {
            return Err(bad(
                "sentinel_user= needs sentinel_password= and a redis+sentinel:// URI".into(),
            ));
        }
        let db = match path_db.or(db_q) {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=i64::from(i32::MAX)).contains(d))
                .ok_or_else(|| {
                    bad(format!(
                        "database must be a number from 0 to {} (most servers have 16: 0-15), found {s:?}",
                        i32::MAX
                    ))
                })?,
        };
        let sources: Vec<SourceSpec> = keys
            .into_iter()
            .map(|k| SourceSpec {
                name: k.clone(),
                key: k,
                storage,
            })
            .collect();
        Ok(RedisTarget {
            addr,
            db,
            username,
            password,
            key: sources.first().map(|s| s.key.clone()).unwrap_or_default(),
            sources,
            storage,
            tls: RedisTls::default(),
        })
    }
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RedisTarget {
        RedisTarget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn e(s: &str) -> String {
        RedisTarget::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn uri_forms() {
        let t = p("redis://localhost:6380/2?key=flags");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "localhost".into(),
                port: 6380,
                tls: false
            }
        );
        assert_eq!((t.db, t.key.as_str()), (2, "flags"));
        assert_eq!(t.keyspace_channel(), "__keyspace@2__:flags");

        let t = p("rediss://user:p%40ss@redis.example:6390?key=ff");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "redis.example".into(),
                port: 6390,
                tls: true
            }
        );
        assert_eq!(
            (t.username.as_deref(), t.password.as_deref(), t.db),
            (Some("user"), Some("p@ss"), 0)
        );

        let t = p("redis://:secret@127.0.0.1/0?key=flags");
        assert_eq!((t.username, t.password.as_deref()), (None, Some("secret")));

        let t = p("redis://[::1]:7000/1?key=a:b");
        assert_eq!(
            t.addr,
            RedisAddr::Tcp {
                host: "::1".into(),
                port: 7000,
                tls: false
            }
        );
        assert_eq!(t.key, "a:b");

        let t = p("unix:///run/redis/redis.sock?db=3&key=flags&password=pw");
        assert_eq!(t.addr, RedisAddr::Unix("/run/redis/redis.sock".into()));
        assert_eq!((t.db, t.password.as_deref()), (3, Some("pw")));
    }

    #[test]
    fn several_keys_sentinel_and_cluster_uris() {
        let t = p("redis://h:1/0?key=a&key=b&type=hash");
        let names: Vec<_> = t
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.key.as_str(), s.storage))
            .collect();
        assert_eq!(
            names,
            [("a", "a", Storage::Hash), ("b", "b", Storage::Hash)]
        );
        assert_eq!(t.key, "a");
        assert_eq!(t.to_string(), "redis://h:1/0?key=a&key=b&type=hash");

        let t = p("redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/2?key=flags&sentinel_password=spw");
        assert_eq!(
            t.addr,
            RedisAddr::Sentinel {
                sentinels: vec![
                    ("s1".into(), 26380),
                    ("s2".into(), 26379),
                    ("::1".into(), 26381)
                ],
                master: "mymaster".into(),
                tls: false,
                auth: Some((None, "spw".into())),
            }
        );
        assert_eq!((t.db, t.password.as_deref()), (2, Some("pw")));
        let shown = t.to_string();
        assert!(!shown.contains("pw@") && !shown.contains("spw"), "{shown}");
        assert_eq!(
            shown,
            "redis+sentinel://:***@s1:26380,s2:26379,[::1]:26381/mymaster/2?key=flags&sentinel_password=***"
        );
        let node = t.at_node("10.0.0.5", 6380);
        assert_eq!(node.to_string(), "redis://:***@10.0.0.5:6380/2?key=flags");

        let t = p("rediss+cluster://n1:7000,n2:7001/?key={flags}:a&key={flags}:b");
        assert_eq!(
            t.addr,
            RedisAddr::Cluster {
                seeds: vec![("n1".into(), 7000), ("n2".into(), 7001)],
                tls: true
            }
        );
        assert!(t.at_node("n3", 7002).addr.is_tls());
        assert_eq!(t.sources.len(), 2);
        assert!(e("redis+cluster://n1:7000/3?key=f").contains("database 0 only"));
        assert!(e("redis+sentinel://s1:26379/?key=f").contains("no master name"));
        assert!(e("redis+sentinel://s1:x/m?key=f").contains("not a valid port"));
        assert!(e("redis://h/0?key=a&key=a").contains("twice"));
        assert!(e("redis://h/0?key=a&type=list").contains("type=hash"));
    }

    #[test]
    fn bad_uris_say_what_to_do_and_never_echo_secrets() {
        for (uri, want) in [
            ("redis://localhost:6379/0", "no key"),
            ("redis://localhost:6379/0?key=", "no key"),
            ("http://localhost/?key=f", "unsupported scheme \"http\""),
            ("redis://h:99999/0?key=f", "not a valid URI"),
            ("redis://h:0/0?key=f", "port 0"),
            ("redis://h/x?key=f", "database must be a number"),
            ("redis://u:hunter2@h/x?key=f", "database must be a number"),
            ("redis://h/0?key=f&foo=1", "unknown query parameter"),
            ("unix://?key=f", "no socket path"),
            ("localhost:6379", "unsupported scheme"),
        ] {
            let msg = e(uri);
            assert!(msg.contains(want), "{uri}: {msg}");
            assert!(!msg.contains("hunter2"), "{uri}: {msg}");
        }
    }

    #[test]
    fn display_redacts_the_password() {
        let t = p("redis://admin:hunter2@h:1/0?key=f");
        assert_eq!(t.to_string(), "redis://admin:***@h:1/0?key=f");
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = p("unix:///s.sock?password=hunter2&key=f");
        assert!(!t.to_string().contains("hunter2"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = RedisTarget::parse(&s);
        }

        #[test]
        fn passwords_never_show(
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9]{6,16}",
            host in "[a-z]{1,10}",
            port in 1u16..,
            db in 0i64..16,
            key in "[a-z:]{1,12}",
        ) {
            let uri = format!("redis://{user}:{password}@{host}:{port}/{db}?key={key}");
            let t = RedisTarget::parse(&uri).unwrap();
            prop_assert_eq!(t.password.as_deref(), Some(password.as_str()));
            prop_assert_eq!((t.db, t.key.as_str()), (db, key.as_str()));
            let shown = format!("{t} {t:?}");
            prop_assert!(!shown.contains(&password), "{}", shown);
            // Every error message about a URI with this password stays clean too.
            let broken = format!("redis://{user}:{password}@{host}:{port}/x{db}?key={key}");
            let e = RedisTarget::parse(&broken).unwrap_err().to_string();
            prop_assert!(!e.contains(&password), "{}", e);
        }

        #[test]
        fn redacted_display_parses_back_to_the_same_target_without_password(
            host in "[a-z]{1,10}", port in 1u16.., db in 0i64..16, key in "[a-z]{1,12}", tls in any::<bool>(),
        ) {
            let scheme = if tls { "rediss" } else { "redis" };
            let t = RedisTarget::parse(&format!("{scheme}://{host}:{port}/{db}?key={key}")).unwrap();
            prop_assert_eq!(RedisTarget::parse(&t.to_string()).unwrap(), t);
        }
    }
}
