//! Sentinel and Cluster: the harness (integration/src/topology.rs) on its own, pinning
//! down what happens to a client connection of the old master (which the watcher must
//! handle), then the service following a failover and a slot migration.

use integration::topology::{cmd_on, connect, role, RedisCluster, Role, SentinelSet};
use integration::*;
use std::time::Instant;

#[test]
fn topology_harness_sentinel() {
    let t0 = Instant::now();
    let set = SentinelSet::start("it-master").unwrap();
    let started = t0.elapsed();

    let sentinels = set.sentinel_ports();
    assert_eq!(sentinels.len(), 3);
    assert_eq!(
        set.uri("flags"),
        format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/it-master/0?key=flags",
            sentinels[0], sentinels[1], sentinels[2]
        )
    );
    let old = set.master_port().unwrap();
    assert_eq!(old, set.data_ports()[0]);
    assert_eq!(role(old).unwrap(), Role::Master);
    set.set("flags", &doc("f", "one")).unwrap();
    assert_eq!(set.get("flags").unwrap(), Some(doc("f", "one")));

    // Clients of the old master and of the replica, opened before the failover.
    let mut old_con = connect(old).unwrap();
    let mut replica_con = connect(set.data_ports()[1]).unwrap();
    for con in [&mut old_con, &mut replica_con] {
        let pong: String = redis::cmd("PING").query(con).unwrap();
        assert_eq!(pong, "PONG");
    }

    let t1 = Instant::now();
    let new = set.failover().unwrap();
    let failed_over = t1.elapsed();
    assert_ne!(new, old);
    assert_eq!(new, set.data_ports()[1]);
    assert_eq!(set.master_port().unwrap(), new);
    assert_eq!(role(new).unwrap(), Role::Master);
    // The sentinel killed the promoted replica's clients with the promotion (one MULTI).
    let after: redis::RedisResult<String> = redis::cmd("PING").query(&mut replica_con);
    assert!(
        after.is_err(),
        "promoted replica connection alive: {after:?}"
    );
    // Until the sentinels demote it (seconds later), the old master is still a master
    // that takes writes, on the connections it had: a split brain, and those writes are
    // lost when it resyncs from the new master.
    let still: Vec<redis::Value> = redis::cmd("ROLE").query(&mut old_con).unwrap();
    assert_eq!(
        redis::from_redis_value_ref::<String>(&still[0]).unwrap(),
        "master"
    );
    let ok: String = redis::cmd("SET")
        .arg("written-to-old")
        .arg("lost")
        .query(&mut old_con)
        .unwrap();
    assert_eq!(ok, "OK");
    // The data came along, and a write on the new master reads back.
    assert_eq!(set.get("flags").unwrap(), Some(doc("f", "one")));
    set.set("flags", &doc("f", "two")).unwrap();
    let on_new: Option<String> = cmd_on(new, &["GET", "flags"]).unwrap();
    assert_eq!(on_new, Some(doc("f", "two")));
    let mut c = set.master_client().unwrap().get_connection().unwrap();
    let via_client: String = redis::cmd("GET").arg("flags").query(&mut c).unwrap();
    assert_eq!(via_client, doc("f", "two"));

    // The old master becomes a replica of the new one, on the sentinels' next INFO of it.
    set.wait_replica_of(old, new).unwrap();
    let demoted = t1.elapsed();
    let on_old = wait_until_value(old, "flags", &doc("f", "two"));
    assert_eq!(on_old, doc("f", "two"));
    let lost: Option<String> = cmd_on(old, &["GET", "written-to-old"]).unwrap();
    assert_eq!(lost, None);
    // The sentinel killed the old master's clients when it demoted it.
    let after: redis::RedisResult<String> = redis::cmd("PING").query(&mut old_con);
    assert!(
        after.is_err(),
        "old master connection still alive: {after:?}"
    );

    eprintln!(
        "sentinel: start {started:?}, failover {failed_over:?}, old master a replica after \
         {demoted:?}, total {:?}",
        t0.elapsed()
    );
}

#[test]
fn topology_harness_cluster() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start(3, 1).unwrap();
    let started = t0.elapsed();

    let seeds = cluster.seed_ports();
    assert_eq!(seeds.len(), 6);
    let hosts: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(
        cluster.uri("flags"),
        format!("redis+cluster://{}/?key=flags", hosts.join(","))
    );
    let slot = cluster.slot_of("flags").unwrap();
    assert_eq!(slot, 12971, "CLUSTER KEYSLOT flags");

    let first = cluster.owner_of("flags");
    assert_eq!(role(first).unwrap(), Role::Master);
    cluster.set("flags", &doc("f", "one")).unwrap();
    let on_first: Option<String> = cmd_on(first, &["GET", "flags"]).unwrap();
    assert_eq!(on_first, Some(doc("f", "one")));

    // A client and a keyspace subscriber of the old owner, opened before the failover.
    let mut old_con = connect(first).unwrap();
    let _: () = cmd_on(first, &["CONFIG", "SET", "notify-keyspace-events", "K$"]).unwrap();
    let mut sub_con = connect(first).unwrap();
    let mut sub = sub_con.as_pubsub();
    sub.subscribe("__keyspace@0__:flags").unwrap();

    let t1 = Instant::now();
    let second = cluster.failover("flags").unwrap();
    let failed_over = t1.elapsed();
    assert_ne!(second, first);
    assert_eq!(cluster.owner_of("flags"), second);
    assert_eq!(role(second).unwrap(), Role::Master);
    assert_eq!(cluster.get("flags").unwrap(), Some(doc("f", "one")));
    cluster.set("flags", &doc("f", "two")).unwrap();
    let on_second: Option<String> = cmd_on(second, &["GET", "flags"]).unwrap();
    assert_eq!(on_second, Some(doc("f", "two")));
    // The old owner is now its replica. Its client was NOT disconnected: it answers, and
    // a read of the slot is redirected.
    match role(first).unwrap() {
        Role::Replica { master_port, .. } => assert_eq!(master_port, second),
        r => panic!("old owner {first} ROLE {r:?}"),
    }
    let pong: String = redis::cmd("PING").query(&mut old_con).unwrap();
    assert_eq!(pong, "PONG");
    let moved: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("flags").query(&mut old_con);
    let err = moved.expect_err("GET on the old owner after a failover");
    let want = format!("127.0.0.1:{second}");
    assert_eq!(err.redirect_node(), Some((want.as_str(), slot)), "{err}");
    // And the subscription there still hears the writes, replicated from the new owner.
    let msg = sub
        .get_message()
        .expect("a keyspace event on the old owner");
    assert_eq!(msg.get_channel_name(), "__keyspace@0__:flags");
    assert_eq!(msg.get_payload::<String>().unwrap(), "set");

    let t2 = Instant::now();
    let third = cluster.migrate_slot_of("flags").unwrap();
    let migrated = t2.elapsed();
    assert_ne!(third, second);
    assert_eq!(cluster.owner_of("flags"), third);
    let on_third: Option<String> = cmd_on(third, &["GET", "flags"]).unwrap();
    assert_eq!(on_third, Some(doc("f", "two")));
    let gone: redis::RedisResult<Option<String>> = redis::cmd("GET")
        .arg("flags")
        .query(&mut connect(second).unwrap());
    let err = gone.expect_err("GET on the old owner after a migration");
    let want = format!("127.0.0.1:{third}");
    assert_eq!(err.redirect_node(), Some((want.as_str(), slot)), "{err}");
    cluster.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(cluster.get("flags").unwrap(), Some(doc("f", "three")));

    eprintln!(
        "cluster: start {started:?}, failover {failed_over:?}, migration {migrated:?}, \
         total {:?}",
        t0.elapsed()
    );
}

/// Waits until GET `key` on `port` returns `want` (replication is asynchronous).
fn wait_until_value(port: u16, key: &str, want: &str) -> String {
    topology::wait_until(WAIT, "the value to replicate", || {
        let v: Option<String> = cmd_on(port, &["GET", key])?;
        match v {
            Some(v) if v == want => Ok(v),
            v => anyhow::bail!("GET {key} on {port}: {v:?}"),
        }
    })
    .unwrap()
}

/// Writes a document with `flagd-redis-sync put`, which must find the node itself.
async fn put(uri: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::tools::file(&dir, "flags.json", text);
    let out = crate::tools::run(&["put", "--redis-uri", uri, &path]).await;
    assert_eq!(out.code, 0, "put: {}", out.all());
}

/// `flagd-redis-sync doctor --format json` on `uri`: finding check -> (level, message).
/// Blocking: call from a multi-thread runtime (it runs the child to completion).
pub(crate) fn doctor(uri: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let (_, report) = tokio::task::block_in_place(|| crate::doctor::doctor(uri, &[]));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("check"), (s("level"), s("message")))
        })
        .collect()
}

/// The value of flag `f` in the stream's next message.
async fn next_f(s: &mut SyncStream) -> Option<String> {
    default_value(&s.next_json().await.unwrap(), "f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_streams_and_follows_the_new_master() {
    let set = SentinelSet::start("it-master").unwrap();
    set.set("flags", &doc("f", "one")).unwrap();
    let svc = Service::start(&set.uri("flags"), &["--redis-ping-interval", "1"])
        .await
        .unwrap();
    let mut s = svc.stream("").await.unwrap();
    assert_eq!(next_f(&mut s).await.as_deref(), Some("one"));
    let found = doctor(&set.uri("flags"));
    assert_eq!(found["topology"].0, "ok", "{found:?}");
    assert!(found["topology"].1.contains("sentinels name"), "{found:?}");
    assert_eq!(found["document"].0, "ok", "{found:?}");
    put(&set.uri("flags"), &doc("f", "two")).await;
    assert_eq!(set.get("flags").unwrap(), Some(doc("f", "two")));
    assert_eq!(next_f(&mut s).await.as_deref(), Some("two"));

    let old = set.master_port().unwrap();
    let new = tokio::task::block_in_place(|| set.failover()).unwrap();
    assert_ne!(old, new);
    // Written to the new master (as the sentinels now name it): the same stream, never
    // ended, gets it.
    let t = Instant::now();
    set.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(next_f(&mut s).await.as_deref(), Some("three"));
    eprintln!(
        "sentinel: write to the new master -> client in {:?}",
        t.elapsed()
    );
    svc.readyz_until("connected to the new master", |code, v| {
        code == 200 && v["redis"] == "connected"
    })
    .await;
    assert!(
        svc.logs().contains("node changed") || svc.logs().contains("connection lost"),
        "the move is logged:\n{}",
        svc.logs()
    );
    assert!(
        svc.logs().contains(&format!("127.0.0.1:{new}")),
        "{}",
        svc.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_and_slot_migration_keep_changes_flowing() {
    let cluster = RedisCluster::start(3, 1).unwrap();
    cluster.set("flags", &doc("f", "one")).unwrap();
    let first = cluster.owner_of("flags");
    // A second source whose key lives on another master: a second watcher.
    let other = (0..100)
        .map(|i| format!("team:{i}"))
        .find(|k| cluster.owner_of(k) != first)
        .expect("a key on another master");
    let other_owner = cluster.owner_of(&other);
    cluster.set(&other, &doc("g", "g1")).unwrap();
    let source = format!("other={other}");
    let svc = Service::start(
        &cluster.uri("flags"),
        &["--redis-ping-interval", "1", "--source", &source],
    )
    .await
    .unwrap();
    let mut s = svc.stream("flags").await.unwrap();
    assert_eq!(next_f(&mut s).await.as_deref(), Some("one"));
    let mut merged = svc.stream("").await.unwrap();
    let m = merged.next_json().await.unwrap();
    assert_eq!(default_value(&m, "g").as_deref(), Some("g1"), "{m}");
    for port in [first, other_owner] {
        assert!(
            svc.logs().contains(&format!("127.0.0.1:{port}")),
            "watches the slot owner {port}:\n{}",
            svc.logs()
        );
    }
    cluster.set(&other, &doc("g", "g2")).unwrap();
    let m = merged.next_json().await.unwrap();
    assert_eq!(default_value(&m, "g").as_deref(), Some("g2"), "{m}");
    assert_eq!(default_value(&m, "f").as_deref(), Some("one"), "{m}");
    let found = doctor(&cluster.uri("flags"));
    assert_eq!(found["topology"].0, "ok", "{found:?}");
    assert!(
        found["topology"].1.contains("owns the key's slot"),
        "{found:?}"
    );
    assert_eq!(found["document"].0, "ok", "{found:?}");
    // A plain redis:// URI to the same node: told to use redis+cluster://.
    let plain = doctor(&format!("redis://127.0.0.1:{first}/0?key=flags"));
    assert_eq!(plain["topology"].0, "warn", "{plain:?}");
    put(&cluster.uri("flags"), &doc("f", "two")).await;
    assert_eq!(cluster.get("flags").unwrap(), Some(doc("f", "two")));
    assert_eq!(next_f(&mut s).await.as_deref(), Some("two"));

    // Failover: the replica takes the slot; the old connection gets MOVED.
    let promoted = tokio::task::block_in_place(|| cluster.failover("flags")).unwrap();
    assert_ne!(promoted, first);
    let t = Instant::now();
    cluster.set("flags", &doc("f", "three")).unwrap();
    assert_eq!(next_f(&mut s).await.as_deref(), Some("three"));
    eprintln!("cluster failover: write -> client in {:?}", t.elapsed());

    // Resharding: the slot (with the key) moves to another master.
    let moved_to = tokio::task::block_in_place(|| cluster.migrate_slot_of("flags")).unwrap();
    assert_ne!(moved_to, promoted);
    let t = Instant::now();
    cluster.set("flags", &doc("f", "four")).unwrap();
    assert_eq!(next_f(&mut s).await.as_deref(), Some("four"));
    eprintln!("cluster migration: write -> client in {:?}", t.elapsed());
    svc.readyz_until("connected", |code, v| {
        code == 200 && v["redis"] == "connected"
    })
    .await;
    let logs = svc.logs();
    assert!(logs.contains(&format!("127.0.0.1:{moved_to}")), "{logs}");
}
