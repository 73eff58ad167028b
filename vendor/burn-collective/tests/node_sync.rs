//! Several nodes (processes) all-reducing round after round through one orchestrator, on
//! loopback: the node sync of 0.21.0 waited forever on the second round (PATCHES.md).
//!
//! The test runs itself as the node processes: with `NODE_SYNC_RANK` set it is one node, else
//! it starts the orchestrator on a thread and three node processes per strategy, one group
//! after the other on the same orchestrator (which must forget each finished group).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn_collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective,
    register,
};
use burn_tensor::{Tensor, TensorData, TensorPrimitive};

type B = burn_ndarray::NdArray<f32>;

const NODES: usize = 3;
const ROUNDS: usize = 50;
/// How long one group of nodes may take before the test kills it and fails.
const GROUP_LIMIT: Duration = Duration::from_secs(90);

/// Node `rank`'s values in `round`: small integers, so that every sum is exact.
fn values(rank: usize, round: usize) -> Vec<f32> {
    // Round 0 is large (2 Mi values), the others short and of changing lengths.
    let len = if round == 0 { 1 << 21 } else { 7 + round };
    (0..len)
        .map(|i| ((rank + 1) * (round + 1) + i % 1000) as f32)
        .collect()
}

fn strategy(name: &str) -> AllReduceStrategy {
    match name {
        "ring" => AllReduceStrategy::Ring,
        "tree" => AllReduceStrategy::Tree(2),
        "centralized" => AllReduceStrategy::Centralized,
        other => panic!("unknown strategy {other}"),
    }
}

/// One node: registers, all-reduces `ROUNDS` times and checks every sum exactly.
fn run_node(rank: usize, orchestrator: u16, data_port: u16, strategy_name: &str) {
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(NODES as u32)
        .with_global_address(format!("ws://127.0.0.1:{orchestrator}").parse().unwrap())
        .with_node_address(format!("ws://127.0.0.1:{data_port}").parse().unwrap())
        .with_data_service_port(data_port)
        .with_global_all_reduce_strategy(strategy(strategy_name));
    let id = PeerId::from(rank);
    let device = Default::default();
    register::<B>(id, device, config).expect("register");
    for round in 0..ROUNDS {
        let mine = values(rank, round);
        let n = mine.len();
        let tensor = Tensor::<B, 1>::from_data(TensorData::new(mine, [n]), &device);
        let sum = all_reduce::<B>(id, tensor.into_primitive().tensor(), ReduceOperation::Sum)
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let got = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(sum))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let all: Vec<Vec<f32>> = (0..NODES).map(|r| values(r, round)).collect();
        let want: Vec<f32> = (0..n).map(|i| all.iter().map(|v| v[i]).sum()).collect();
        assert!(got == want, "round {round}: wrong sums on node {rank}");
    }
    finish_collective::<B>(id).expect("finish");
    println!("node {rank}: {ROUNDS} rounds, exact sums");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for every node, killing all of them past `GROUP_LIMIT`.
fn wait_all(mut nodes: Vec<Child>, logs: &[(PathBuf, PathBuf)], strategy_name: &str) {
    let start = Instant::now();
    let mut codes = vec![None; nodes.len()];
    while codes.iter().any(Option::is_none) {
        for (node, code) in nodes.iter_mut().zip(codes.iter_mut()) {
            if code.is_none() {
                *code = node.try_wait().unwrap().map(|s| s.code());
            }
        }
        if start.elapsed() > GROUP_LIMIT {
            nodes.iter_mut().for_each(|n| {
                let _ = n.kill();
            });
            panic!("{strategy_name}: the nodes did not finish within {GROUP_LIMIT:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (rank, (code, (out, err))) in codes.into_iter().zip(logs).enumerate() {
        let out = std::fs::read_to_string(out).unwrap();
        let err = std::fs::read_to_string(err).unwrap();
        assert_eq!(
            code,
            Some(Some(0)),
            "{strategy_name}: node {rank} failed\n{out}\n{err}"
        );
        assert!(
            out.contains("exact sums"),
            "{strategy_name}: node {rank}: {out}"
        );
    }
}

#[test]
fn three_nodes_fifty_rounds_exact_sums() {
    if let Ok(rank) = std::env::var("NODE_SYNC_RANK") {
        let port = |name: &str| std::env::var(name).unwrap().parse().unwrap();
        let strategy_name = std::env::var("NODE_SYNC_STRATEGY").unwrap();
        run_node(
            rank.parse().unwrap(),
            port("NODE_SYNC_ORCHESTRATOR"),
            port("NODE_SYNC_DATA_PORT"),
            &strategy_name,
        );
        return;
    }
    let orchestrator = free_port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(burn_collective::start_global_orchestrator_at(
            "127.0.0.1",
            orchestrator,
        ));
    });
    let dir = std::env::temp_dir().join(format!("node-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for strategy_name in ["ring", "tree", "centralized"] {
        let logs: Vec<(PathBuf, PathBuf)> = (0..NODES)
            .map(|rank| {
                let log = |ext: &str| dir.join(format!("{strategy_name}-{rank}.{ext}"));
                (log("out"), log("err"))
            })
            .collect();
        let nodes = (0..NODES)
            .map(|rank| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "three_nodes_fifty_rounds_exact_sums",
                        "--nocapture",
                    ])
                    .env("NODE_SYNC_RANK", rank.to_string())
                    .env("NODE_SYNC_ORCHESTRATOR", orchestrator.to_string())
                    .env("NODE_SYNC_DATA_PORT", free_port().to_string())
                    .env("NODE_SYNC_STRATEGY", strategy_name)
                    .stdout(Stdio::from(File::create(&logs[rank].0).unwrap()))
                    .stderr(Stdio::from(File::create(&logs[rank].1).unwrap()))
                    .spawn()
                    .unwrap()
            })
            .collect();
        wait_all(nodes, &logs, strategy_name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
