//! A process group: one process per rank, joined through a rendezvous address (the
//! `MASTER_ADDR:MASTER_PORT` shape of torchrun, Slurm and Kubernetes), then a full mesh of
//! authenticated links (TCP, or shared memory between processes of one host) and Lockstep's
//! collectives on the caller's own memory.
//!
//! Rank 0 also serves the rendezvous: it binds `MASTER_ADDR:MASTER_PORT`, waits for `world`
//! registrations (bounded by `connect_timeout`), answers every rank with the peer table, and the
//! mesh is built. Every later wait is bounded by the peer timeout: a dead or frozen peer makes
//! the collective fail naming it.

use lockstep_collective::{Algo, AllReduce, CollectiveConfig, CollectiveError, Communicator};
use lockstep_transport::elastic::{self, Generation};
use lockstep_transport::{
    connect_mesh, connect_mesh_via_coordinator, Coordinator, Identity, Listener, MeshConfig,
    TransportKind,
};
use std::time::Duration;

/// Errors of the process group, each naming the variable, rank or operation.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A setting is missing or malformed (names the argument or environment variable).
    #[error("{0}")]
    Config(String),
    /// Joining the group failed (rendezvous or mesh).
    #[error("rank {rank} of {world}: joining the group through {master} failed: {reason}")]
    Join {
        /// This rank.
        rank: usize,
        /// The group size.
        world: usize,
        /// The rendezvous address.
        master: String,
        /// What failed.
        reason: String,
    },
    /// A collective failed (names the peer, the operation and its sequence number).
    #[error(transparent)]
    Collective(#[from] CollectiveError),
}

/// How to join: from explicit values or from the environment a cluster manager sets.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
    /// Rank on this host (`LOCAL_RANK`), for the caller's device or core placement.
    pub local_rank: usize,
    /// `host:port` of the rendezvous, served by rank 0.
    pub master: String,
    /// Shared secret of the group (every link is authenticated with it; never sent).
    pub token: Vec<u8>,
    /// Group name, checked in every handshake.
    pub cluster: String,
    /// Link backend: `tcp`, `shm`, or `auto` (shared memory between processes of one host).
    pub transport: TransportKind,
    /// Silence after which a peer is declared dead.
    pub peer_timeout: Duration,
    /// Deadline for the whole rendezvous and mesh.
    pub connect_timeout: Duration,
    /// Elastic: how long a process waits for its generation to form (a replacement waits for
    /// the members' next commit).
    pub join_timeout: Duration,
}

fn var(names: &[&str]) -> Option<(String, String)> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
}

fn number(names: &[&str]) -> Result<Option<usize>, GroupError> {
    match var(names) {
        None => Ok(None),
        Some((name, v)) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| GroupError::Config(format!("{name}={v:?} is not a number"))),
    }
}

impl GroupOptions {
    /// The options a cluster manager's environment gives: `RANK` / `SLURM_PROCID` /
    /// `JOB_COMPLETION_INDEX`, `WORLD_SIZE` / `SLURM_NTASKS`, `LOCAL_RANK` / `SLURM_LOCALID`,
    /// `MASTER_ADDR`, `MASTER_PORT`, `LOCKSTEP_TOKEN`, and optionally `LOCKSTEP_TRANSPORT`,
    /// `LOCKSTEP_PEER_TIMEOUT_MS`, `LOCKSTEP_CONNECT_TIMEOUT_MS`, `LOCKSTEP_CLUSTER`.
    ///
    /// # Errors
    /// [`GroupError::Config`] naming the missing or malformed variable.
    pub fn from_env() -> Result<GroupOptions, GroupError> {
        let missing = |what: &str| {
            GroupError::Config(format!(
                "{what} is not set: start the processes with torchrun, srun or `lockstep launch`, or pass rank=, world_size=, master_addr= and master_port= to lockstep.init()"
            ))
        };
        let rank = number(&["RANK", "SLURM_PROCID", "JOB_COMPLETION_INDEX"])?
            .ok_or_else(|| missing("RANK"))?;
        let world =
            number(&["WORLD_SIZE", "SLURM_NTASKS"])?.ok_or_else(|| missing("WORLD_SIZE"))?;
        let local_rank = number(&["LOCAL_RANK", "SLURM_LOCALID"])?.unwrap_or(rank);
        let (_, host) = var(&["MASTER_ADDR"]).ok_or_else(|| missing("MASTER_ADDR"))?;
        let port = number(&["MASTER_PORT"])?.ok_or_else(|| missing("MASTER_PORT"))?;
        let (_, token) = var(&["LOCKSTEP_TOKEN"]).ok_or_else(|| {
            GroupError::Config(
                "LOCKSTEP_TOKEN is not set: every rank needs the same shared secret (links are authenticated with it), for instance `export LOCKSTEP_TOKEN=$(openssl rand -hex 16)` before starting the processes".into(),
            )
        })?;
        let mut o = GroupOptions::new(rank, world, &format!("{host}:{port}"), token.as_bytes());
        o.local_rank = local_rank;
        if let Some((name, t)) = var(&["LOCKSTEP_TRANSPORT"]) {
            o.transport = t
                .parse()
                .map_err(|e| GroupError::Config(format!("{name}: {e}")))?;
        }
        if let Some(ms) = number(&["LOCKSTEP_PEER_TIMEOUT_MS"])? {
            o.peer_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(&["LOCKSTEP_CONNECT_TIMEOUT_MS"])? {
            o.connect_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = number(&["LOCKSTEP_JOIN_TIMEOUT_MS"])? {
            o.join_timeout = Duration::from_millis(ms as u64);
        }
        if let Some((_, c)) = var(&["LOCKSTEP_CLUSTER"]) {
            o.cluster = c;
        }
        Ok(o)
    }

    /// Explicit options with the defaults: transport `auto`, 3 s peer timeout, 60 s to join.
    pub fn new(rank: usize, world: usize, master: &str, token: &[u8]) -> GroupOptions {
        GroupOptions {
            rank,
            world,
            local_rank: rank,
            master: master.to_string(),
            token: token.to_vec(),
            cluster: "lockstep-python".into(),
            transport: TransportKind::Auto,
            peer_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(60),
            join_timeout: Duration::from_secs(600),
        }
    }

    /// A [`GroupError::Join`] of this rank, naming the rendezvous address and `reason`.
    fn join_error(&self, reason: String) -> GroupError {
        GroupError::Join {
            rank: self.rank,
            world: self.world,
            master: self.master.clone(),
            reason,
        }
    }

    /// The mesh settings of these options for node `name` at `rank` of `cluster`.
    fn mesh_config(
        &self,
        cluster: &str,
        name: &str,
        rank: usize,
        peers: Vec<lockstep_transport::PeerAddr>,
    ) -> MeshConfig {
        let mut m = MeshConfig::new(cluster, &self.token, name, rank, peers);
        m.transport = self.transport;
        m.peer_timeout_ms = self.peer_timeout.as_millis() as u64;
        m.heartbeat_ms = (m.peer_timeout_ms / 6).max(10);
        m.connect_timeout_ms = self.connect_timeout.as_millis() as u64;
        m
    }

    fn check(&self) -> Result<(), GroupError> {
        if self.world == 0 || self.rank >= self.world {
            return Err(GroupError::Config(format!(
                "rank {} is not below world size {}",
                self.rank, self.world
            )));
        }
        if self.token.is_empty() {
            return Err(GroupError::Config("the token is empty".into()));
        }
        if self.peer_timeout < Duration::from_millis(20) {
            return Err(GroupError::Config(format!(
                "peer timeout {} ms is below the 20 ms minimum",
                self.peer_timeout.as_millis()
            )));
        }
        Ok(())
    }
}

/// A joined process group.
pub struct ProcessGroup {
    comm: Communicator,
    local_rank: usize,
    /// Cluster name, token and rendezvous address: services beside the group (a stream's
    /// ingest endpoints) authenticate with the group's secret.
    cluster: String,
    token: Vec<u8>,
    master: String,
}

impl ProcessGroup {
    /// Join the group: rank 0 serves the rendezvous on `master`; every rank registers, receives
    /// the peer table and builds the mesh.
    ///
    /// # Errors
    /// [`GroupError::Config`] for bad options, [`GroupError::Join`] when the rendezvous or the
    /// mesh fails or times out.
    pub fn init(o: &GroupOptions) -> Result<ProcessGroup, GroupError> {
        o.check()?;
        let fail = |reason: String| o.join_error(reason);
        let serving = if o.rank == 0 {
            let c = Coordinator::bind(&o.master, &o.cluster, &o.token)
                .map_err(|e| fail(format!("cannot serve the rendezvous: {e}")))?;
            let (world, timeout) = (o.world, o.connect_timeout);
            Some(std::thread::spawn(move || {
                c.serve(world, timeout).map_err(|e| e.to_string())
            }))
        } else {
            None
        };
        let name = format!("rank-{}", o.rank);
        let m = o.mesh_config(&o.cluster, &name, o.rank, vec![]);
        let listener = Listener::bind("0.0.0.0:0").map_err(|e| fail(e.to_string()))?;
        let group = connect_mesh_via_coordinator(&o.master, &m, listener);
        if let Some(h) = serving {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(fail(format!("rendezvous: {e}"))),
                Err(_) => return Err(fail("the rendezvous thread panicked".into())),
            }
        }
        let group = group.map_err(|e| fail(e.to_string()))?;
        Ok(ProcessGroup {
            comm: Communicator::new(group, CollectiveConfig::default()),
            local_rank: o.local_rank,
            cluster: o.cluster.clone(),
            token: o.token.clone(),
            master: o.master.clone(),
        })
    }

    /// Elastic: join the next generation through the rendezvous service at `o.master` (hosted
    /// by `lockstep run --elastic`), as node `rank-{o.rank}` with its newest committed `step`
    /// (-1: none), and build that generation's mesh.
    ///
    /// # Errors
    /// [`GroupError::Join`] when the service cannot be reached, refuses the token, or the
    /// generation does not form within `o.join_timeout`, or its mesh fails (a member died
    /// meanwhile: join again). `Ok(None)`: the job has finished.
    pub fn join_elastic(
        o: &GroupOptions,
        step: i64,
    ) -> Result<Option<(ProcessGroup, Generation)>, GroupError> {
        o.check()?;
        let fail = |reason: String| o.join_error(reason);
        let name = format!("rank-{}", o.rank);
        let me = Identity::new(&o.cluster, &name, &o.token);
        let listener = Listener::bind("0.0.0.0:0").map_err(|e| fail(e.to_string()))?;
        let Some(g) = elastic::join(&o.master, &me, &listener, step, o.join_timeout)
            .map_err(|e| fail(format!("rendezvous: {e}")))?
        else {
            return Ok(None);
        };
        // Each generation is a cluster of its own: no link of an older one can cross.
        let cluster = format!("{}-g{}", o.cluster, g.number);
        let m = o.mesh_config(&cluster, &name, g.rank, g.peers.clone());
        let group = connect_mesh(&m, listener)
            .map_err(|e| fail(format!("generation {}: {e}", g.number)))?;
        Ok(Some((
            ProcessGroup {
                comm: Communicator::new(group, CollectiveConfig::default()),
                local_rank: o.local_rank,
                cluster,
                token: o.token.clone(),
                master: o.master.clone(),
            },
            g,
        )))
    }

    /// Elastic: tell the rendezvous service that the job is done.
    ///
    /// # Errors
    /// [`GroupError::Join`] when the service cannot be reached.
    pub fn elastic_finish(o: &GroupOptions) -> Result<(), GroupError> {
        let me = Identity::new(&o.cluster, &format!("rank-{}", o.rank), &o.token);
        elastic::finish(&o.master, &me, o.connect_timeout)
            .map_err(|e| o.join_error(format!("telling the rendezvous: {e}")))
    }

    /// Elastic: how many processes wait at the rendezvous service to join.
    ///
    /// # Errors
    /// [`GroupError::Join`] when the service cannot be asked.
    pub fn elastic_waiting(o: &GroupOptions) -> Result<usize, GroupError> {
        let me = Identity::new(&o.cluster, &format!("rank-{}", o.rank), &o.token);
        elastic::waiting(&o.master, &me, o.connect_timeout)
            .map_err(|e| o.join_error(format!("asking the rendezvous: {e}")))
    }

    /// The identity `name` of this group (its cluster name and secret), for a service beside
    /// the group that authenticates with the group's token.
    pub fn identity(&self, name: &str) -> Identity {
        Identity::new(&self.cluster, name, &self.token)
    }

    /// The rendezvous address (`host:port`) the group was joined through.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.comm.world()
    }

    /// Rank on this host.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Allreduce `data` in place (sum, or mean with `mean`). `exact`: recursive doubling, whose
    /// order of additions depends on the world size alone: a power-of-two world sums in the
    /// fixed binary tree that the micro-batch rule needs (docs/python.md). Otherwise the
    /// fastest algorithm for the size.
    ///
    /// # Errors
    /// [`GroupError::Collective`] naming the peer that failed.
    pub fn allreduce(
        &mut self,
        data: &mut [f32],
        mean: bool,
        exact: bool,
    ) -> Result<(), GroupError> {
        let mut how = if mean {
            AllReduce::mean()
        } else {
            AllReduce::sum()
        };
        if exact {
            how = how.algo(Algo::Tree);
        }
        Ok(self.comm.allreduce(data, how)?)
    }

    /// Allreduce of f16 data (f32 accumulation).
    ///
    /// # Errors
    /// As [`ProcessGroup::allreduce`].
    pub fn allreduce_f16(
        &mut self,
        data: &mut [lockstep_tensor::f16],
        mean: bool,
    ) -> Result<(), GroupError> {
        let how = if mean {
            AllReduce::mean()
        } else {
            AllReduce::sum()
        };
        Ok(self.comm.allreduce_f16(data, how)?)
    }

    /// Copy rank `root`'s bytes into every rank's `data` (same length everywhere).
    ///
    /// # Errors
    /// [`GroupError::Config`] for a root outside the group; else as [`ProcessGroup::allreduce`].
    pub fn broadcast(&mut self, data: &mut [u8], root: usize) -> Result<(), GroupError> {
        if root >= self.size() {
            return Err(GroupError::Config(format!(
                "broadcast root {root} is not a rank of this group of {}",
                self.size()
            )));
        }
        Ok(self.comm.broadcast(data, root)?)
    }

    /// Every rank's `mine` (same length everywhere), concatenated in rank order into `out`
    /// (`world x mine.len()` bytes): one broadcast per rank, so the order is fixed.
    ///
    /// # Errors
    /// [`GroupError::Config`] when `out` has the wrong length; else as
    /// [`ProcessGroup::allreduce`].
    pub fn allgather(&mut self, mine: &[u8], out: &mut [u8]) -> Result<(), GroupError> {
        let n = mine.len();
        if out.len() != n * self.size() {
            return Err(GroupError::Config(format!(
                "allgather output holds {} bytes, not {} x {n}",
                out.len(),
                self.size()
            )));
        }
        let me = self.rank();
        out[me * n..(me + 1) * n].copy_from_slice(mine);
        for r in 0..self.size() {
            self.comm.broadcast(&mut out[r * n..(r + 1) * n], r)?;
        }
        Ok(())
    }

    /// Wait until every rank has called it.
    ///
    /// # Errors
    /// As [`ProcessGroup::allreduce`].
    pub fn barrier(&mut self) -> Result<(), GroupError> {
        Ok(self.comm.barrier()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn group_of(world: usize, transport: &str) -> Vec<ProcessGroup> {
        let master = format!("127.0.0.1:{}", free_port());
        let handles: Vec<_> = (0..world)
            .map(|r| {
                let mut o = GroupOptions::new(r, world, &master, b"secret");
                o.transport = transport.parse().unwrap();
                o.cluster = format!("t-{}", master.replace([':', '.'], "-"));
                o.connect_timeout = Duration::from_secs(20);
                std::thread::spawn(move || ProcessGroup::init(&o).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_over_tcp_and_shm_give_every_rank_the_same_bits() {
        for transport in ["tcp", "shm"] {
            let groups = group_of(3, transport);
            let out: Vec<_> = groups
                .into_iter()
                .map(|mut g| {
                    std::thread::spawn(move || {
                        let r = g.rank();
                        let mut x: Vec<f32> =
                            (0..1000).map(|i| (i * (r + 1)) as f32 * 0.1).collect();
                        g.allreduce(&mut x, false, true).unwrap();
                        let mut b = vec![r as u8; 5];
                        g.broadcast(&mut b, 2).unwrap();
                        let mut all = vec![0u8; 3 * 2];
                        g.allgather(&[r as u8, 10 + r as u8], &mut all).unwrap();
                        g.barrier().unwrap();
                        (x, b, all)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            for (x, b, all) in &out {
                assert_eq!(x, &out[0].0, "{transport}: ranks differ");
                assert!((x[10] - (10.0 * 0.1 + 20.0 * 0.1 + 30.0 * 0.1)).abs() < 1e-4);
                assert_eq!(b, &vec![2u8; 5]);
                assert_eq!(all, &vec![0, 10, 1, 11, 2, 12]);
            }
        }
    }

    #[test]
    fn bad_options_are_named() {
        let o = GroupOptions::new(2, 2, "127.0.0.1:1", b"t");
        let e = ProcessGroup::init(&o).err().unwrap().to_string();
        assert!(e.contains("rank 2 is not below world size 2"), "{e}");
        let mut o = GroupOptions::new(1, 2, "127.0.0.1:1", b"t");
        o.connect_timeout = Duration::from_millis(300);
        let e = ProcessGroup::init(&o).err().unwrap().to_string();
        assert!(
            e.contains("rank 1 of 2") && e.contains("127.0.0.1:1"),
            "{e}"
        );
    }
}
