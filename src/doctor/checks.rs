//! Gathers what the checks need once (INFO, the key, CONFIG, rights) and runs every
//! check in a fixed order.

use super::durability::{eviction, maxmemory, persistence};
use super::helpers::config_get;
use super::key::{document, key_exists, size, ttl, KeyFacts};
use super::rights::{dryrun, rights_get, rights_subscribe, Can, Mode, Probes};
use super::security::{auth, tls};
use super::server::{clients, replication, server_info, topology, version};
use super::triggers::{notifications, rights_config_set, rights_tracking, Triggers};
use crate::finding::Report;
use crate::flags;
use crate::redis::reply::read_plain;
use crate::redis::RedisTarget;
use redis::aio::MultiplexedConnection;

pub(super) async fn run_checks(
    con: &mut MultiplexedConnection,
    target: &RedisTarget,
    documents: &flags::Options,
    probes: Probes,
) -> Report {
    let mode = probes.mode;
    let info = server_info(con).await;
    let key = KeyFacts {
        value: read_plain(con, &target.key, target.storage_of_first()).await,
        kind: redis::cmd("TYPE").arg(&target.key).query_async(con).await,
        pttl: redis::cmd("PTTL").arg(&target.key).query_async(con).await,
    };
    let notify = config_get(con, "notify-keyspace-events").await;
    // The user the connection is authenticated as (redis-rs sends AUTH only with a password).
    let user = match (&target.username, &target.password) {
        (Some(u), Some(_)) => u.clone(),
        _ => "default".to_string(),
    };
    let config_set = match dryrun(
        con,
        &user,
        &["CONFIG", "SET", "notify-keyspace-events", "Kg$xe"],
    )
    .await
    {
        // Without DRYRUN: a refused CONFIG GET means CONFIG SET is refused too.
        Can::Unknown(why) => match &notify {
            Err(e) => Can::No(format!("CONFIG GET is refused too: {e}")),
            Ok(_) => Can::Unknown(why),
        },
        can => can,
    };
    let tracking = match probes.tracking {
        Some(t) => t,
        None => {
            let prefix = ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", &target.key];
            dryrun(con, &user, &prefix).await
        }
    };
    let triggers = Triggers {
        notify: &notify,
        config_set: &config_set,
        tracking: &tracking,
    };

    let mut report = vec![
        version(&info),
        topology(&info, target),
        replication(&info),
        auth(target),
        tls(target),
        persistence(con, &info).await,
        maxmemory(con, &info).await,
        eviction(con, &info, &key).await,
        notifications(&triggers),
        clients(&info),
        key_exists(target, &key),
        ttl(target, &key),
        size(&key, documents),
    ];
    if mode == Mode::Cli {
        report.push(document(&key, documents, target.storage_of_first()));
    }
    report.push(rights_get(target, &user, &key));
    report.push(rights_subscribe(target, &user, mode, probes.subscribe));
    report.push(rights_config_set(&user, &triggers));
    report.push(rights_tracking(&user, &triggers));
    report
}
