//! Redis Sentinel and Redis Cluster topologies for the tests: real `redis-server`
//! processes on probed ports in temp dirs (as [`RedisServer`]), everything on 127.0.0.1,
//! all killed on drop, nothing shared between tests.
//!
//! The API is blocking, like [`RedisServer`]: every wait polls a condition under a
//! deadline ([`wait_until`]), never a fixed sleep. A call such as
//! [`SentinelSet::failover`] blocks the calling thread for up to a few seconds; in a
//! `#[tokio::test]` that only delays the test's other tasks (a gRPC stream buffers).
//!
//! Redis facts these rely on, checked by integration/tests/it/topology.rs (Debian's 7.0.15):
//! - `SENTINEL FAILOVER` promotes the replica within about a second, and the promotion
//!   (one MULTI) kills the promoted node's normal and pub/sub clients. The OLD master
//!   stays a writable master, its client connections open, until the sentinels see it
//!   report master for 8 s on their 10 s INFO poll (about 10 s): a split brain in which
//!   writes to the old master are accepted and later lost. Then a sentinel makes it a
//!   replica and, in the same MULTI, kills its normal and pub/sub clients.
//! - `CLUSTER FAILOVER` makes the old master a replica within milliseconds and kills no
//!   client: old connections stay open, reads of the slot answer `MOVED`, and a keyspace
//!   subscription there keeps receiving the events of the replicated writes.
//! - A slot migration answers `MOVED` on the old owner as soon as it is done.

use crate::{free_port, RedisServer, WAIT};
use anyhow::{anyhow, bail, Context, Result};
use redis::Value;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits that depend on a sentinel's 10 s INFO period (e.g. the old master becoming a
/// replica after a failover) need more than [`WAIT`].
pub const SLOW_WAIT: Duration = Duration::from_secs(25);

/// Calls `f` until it returns `Ok`, every 25 ms, failing after `within` with the last
/// error (the state last seen, for the test's failure message).
pub fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                bail!("timed out after {within:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// A connection to 127.0.0.1:`port` with a 1 s connect and 5 s read/write timeout.
pub fn connect(port: u16) -> Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    con.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// Runs one command on a fresh connection to 127.0.0.1:`port`.
pub fn cmd_on<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T> {
    let mut con = connect(port)?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut con)
        .with_context(|| format!("{} on port {port}", args.join(" ")))
}

/// What `ROLE` says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A replica, with its master's port and link state (`connected` when in sync).
    Replica {
        master_port: u16,
        state: String,
    },
    Sentinel,
}

/// `ROLE` of the node on `port`.
pub fn role(port: u16) -> Result<Role> {
    let v: Vec<Value> = cmd_on(port, &["ROLE"])?;
    let kind: String = redis::from_redis_value_ref(v.first().context("empty ROLE reply")?)?;
    match kind.as_str() {
        "master" => Ok(Role::Master),
        "sentinel" => Ok(Role::Sentinel),
        "slave" if v.len() >= 4 => Ok(Role::Replica {
            master_port: redis::from_redis_value_ref(&v[2])?,
            state: redis::from_redis_value_ref(&v[3])?,
        }),
        _ => bail!("unexpected ROLE reply {v:?}"),
    }
}

/// The last `n` lines of a log, for error messages.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Common arguments of every data node: announce 127.0.0.1, and a full resync without the
/// 5 s wait for more replicas (a replica is in sync as soon as it has connected).
const DATA_NODE_ARGS: [&str; 4] = [
    "--replica-announce-ip",
    "127.0.0.1",
    "--repl-diskless-sync-delay",
    "0",
];

// ---------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------

/// One `redis-server <sentinel.conf> --sentinel` process, killed on drop.
struct SentinelProcess {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SentinelProcess {
    fn start(master_name: &str, master_port: u16) -> Result<Self> {
        let mut last = anyhow!("not tried");
        for _ in 0..5 {
            match Self::try_start(master_name, master_port, free_port()) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last.context("could not start a sentinel"))
    }

    fn try_start(master_name: &str, master_port: u16, port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("sentinel.conf");
        // Sentinel rewrites this file (known replicas, sentinels, epochs): it must be
        // writable, hence one per sentinel in its own temp dir.
        std::fs::write(
            &conf,
            format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 sentinel announce-ip 127.0.0.1\n\
                 sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.path().display(),
                log = dir.path().join("sentinel.log").display(),
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server --sentinel")?;
        let mut s = SentinelProcess {
            port,
            dir,
            child: Some(child),
        };
        wait_until(WAIT, "a sentinel to answer PING", || {
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                s.child = None;
                return Ok(Err(anyhow!(
                    "sentinel exited with {status}: {}",
                    tail(&s.log(), 5)
                )));
            }
            cmd_on::<String>(port, &["PING"]).map(|_| Ok(()))
        })??;
        Ok(s)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A key/value reply (`SENTINEL MASTER`, an entry of `SENTINEL REPLICAS`/`SENTINELS`).
type Fields = HashMap<String, String>;

fn field<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or("")
}

/// One master, one replica and three sentinels (quorum 2, down-after 1 s), all on
/// 127.0.0.1 ports of their own. Killed on drop.
pub struct SentinelSet {
    master_name: String,
    /// The data nodes: index 0 started as the master, 1 as its replica.
    nodes: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl SentinelSet {
    /// Starts the set and returns once every sentinel knows the master, sees the replica
    /// in sync (`master-link-status ok`, so `SENTINEL FAILOVER` is granted) and knows the
    /// two other sentinels.
    pub fn start(master_name: &str) -> Result<SentinelSet> {
        let master = RedisServer::start_with(&DATA_NODE_ARGS)?;
        let mp = master.port.to_string();
        let mut replica_args = DATA_NODE_ARGS.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &mp]);
        let replica = RedisServer::start_with(&replica_args)?;
        // In sync before the sentinels look: a sentinel reads a replica's link state at
        // discovery and then only every 10 s.
        let rp = replica.port;
        wait_until(WAIT, "the replica to be in sync", || {
            match role(rp)? {
                Role::Replica { state, .. } if state == "connected" => {}
                r => bail!("replica ROLE {r:?}"),
            }
            let info: String = cmd_on(master.port, &["INFO", "replication"])?;
            if !info.contains(&format!("port={rp},state=online")) {
                bail!("master INFO replication: {info}");
            }
            Ok(())
        })?;
        let mut set = SentinelSet {
            master_name: master_name.to_string(),
            nodes: vec![master, replica],
            sentinels: Vec::new(),
        };
        for _ in 0..3 {
            set.sentinels
                .push(SentinelProcess::start(master_name, set.nodes[0].port)?);
        }
        set.wait_healthy(set.nodes[0].port, rp)
            .map_err(|e| anyhow!("{e:#}\n{}", set.logs()))?;
        Ok(set)
    }

    /// Waits until every live sentinel reports `master` as the master, `replica` as its
    /// in-sync replica, and knows all other live sentinels.
    fn wait_healthy(&self, master: u16, replica: u16) -> Result<()> {
        let name = self.master_name.as_str();
        let others = self.live_sentinels().len() - 1;
        wait_until(
            WAIT,
            "the sentinels to agree on master, replica and each other",
            || {
                for sp in self.live_sentinels() {
                    let m: Fields = cmd_on(sp, &["SENTINEL", "MASTER", name])?;
                    if field(&m, "port") != master.to_string()
                        || field(&m, "flags") != "master"
                        || field(&m, "num-other-sentinels") != others.to_string()
                    {
                        bail!("sentinel {sp}: SENTINEL MASTER {m:?}");
                    }
                    let rs: Vec<Fields> = cmd_on(sp, &["SENTINEL", "REPLICAS", name])?;
                    let ok = rs.iter().any(|r| {
                        field(r, "port") == replica.to_string()
                            && field(r, "flags") == "slave"
                            && field(r, "master-link-status") == "ok"
                            && field(r, "master-port") == master.to_string()
                    });
                    if !ok {
                        bail!("sentinel {sp}: SENTINEL REPLICAS {rs:?}");
                    }
                    let ss: Vec<Fields> = cmd_on(sp, &["SENTINEL", "SENTINELS", name])?;
                    if ss
                        .iter()
                        .filter(|s| field(s, "flags") == "sentinel")
                        .count()
                        != others
                    {
                        bail!("sentinel {sp}: SENTINEL SENTINELS {ss:?}");
                    }
                }
                Ok(())
            },
        )
    }

    /// The configured master name.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The ports of the three sentinels (killed ones included), in start order.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    fn live_sentinels(&self) -> Vec<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.alive())
            .map(|s| s.port)
            .collect()
    }

    /// The ports of the data nodes (the initial master first, then the replica).
    pub fn data_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The data node on `port`, e.g. for [`RedisServer::restart`] or its log.
    pub fn node(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port == port)
    }

    /// The master's port as the first live sentinel that answers reports it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub fn master_port(&self) -> Result<u16> {
        let mut last = anyhow!("no live sentinel");
        for sp in self.live_sentinels() {
            match self.reported_master(sp) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn reported_master(&self, sentinel: u16) -> Result<u16> {
        let (ip, port): (String, u16) = cmd_on(
            sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
        )?;
        if ip != "127.0.0.1" {
            bail!("sentinel {sentinel} reports master {ip}:{port}");
        }
        Ok(port)
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/<master_name>/0?key=KEY`
    pub fn uri(&self, key: &str) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "redis+sentinel://{}/{}/0?key={key}",
            hosts.join(","),
            self.master_name
        )
    }

    /// A client for the current master (as the sentinels report it now).
    pub fn master_client(&self) -> Result<redis::Client> {
        let port = self.master_port()?;
        Ok(redis::Client::open(format!("redis://127.0.0.1:{port}/"))?)
    }

    /// SET on the current master.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        cmd_on(self.master_port()?, &["SET", key, value])
    }

    /// GET on the current master.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        cmd_on(self.master_port()?, &["GET", key])
    }

    /// `SENTINEL FAILOVER <name>` (retried while a sentinel answers NOGOODSLAVE or
    /// INPROG, e.g. right after a previous failover), then waits until every live
    /// sentinel reports the new master and its ROLE is master. Returns its port.
    ///
    /// The old master is NOT a replica yet when this returns: see the module comment,
    /// and [`SentinelSet::wait_replica_of`].
    pub fn failover(&self) -> Result<u16> {
        let old = self.master_port()?;
        let name = self.master_name.as_str();
        let mut i = 0;
        wait_until(SLOW_WAIT, "a sentinel to accept SENTINEL FAILOVER", || {
            let live = self.live_sentinels();
            let sp = *live
                .get(i % live.len().max(1))
                .context("no live sentinel")?;
            i += 1;
            cmd_on::<String>(sp, &["SENTINEL", "FAILOVER", name])
        })?;
        self.await_master_change(old)
    }

    /// Waits until every live sentinel reports a master other than `old` and that node's
    /// ROLE is master; returns its port. For failovers caused by killing the master.
    pub fn await_master_change(&self, old: u16) -> Result<u16> {
        wait_until(SLOW_WAIT, "the sentinels to agree on a new master", || {
            let live = self.live_sentinels();
            let ports = live
                .iter()
                .map(|&sp| self.reported_master(sp))
                .collect::<Result<Vec<u16>>>()?;
            let new = *ports.first().context("no live sentinel")?;
            if new == old || ports.iter().any(|&p| p != new) {
                bail!("sentinels {live:?} report masters {ports:?} (old {old})");
            }
            match role(new)? {
                Role::Master => Ok(new),
                r => bail!("reported master {new} has ROLE {r:?}"),
            }
        })
    }

    /// Waits until the node on `port` is a replica of `master` and in sync. After a
    /// failover the sentinels reconfigure the old master only on their next INFO of it,
    /// up to 10 s later: this waits up to [`SLOW_WAIT`].
    pub fn wait_replica_of(&self, port: u16, master: u16) -> Result<()> {
        wait_until(
            SLOW_WAIT,
            "a node to become an in-sync replica",
            || match role(port)? {
                Role::Replica { master_port, state }
                    if master_port == master && state == "connected" =>
                {
                    Ok(())
                }
                r => bail!("node {port} ROLE {r:?}, want replica of {master}"),
            },
        )
    }

    /// Kills the current master with SIGKILL; returns its port. The sentinels fail over
    /// after down-after-milliseconds (1 s): see [`SentinelSet::await_master_change`].
    pub fn kill_master(&mut self) -> Result<u16> {
        let port = self.master_port()?;
        self.node(port)
            .with_context(|| format!("no data node on {port}"))?
            .kill9();
        Ok(port)
    }

    /// Kills sentinel number `index` (0..3) with SIGKILL.
    pub fn kill_sentinel(&mut self, index: usize) {
        self.sentinels[index].kill9();
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out += &format!("--- redis-server {} ---\n{}\n", n.port, tail(&n.log(), 30));
        }
        for s in &self.sentinels {
            out += &format!("--- sentinel {} ---\n{}\n", s.port, tail(&s.log(), 30));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

/// One range of `CLUSTER SLOTS`: the master's port (replicas are not needed here).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    start: u16,
    end: u16,
    master: u16,
}

/// `CLUSTER SLOTS` as seen by the node on `port`, sorted.
fn slot_map(port: u16) -> Result<Vec<SlotRange>> {
    let ranges: Vec<Vec<Value>> = cmd_on(port, &["CLUSTER", "SLOTS"])?;
    let mut out = ranges
        .iter()
        .map(|r| {
            let master: Vec<Value> = redis::from_redis_value_ref(r.get(2).context("no master")?)?;
            Ok(SlotRange {
                start: redis::from_redis_value_ref(&r[0])?,
                end: redis::from_redis_value_ref(&r[1])?,
                master: redis::from_redis_value_ref(master.get(1).context("no port")?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|r| r.start);
    Ok(out)
}

fn owner_in(map: &[SlotRange], slot: u16) -> Option<u16> {
    map.iter()
        .find(|r| r.start <= slot && slot <= r.end)
        .map(|r| r.master)
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    master_id: String,
    link: String,
    /// Slot fields, including `[slot->-id]` / `[slot-<-id]` migration markers.
    slots: Vec<String>,
}

fn cluster_nodes(port: u16) -> Result<Vec<NodeLine>> {
    let text: String = cmd_on(port, &["CLUSTER", "NODES"])?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                bail!("bad CLUSTER NODES line {l:?}");
            }
            // 127.0.0.1:PORT@BUSPORT[,hostname]
            let addr = f[1].split(['@', ',']).next().unwrap_or_default();
            let port = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("bad address in {l:?}"))?;
            Ok(NodeLine {
                id: f[0].to_string(),
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                master_id: f[3].to_string(),
                link: f[7].to_string(),
                slots: f[8..].iter().map(|s| s.to_string()).collect(),
            })
        })
        .collect()
}

/// A Redis Cluster of `masters` masters with `replicas_per_master` replicas each, made
/// with `redis-cli --cluster create`. Every node has an explicit, probed bus port
/// (`--cluster-port`, Redis 7), so there is no port + 10000 constraint. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// redis-cli's output.
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and returns once every node says
    /// `cluster_state:ok`, knows every other node, all agree on the slot map, and every
    /// replica is in sync with its master. `masters` must be at least 3 (redis-cli).
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<RedisCluster> {
        if masters < 3 {
            bail!("redis-cli --cluster create needs at least 3 masters, got {masters}");
        }
        let total = masters * (1 + replicas_per_master);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(Self::start_node()?);
        }
        let cluster = RedisCluster {
            nodes,
            dir: tempfile::tempdir()?,
        };
        cluster.create(replicas_per_master)?;
        cluster
            .wait_stable(masters, replicas_per_master)
            .map_err(|e| anyhow!("{e:#}\n{}", cluster.logs()))?;
        Ok(cluster)
    }

    fn start_node() -> Result<RedisServer> {
        let mut last = anyhow!("not tried");
        for _ in 0..5 {
            let bus = free_port().to_string();
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                // Relative to --dir, the node's own temp dir.
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus,
                "--cluster-announce-ip",
                "127.0.0.1",
                "--cluster-node-timeout",
                "3000",
            ];
            args.extend(DATA_NODE_ARGS);
            match RedisServer::start_with(&args) {
                Ok(n) => return Ok(n),
                Err(e) => last = e,
            }
        }
        Err(last.context("could not start a cluster node"))
    }

    fn create(&self, replicas_per_master: usize) -> Result<()> {
        let out_path = self.dir.path().join("create.log");
        let out = std::fs::File::create(&out_path)?;
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for p in self.seed_ports() {
            cmd.arg(format!("127.0.0.1:{p}"));
        }
        let mut child = cmd
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning redis-cli --cluster create")?;
        let status = wait_until(
            Duration::from_secs(30),
            "redis-cli --cluster create",
            || child.try_wait()?.context("still running"),
        );
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("redis-cli --cluster create exited with {s}:\n{output}"),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{e:#}:\n{output}")
            }
        }
    }

    fn wait_stable(&self, masters: usize, replicas_per_master: usize) -> Result<()> {
        let total = self.nodes.len();
        wait_until(
            WAIT,
            "the cluster to be ok and agreed on every node",
            || {
                let reference = slot_map(self.nodes[0].port)?;
                let mut owners: Vec<u16> = reference.iter().map(|r| r.master).collect();
                owners.sort();
                owners.dedup();
                if owners.len() != masters {
                    bail!("slot map {reference:?}, want {masters} masters");
                }
                for n in self.live_nodes() {
                    let info: String = cmd_on(n, &["CLUSTER", "INFO"])?;
                    if !info.contains("cluster_state:ok")
                        || !info.contains(&format!("cluster_known_nodes:{total}\r"))
                    {
                        bail!("node {n}: CLUSTER INFO {info}");
                    }
                    let map = slot_map(n)?;
                    if map != reference {
                        bail!("node {n} slot map {map:?} differs from {reference:?}");
                    }
                    let lines = cluster_nodes(n)?;
                    let bad = lines.iter().any(|l| {
                        l.link != "connected"
                            || l.flags.iter().any(|f| {
                                matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr")
                            })
                    });
                    let replicas = lines
                        .iter()
                        .filter(|l| l.flags.iter().any(|f| f == "slave"))
                        .count();
                    if bad || lines.len() != total || replicas != masters * replicas_per_master {
                        bail!("node {n}: CLUSTER NODES {lines:?}");
                    }
                    if let Role::Replica { state, .. } = role(n)? {
                        if state != "connected" {
                            bail!("replica {n} link {state}");
                        }
                    }
                }
                Ok(())
            },
        )
    }

    fn live_nodes(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| role(n.port).is_ok())
            .map(|n| n.port)
            .collect()
    }

    /// The ports of all nodes (masters and replicas), in start order.
    pub fn seed_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…/?key=KEY`, every node a seed.
    /// No database number: a cluster has only db 0, so the path is just `/`.
    pub fn uri(&self, key: &str) -> String {
        let hosts: Vec<String> = self
            .seed_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/?key={key}", hosts.join(","))
    }

    /// The node on `port`, e.g. for [`RedisServer::kill9`] or its log.
    pub fn node(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port == port)
    }

    /// `CLUSTER KEYSLOT key`, asked of the first live node.
    pub fn slot_of(&self, key: &str) -> Result<u16> {
        let mut last = anyhow!("no live node");
        for p in self.seed_ports() {
            match cmd_on(p, &["CLUSTER", "KEYSLOT", key]) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The port of the master owning `key`'s slot, as the first live node sees it
    /// (`CLUSTER KEYSLOT` + `CLUSTER SLOTS`). Panics if no node answers.
    pub fn owner_of(&self, key: &str) -> u16 {
        self.try_owner_of(key)
            .unwrap_or_else(|e| panic!("owner of {key:?}: {e:#}"))
    }

    fn try_owner_of(&self, key: &str) -> Result<u16> {
        let slot = self.slot_of(key)?;
        let mut last = anyhow!("no live node");
        for p in self.seed_ports() {
            match slot_map(p) {
                Ok(map) => return owner_in(&map, slot).context("slot not covered"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// SET on the owner of `key`'s slot (a plain connection to that node).
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        cmd_on(self.try_owner_of(key)?, &["SET", key, value])
    }

    /// GET on the owner of `key`'s slot.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        cmd_on(self.try_owner_of(key)?, &["GET", key])
    }

    /// Waits until every live node maps `slot` to `owner`.
    fn wait_all_agree(&self, slot: u16, owner: u16) -> Result<()> {
        wait_until(WAIT, "every node to agree on the slot's owner", || {
            for n in self.live_nodes() {
                let seen = owner_in(&slot_map(n)?, slot);
                if seen != Some(owner) {
                    bail!("node {n} maps slot {slot} to {seen:?}, want {owner}");
                }
            }
            Ok(())
        })
    }

    /// `CLUSTER FAILOVER` on an in-sync replica of the owner of `key`'s slot; waits until
    /// that replica is master and every live node maps the slot to it. Returns its port.
    /// The old master becomes its replica; its clients are NOT disconnected.
    pub fn failover(&self, key: &str) -> Result<u16> {
        let slot = self.slot_of(key)?;
        let owner = self.try_owner_of(key)?;
        let nodes = cluster_nodes(owner)?;
        let owner_id = &nodes
            .iter()
            .find(|l| l.port == owner)
            .context("owner not in its own CLUSTER NODES")?
            .id;
        let replicas: Vec<u16> = nodes
            .iter()
            .filter(|l| &l.master_id == owner_id && l.flags.iter().any(|f| f == "slave"))
            .map(|l| l.port)
            .collect();
        if replicas.is_empty() {
            bail!("the owner {owner} of slot {slot} has no replica");
        }
        let chosen = wait_until(WAIT, "an in-sync replica of the owner", || {
            for &r in &replicas {
                if let Ok(Role::Replica { master_port, state }) = role(r) {
                    if master_port == owner && state == "connected" {
                        return Ok(r);
                    }
                }
            }
            bail!("no replica of {owner} among {replicas:?} is connected")
        })?;
        let _: String = cmd_on(chosen, &["CLUSTER", "FAILOVER"])?;
        wait_until(WAIT, "the replica to become master", || {
            match role(chosen)? {
                Role::Master => Ok(()),
                r => bail!("{chosen} ROLE {r:?}"),
            }
        })?;
        self.wait_all_agree(slot, chosen)?;
        Ok(chosen)
    }

    /// Moves `key`'s slot, with its keys, from its owner to another master
    /// (SETSLOT IMPORTING / MIGRATING, MIGRATE … KEYS, SETSLOT NODE on every master);
    /// waits until every live node maps the slot to the new owner and no node has the
    /// slot open. Returns the new owner's port.
    pub fn migrate_slot_of(&self, key: &str) -> Result<u16> {
        let slot = self.slot_of(key)?;
        let source = self.try_owner_of(key)?;
        let mut masters: Vec<u16> = slot_map(source)?.iter().map(|r| r.master).collect();
        masters.sort();
        masters.dedup();
        let target = *masters
            .iter()
            .find(|&&m| m != source)
            .context("no other master")?;
        let source_id: String = cmd_on(source, &["CLUSTER", "MYID"])?;
        let target_id: String = cmd_on(target, &["CLUSTER", "MYID"])?;
        let s = slot.to_string();
        let _: () = cmd_on(target, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id])?;
        let _: () = cmd_on(source, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id])?;
        loop {
            let keys: Vec<String> = cmd_on(source, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])?;
            if keys.is_empty() {
                break;
            }
            let t = target.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &t, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: String = cmd_on(source, &args)?;
        }
        // The target first, so that the slot is never owned by nobody.
        let _: () = cmd_on(target, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])?;
        let _: () = cmd_on(source, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])?;
        for &m in masters.iter().filter(|&&m| m != source && m != target) {
            let _: () = cmd_on(m, &["CLUSTER", "SETSLOT", &s, "NODE", &target_id])?;
        }
        self.wait_all_agree(slot, target)?;
        wait_until(WAIT, "no node to have the slot open", || {
            for n in self.live_nodes() {
                let open = cluster_nodes(n)?
                    .into_iter()
                    .filter(|l| l.flags.iter().any(|f| f == "myself"))
                    .flat_map(|l| l.slots)
                    .any(|f| f.starts_with(&format!("[{slot}-")));
                if open {
                    bail!("node {n} still has slot {slot} importing or migrating");
                }
            }
            Ok(())
        })?;
        Ok(target)
    }

    /// The last lines of every node's log (and redis-cli's output), for failure messages.
    pub fn logs(&self) -> String {
        let mut out = format!(
            "--- redis-cli --cluster create ---\n{}\n",
            std::fs::read_to_string(self.dir.path().join("create.log")).unwrap_or_default()
        );
        for n in &self.nodes {
            out += &format!("--- redis-server {} ---\n{}\n", n.port, tail(&n.log(), 30));
        }
        out
    }
}
