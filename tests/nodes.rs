//! `mtl train --nodes 2` with `mtl orchestrator`, every process on 127.0.0.1: the same model
//! as one process with `--devices 2`; a node killed or frozen mid-run stops the other within
//! the timeout, naming its rank, and `--resume` then ends where an uninterrupted run ends;
//! nodes with other flags are refused at start; a missing orchestrator is an error in time.
//! Every process is bounded in time and killed at the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{head, model_dir, read_json};

/// Seconds a node waits for the other at a collective call in these tests.
const TIMEOUT: u64 = 5;
/// The most any one process may run here.
const LIMIT: Duration = Duration::from_secs(240);

/// A child process killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn start(args: &[String], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mtl"))
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("the mtl binary runs");
        Self { child, log }
    }

    /// Waits for the exit, at most `limit`; the exit code (None: killed by a signal).
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "{} still runs after {limit:?}:\n{}",
                self.log.display(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

/// One test at a time: the nodes' timeouts assume the cores are theirs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A run's files in `work`: `rows` training rows, 32 dev rows, batch 16, `--shards 2`.
struct Setup {
    work: PathBuf,
    args: Vec<String>,
}

impl Setup {
    fn new(work: &Path, rows: usize, extra: &[&str]) -> Self {
        let (train, dev) = (work.join("train.tsv"), work.join("dev.tsv"));
        head("train.tsv", rows, &train);
        head("dev.tsv", 32, &dev);
        let mut args: Vec<String> = [
            "train",
            "--model",
            model_dir().to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--dev",
            dev.to_str().unwrap(),
            "--batch-size",
            "16",
            "--shards",
            "2",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            work: work.to_path_buf(),
            args,
        }
    }

    /// One process, `--devices 2`, into `out`.
    fn devices(&self, out: &str) -> PathBuf {
        let dir = self.work.join(out);
        let mut args = self.args.clone();
        args.extend(["--devices", "2", "--out", dir.to_str().unwrap()].map(String::from));
        let mut run = Process::start(&args, self.work.join(format!("{out}.log")));
        assert_eq!(run.wait(LIMIT), Some(0), "{}", run.output());
        dir
    }

    /// Node `rank` of 2, into `out`, with `extra` flags.
    fn node(&self, rank: usize, port: u16, out: &Path, extra: &[&str]) -> Process {
        let mut args = self.args.clone();
        let timeout = TIMEOUT.to_string();
        let orchestrator = format!("127.0.0.1:{port}");
        let rank_text = rank.to_string();
        args.extend(
            [
                "--nodes",
                "2",
                "--node-rank",
                &rank_text,
                "--orchestrator",
                &orchestrator,
                "--data-port",
                &free_port().to_string(),
                "--collective-timeout",
                &timeout,
                "--out",
                out.to_str().unwrap(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.work.join(format!(
            "node{rank}-{}.log",
            out.file_name().unwrap().to_str().unwrap()
        ));
        Process::start(&args, log)
    }
}

fn orchestrator(work: &Path) -> (Process, u16) {
    let port = free_port();
    let args = ["orchestrator", "--port", &port.to_string()].map(String::from);
    (Process::start(&args, work.join("orchestrator.log")), port)
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model/model.safetensors")).unwrap()
}

/// The training losses and dev metrics of every evaluation.
fn metrics(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap()
}

#[test]
fn two_nodes_train_the_model_of_two_devices() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let setup = Setup::new(work.path(), 64, &["--epochs", "1"]);
    let reference = setup.devices("devices");

    let (_orchestrator, port) = orchestrator(work.path());
    let (out0, out1) = (work.path().join("rank0"), work.path().join("rank1"));
    let mut nodes = [
        setup.node(0, port, &out0, &[]),
        setup.node(1, port, &out1, &[]),
    ];
    for node in &mut nodes {
        assert_eq!(node.wait(LIMIT), Some(0), "{}", node.output());
    }
    assert!(weights(&reference) == weights(&out0), "the models differ");
    assert_eq!(metrics(&reference), metrics(&out0));
    assert_eq!(
        read_json(&reference.join("results.json")),
        read_json(&out0.join("results.json"))
    );
    assert!(!out1.exists(), "rank 1 wrote into its --out");
    assert!(nodes[1]
        .output()
        .contains("rank 1: done; node 0 wrote the results"));
}

/// Node 1 is stopped by `signal` once rank 0 has written a checkpoint; rank 0 must stop within
/// the timeout plus 10 s, with an error naming rank 1. Then both nodes `--resume` from the
/// shared folder on the same orchestrator (which forgot the failed run).
fn lose_node_then_resume(signal: i32) {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let flags = ["--epochs", "2", "--checkpoint-every", "2"];
    let setup = Setup::new(work.path(), 96, &flags);
    let reference = setup.devices("devices");

    let (_orchestrator, port) = orchestrator(work.path());
    let shared_out = work.path().join("run");
    let mut node0 = setup.node(0, port, &shared_out, &[]);
    let node1 = setup.node(1, port, &shared_out, &[]);
    let state = shared_out.join("checkpoint/state.json");
    let start = Instant::now();
    while !state.is_file() {
        assert!(
            start.elapsed() < LIMIT,
            "no checkpoint:\n{}",
            node0.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node1.signal(signal);
    let lost = Instant::now();
    let code = node0.wait(Duration::from_secs(TIMEOUT + 10));
    let waited = lost.elapsed();
    let err = node0.output();
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("error: rank 0"), "{err}");
    assert!(err.contains("rank 1 (node 1)"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("signal {signal}: rank 0 stopped {waited:?} after node 1 was lost");
    drop(node1);

    let mut nodes = [
        setup.node(0, port, &shared_out, &["--resume"]),
        setup.node(1, port, &shared_out, &["--resume"]),
    ];
    for node in &mut nodes {
        assert_eq!(node.wait(LIMIT), Some(0), "{}", node.output());
    }
    assert!(
        weights(&reference) == weights(&shared_out),
        "the resumed model differs"
    );
    assert_eq!(
        read_json(&reference.join("results.json")),
        read_json(&shared_out.join("results.json"))
    );
}

#[test]
fn a_killed_node_stops_the_other_and_the_run_resumes() {
    lose_node_then_resume(libc::SIGKILL);
}

#[test]
fn a_frozen_node_stops_the_other_and_the_run_resumes() {
    lose_node_then_resume(libc::SIGSTOP);
}

#[test]
fn nodes_with_other_flags_are_refused_at_start() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let setup = Setup::new(work.path(), 32, &["--epochs", "1"]);
    let (_orchestrator, port) = orchestrator(work.path());
    let mut nodes = [
        setup.node(0, port, &work.path().join("a"), &[]),
        setup.node(1, port, &work.path().join("b"), &["--lr", "2e-4"]),
    ];
    for (rank, node) in nodes.iter_mut().enumerate() {
        assert_eq!(node.wait(LIMIT), Some(1), "{}", node.output());
        let err = node.output();
        assert!(
            err.contains(&format!(
                "error: rank {rank}: the configuration and data differ"
            )),
            "{err}"
        );
        assert!(err.contains(&format!("rank {} has ", 1 - rank)), "{err}");
    }
    assert!(!work.path().join("a/model").exists());
}

#[test]
fn a_missing_orchestrator_is_an_error_within_the_timeout() {
    let _serial = serial();
    let work = tempfile::tempdir().unwrap();
    let setup = Setup::new(work.path(), 16, &["--epochs", "1"]);
    let port = free_port();
    let started = Instant::now();
    let mut node = setup.node(0, port, &work.path().join("a"), &[]);
    assert_eq!(node.wait(LIMIT), Some(1), "{}", node.output());
    let err = node.output();
    assert!(
        err.contains(&format!(
            "no orchestrator at 127.0.0.1:{port} within {TIMEOUT} s"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(TIMEOUT + 30));
}
