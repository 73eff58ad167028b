//! Data parallelism past one device, on burn-collective: peers (one per device, threads of one
//! process, and processes on several nodes) each run the same training loop on their slice of
//! every batch; the slices' gradients are summed with burn-collective's all-reduce, and every
//! peer makes the same optimizer step with the same sum.
//!
//! A batch is cut into the run's shards as on one device ([`crate::TrainConfig::shards`], the
//! count over all peers), and peer `r` of `W` computes the `r`-th of `W` contiguous runs of
//! them, seeding each shard's dropout by its index in the batch. Each shard's loss is scaled by
//! its share of the whole batch's rows, so the all-reduced sum is the batch's mean gradient:
//! learning rates do not change with the peer count, and a run gives the same model on any
//! number of peers up to the order of float additions (with two peers, bit for bit).
//!
//! Every collective call waits at most [`PeerGroup::timeout`]: a peer or node that dies or never
//! joins stops the others with [`TrainError::CollectiveTimeout`] naming whom they waited for,
//! never a silent hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::{Result, TrainError};

/// How this process meets the other nodes of a multi-machine run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSetup {
    /// Nodes in the run.
    pub nodes: usize,
    /// This node's rank, `0..nodes` (rank 0 evaluates and writes the files).
    pub rank: usize,
    /// The orchestrator, `host:port` ([`run_orchestrator`]).
    pub orchestrator: String,
    /// This node's host name or address as the other nodes reach it.
    pub host: String,
    /// The port of this node's tensor data service (the other nodes download from it).
    pub data_port: u16,
}

/// The peers of a run: `devices` per node, on one node or on those of [`NodeSetup`].
#[derive(Debug, Clone)]
pub struct PeerGroup {
    devices: usize,
    node: Option<NodeSetup>,
    timeout: Duration,
    /// How many collective calls each of this process's peers has entered.
    arrivals: Arc<Vec<AtomicU64>>,
}

impl PeerGroup {
    /// `devices` peers in this process (at least 1), on one node.
    pub fn new(devices: usize) -> Self {
        let devices = devices.max(1);
        Self {
            devices,
            node: None,
            timeout: Duration::from_secs(60),
            arrivals: Arc::new((0..devices).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// The same peers on each node of `node` (burn-collective's global level: the nodes meet
    /// at the orchestrator, then all-reduce peer to peer through each node's data service on
    /// `node.host:node.data_port`).
    pub fn with_nodes(mut self, node: NodeSetup) -> Result<Self> {
        if node.nodes == 0 || node.rank >= node.nodes {
            return Err(TrainError::Config(format!(
                "node rank {} is not in 0..{} (--node-rank, --nodes)",
                node.rank, node.nodes
            )));
        }
        self.node = Some(node);
        Ok(self)
    }

    /// How long a collective call waits for the other peers (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The wait of each collective call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Peers in this process.
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// Peers in the run, over all nodes.
    pub fn world(&self) -> usize {
        self.devices * self.node.as_ref().map_or(1, |n| n.nodes)
    }

    /// This process's peer number `local` (`0..devices`).
    pub fn peer(&self, local: usize) -> Peer {
        Peer {
            group: self.clone(),
            local,
            calls: 0,
        }
    }

    fn node_rank(&self) -> usize {
        self.node.as_ref().map_or(0, |n| n.rank)
    }

    fn config(&self) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(self.devices);
        let Some(node) = &self.node else {
            return Ok(config);
        };
        let address = |s: String| {
            s.parse()
                .map_err(|e| TrainError::Config(format!("address {s:?}: {e}")))
        };
        Ok(config
            .with_num_nodes(node.nodes as u32)
            .with_global_address(address(format!("ws://{}", node.orchestrator))?)
            .with_node_address(address(format!("ws://{}:{}", node.host, node.data_port))?)
            .with_data_service_port(node.data_port))
    }
}

/// One peer of a [`PeerGroup`]: its rank and its collective calls.
#[derive(Debug)]
pub struct Peer {
    group: PeerGroup,
    local: usize,
    calls: u64,
}

impl Peer {
    /// The rank over all nodes (`node rank × devices + local number`); rank 0 leads.
    pub fn rank(&self) -> usize {
        self.group.node_rank() * self.group.devices + self.local
    }

    /// Peers in the run.
    pub fn world(&self) -> usize {
        self.group.world()
    }

    /// Peers in this process.
    pub fn local_peers(&self) -> usize {
        self.group.devices
    }

    /// Whether this peer evaluates and writes the run's files.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    fn id(&self) -> PeerId {
        self.rank().into()
    }

    /// Joins the collective on `device` (waits for every peer).
    pub(crate) fn register<B: Backend>(&mut self, device: &B::Device) -> Result<()> {
        if let Some(node) = &self.group.node {
            reach_orchestrator(&node.orchestrator, self.rank(), self.group.timeout)?;
        }
        let (id, device, config) = (self.id(), device.clone(), self.group.config()?);
        self.call("joining the peers", move || {
            burn_collective::register::<B>(id, device, config)
        })
    }

    /// The sum of `values` over all peers (every peer gets the same values).
    pub(crate) fn sum<B: Backend>(
        &mut self,
        what: &str,
        values: Tensor<B, 1>,
    ) -> Result<Tensor<B, 1>> {
        let (id, tensor) = (self.id(), values.into_primitive().tensor());
        let sum = self.call(what, move || {
            burn_collective::all_reduce::<B>(id, tensor, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(sum)))
    }

    /// Host values summed over all peers, through one tensor on `device` (padded with zeros
    /// to at least one value per node: burn-collective's ring cuts it into one piece a node).
    pub(crate) fn sum_host<B: Backend>(
        &mut self,
        what: &str,
        mut values: Vec<f32>,
        device: &B::Device,
    ) -> Result<Vec<f32>> {
        let n = values.len();
        let nodes = self.group.node.as_ref().map_or(1, |node| node.nodes);
        values.resize(n.max(nodes), 0.0);
        let len = values.len();
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(values, [len]), device);
        // The peers' results share one buffer: copied out in one pass (see `host_values`).
        let mut sum = mtl_encoder::ops::host_values(self.sum(what, tensor)?);
        sum.truncate(n);
        Ok(sum)
    }

    /// The leader's `flag`, known to every peer.
    pub(crate) fn leader_says<B: Backend>(
        &mut self,
        flag: bool,
        device: &B::Device,
    ) -> Result<bool> {
        let mine = if self.is_leader() && flag { 1.0 } else { 0.0 };
        Ok(self.sum_host::<B>("the leader's decision", vec![mine], device)?[0] > 0.5)
    }

    /// Fails unless every peer's `fingerprint` of `what` equals this one's, naming the ranks
    /// that differ and both hashes.
    pub(crate) fn check_same<B: Backend>(
        &mut self,
        what: &str,
        fingerprint: u64,
        device: &B::Device,
    ) -> Result<()> {
        // Four 16-bit pieces per rank: exact in f32 sums, one slot per rank.
        let pieces = |h: u64| (0..4).map(move |k| ((h >> (16 * k)) & 0xFFFF) as f32);
        let mut slots = vec![0.0f32; 4 * self.world()];
        slots[4 * self.rank()..4 * self.rank() + 4]
            .iter_mut()
            .zip(pieces(fingerprint))
            .for_each(|(s, p)| *s = p);
        let all = self.sum_host::<B>(&format!("comparing {what}"), slots, device)?;
        let hash = |p: &[f32]| (0..4).fold(0u64, |h, k| h | ((p[k] as u64) << (16 * k)));
        let differ: Vec<(usize, u64)> = all
            .chunks(4)
            .enumerate()
            .map(|(rank, p)| (rank, hash(p)))
            .filter(|&(_, h)| h != fingerprint)
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainError::PeerMismatch {
            rank: self.rank(),
            what: what.to_string(),
            mine: format!("{fingerprint:016x}"),
            others: differ
                .iter()
                .map(|(r, h)| format!("rank {r} has {h:016x}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Leaves the collective (each all-reduce ends with a sync of every node, so no node still
    /// downloads from this one's data service).
    pub(crate) fn finish<B: Backend>(&mut self) -> Result<()> {
        let id = self.id();
        self.call("leaving the peers", move || {
            burn_collective::finish_collective::<B>(id)
        })
    }

    /// Runs collective call `f` on a thread of its own and waits for it at most the group's
    /// timeout (burn-collective's calls block without one).
    fn call<T: Send + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> std::result::Result<T, burn_collective::CollectiveError> + Send + 'static,
    ) -> Result<T> {
        self.calls += 1;
        self.group.arrivals[self.local].store(self.calls, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("mtl-collective-{}", self.rank()))
            .spawn(move || {
                let _ = tx.send(f());
            })
            .map_err(|e| self.failed(what, format!("cannot start a thread: {e}")))?;
        match rx.recv_timeout(self.group.timeout) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // burn-collective's node ids are not ranks: name whom this peer waited for.
                let message = match &self.group.node {
                    Some(_) => format!("{e:?}, waiting for {}", self.missing()),
                    None => format!("{e:?}"),
                };
                Err(self.failed(what, message))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(TrainError::CollectiveTimeout {
                rank: self.rank(),
                what: what.to_string(),
                seconds: self.group.timeout.as_secs_f64(),
                missing: self.missing(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.failed(
                what,
                format!(
                    "the collective stopped while waiting for {} (it went away)",
                    self.missing()
                ),
            )),
        }
    }

    fn failed(&self, what: &str, message: String) -> TrainError {
        TrainError::Collective {
            rank: self.rank(),
            what: what.to_string(),
            message,
        }
    }

    /// Whom this peer waits for: this process's peers that have not reached this call, else
    /// the other nodes.
    fn missing(&self) -> String {
        let group = &self.group;
        let base = group.node_rank() * group.devices;
        let behind: Vec<String> = group
            .arrivals
            .iter()
            .enumerate()
            .filter(|(_, n)| n.load(Ordering::SeqCst) < self.calls)
            .map(|(local, _)| (base + local).to_string())
            .collect();
        if !behind.is_empty() {
            return format!("rank {}", behind.join(", "));
        }
        match &group.node {
            Some(node) => {
                let others: Vec<String> = (0..node.nodes)
                    .filter(|&r| r != node.rank)
                    .map(|r| {
                        let ranks = r * group.devices..(r + 1) * group.devices;
                        let ranks: Vec<String> = ranks.map(|k| k.to_string()).collect();
                        format!("rank {} (node {r})", ranks.join(", "))
                    })
                    .collect();
                format!("{} (every peer of this node arrived)", others.join(" or "))
            }
            None => "no one: every peer arrived (burn-collective did not answer)".into(),
        }
    }
}

/// Times `rounds` all-reduces of `values` floats as peer `local` of `group` (for `mtl bench`):
/// the seconds of each call, which include waiting for the slowest peer.
pub fn time_all_reduce<B: Backend>(
    group: &PeerGroup,
    local: usize,
    values: usize,
    rounds: usize,
    device: &B::Device,
) -> Result<Vec<f64>> {
    reset::<B>();
    let mut peer = group.peer(local);
    peer.register::<B>(device)?;
    let mut seconds = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let buffer = vec![(peer.rank() + round) as f32; values];
        let start = std::time::Instant::now();
        let sum = peer.sum_host::<B>("timing all-reduces", buffer, device)?;
        seconds.push(start.elapsed().as_secs_f64());
        let want = (0..peer.world()).map(|r| (r + round) as f32).sum::<f32>();
        if sum.first() != Some(&want) || sum.last() != Some(&want) {
            return Err(peer.failed("timing all-reduces", format!("wrong sum in round {round}")));
        }
    }
    peer.finish::<B>()?;
    Ok(seconds)
}

/// Forgets the peers and calls of earlier runs in this process (before a new group registers).
pub(crate) fn reset<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

/// Runs the orchestrator the nodes of a multi-machine run meet at, on `host:port`, until the
/// process is interrupted (SIGINT / SIGTERM). It forgets the nodes of a run whose connections
/// closed, so that the nodes of a failed run can start again without restarting it.
pub fn run_orchestrator(host: &str, port: u16) -> Result<()> {
    // Fail here, naming the address, rather than inside burn-collective's server task.
    std::net::TcpListener::bind((host, port)).map_err(|e| {
        TrainError::Config(format!(
            "the orchestrator cannot listen on {host}:{port}: {e}"
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Config(format!("cannot start the orchestrator's runtime: {e}")))?;
    runtime.block_on(burn_collective::start_global_orchestrator_at(host, port));
    Ok(())
}

/// Waits until a TCP connection to the orchestrator `address` opens, at most `timeout`.
fn reach_orchestrator(address: &str, rank: usize, timeout: Duration) -> Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match address.to_socket_addrs() {
            Ok(addrs) => {
                for addr in addrs {
                    let left = timeout
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(2))) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(TrainError::Collective {
        rank,
        what: "reaching the orchestrator".into(),
        message: format!(
            "no orchestrator at {address} within {} s ({last}); start `mtl orchestrator` there \
             first, or check --orchestrator",
            timeout.as_secs_f64()
        ),
    })
}

/// A 64-bit FNV-1a hash, for comparing configurations and data between peers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds `bytes` (with their length, so that concatenations differ).
    pub(crate) fn add(&mut self, bytes: &[u8]) -> &mut Self {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_nodes_then_devices() {
        let node = NodeSetup {
            nodes: 3,
            rank: 2,
            orchestrator: "127.0.0.1:1".into(),
            host: "127.0.0.1".into(),
            data_port: 2,
        };
        let group = PeerGroup::new(2).with_nodes(node.clone()).unwrap();
        assert_eq!(group.world(), 6);
        assert_eq!(group.peer(1).rank(), 5);
        assert!(!group.peer(0).is_leader());
        assert!(PeerGroup::new(1).peer(0).is_leader());
        let bad = NodeSetup {
            rank: 3,
            ..node.clone()
        };
        assert!(PeerGroup::new(1).with_nodes(bad).is_err());
        assert_eq!(
            group.peer(0).missing(),
            "rank 0, 1 (node 0) or rank 2, 3 (node 1) (every peer of this node arrived)"
        );
    }

    /// A node whose orchestrator is not there stops within the timeout, naming the address.
    #[test]
    fn an_unreachable_orchestrator_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        let err = reach_orchestrator(&format!("127.0.0.1:{port}"), 1, Duration::from_millis(600))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.contains(&format!("no orchestrator at 127.0.0.1:{port}")),
            "{err}"
        );
        assert!(err.starts_with("rank 1"), "{err}");
    }

    type B = burn::backend::NdArray;

    /// A peer whose partner never joins stops within the timeout, naming the missing rank;
    /// peers with different configurations are refused, naming the other rank.
    #[test]
    fn missing_and_mismatched_peers_are_errors() {
        let device = Default::default();
        reset::<B>();
        let group = PeerGroup::new(2).with_timeout(Duration::from_millis(300));
        let mut lonely = group.peer(0);
        let started = std::time::Instant::now();
        match lonely.register::<B>(&device) {
            Err(TrainError::CollectiveTimeout { rank, missing, .. }) => {
                assert_eq!((rank, missing.as_str()), (0, "rank 1"));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));

        reset::<B>();
        let group = PeerGroup::new(2).with_timeout(Duration::from_secs(20));
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = [11u64, 12]
                .into_iter()
                .enumerate()
                .map(|(local, print)| {
                    let mut peer = group.peer(local);
                    scope.spawn(move || {
                        peer.register::<B>(&device)?;
                        let sum = peer.sum_host::<B>("test", vec![1.0, local as f32], &device)?;
                        assert_eq!(sum, vec![2.0, 1.0]);
                        peer.check_same::<B>("configurations", print, &device)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, result) in results.into_iter().enumerate() {
            match result {
                Err(TrainError::PeerMismatch {
                    rank: r,
                    mine,
                    others,
                    ..
                }) => {
                    let (me, other) = ([11u64, 12][rank], [11u64, 12][1 - rank]);
                    assert_eq!(r, rank);
                    assert_eq!(mine, format!("{me:016x}"));
                    assert_eq!(others, format!("rank {} has {other:016x}", 1 - rank));
                }
                other => panic!("expected a mismatch, got {other:?}"),
            }
        }
        reset::<B>();
    }

    #[test]
    fn fingerprints_see_every_byte_and_boundary() {
        let hash = |parts: &[&[u8]]| {
            let mut f = Fingerprint::default();
            parts.iter().for_each(|p| {
                f.add(p);
            });
            f.value()
        };
        assert_eq!(hash(&[b"ab", b"c"]), hash(&[b"ab", b"c"]));
        assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
        assert_ne!(hash(&[b"ab"]), hash(&[b"ac"]));
    }
}
