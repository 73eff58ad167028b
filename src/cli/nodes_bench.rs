//! `mtl bench --nodes-loopback`: two training nodes on 127.0.0.1 (an orchestrator on a thread
//! of this process, the nodes as child processes of this command): one all-reduce of the
//! model's size, then training steps on 2 nodes beside 1 node, each as sentences/s.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mtl_train::{NodeSetup, PeerGroup};

use super::error::CliError;

/// What `bench --nodes-loopback` needs to know.
pub struct Plan<'a> {
    pub model: &'a Path,
    pub train: &'a Path,
    /// Floats per all-reduce (the model's parameters).
    pub values: usize,
    pub rounds: usize,
    pub steps: usize,
    pub batch_size: usize,
}

fn free_port() -> Result<u16, CliError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::usage("--nodes-loopback", format!("no free port: {e}")))?;
    Ok(listener.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// The all-reduce node `rank` of two (a child of `run`): prints its seconds per call.
pub fn all_reduce_node(
    rank: usize,
    port: u16,
    values: usize,
    rounds: usize,
) -> Result<(), CliError> {
    let node = NodeSetup {
        nodes: 2,
        rank,
        orchestrator: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".into(),
        data_port: free_port()?,
    };
    let group = PeerGroup::new(1)
        .with_timeout(Duration::from_secs(60))
        .with_nodes(node)?;
    let seconds = mtl_train::time_all_reduce::<crate::backend::Backend>(
        &group,
        0,
        values,
        rounds,
        &crate::backend::device(),
    )?;
    let list: Vec<String> = seconds.iter().map(|s| format!("{s:.4}")).collect();
    println!("all-reduce seconds: {}", list.join(","));
    Ok(())
}

fn me() -> Result<Command, CliError> {
    let exe = std::env::current_exe().map_err(|e| {
        CliError::usage("--nodes-loopback", format!("cannot find this command: {e}"))
    })?;
    let mut command = Command::new(exe);
    command.stdin(Stdio::null());
    Ok(command)
}

/// Runs `commands` at once and waits for all of them; fails naming the first that failed.
fn together(commands: Vec<Command>) -> Result<Vec<Output>, CliError> {
    let children = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    CliError::usage("--nodes-loopback", format!("cannot start a node: {e}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output())
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::usage("--nodes-loopback", format!("a node: {e}")))?;
    for (rank, out) in outputs.iter().enumerate() {
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            return Err(CliError::usage(
                "--nodes-loopback",
                format!("node {rank} failed: {last}"),
            ));
        }
    }
    Ok(outputs)
}

/// `train` for `plan.steps` steps: on one node, or as node `rank` of two meeting at `port`.
fn train(plan: &Plan, out: &Path, node: Option<(usize, u16)>) -> Result<Command, CliError> {
    let mut c = me()?;
    c.arg("train")
        .arg("--model")
        .arg(plan.model)
        .arg("--train")
        .arg(plan.train);
    c.arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(["--epochs", "100", "--shards", "2"]);
    c.args(["--batch-size", &plan.batch_size.to_string()]);
    c.args(["--stop-after-steps", &plan.steps.to_string()]);
    if let Some((rank, port)) = node {
        c.args(["--nodes", "2", "--node-rank", &rank.to_string()]);
        c.args(["--orchestrator", &format!("127.0.0.1:{port}")]);
        c.args(["--data-port", &free_port()?.to_string()]);
    }
    Ok(c)
}

/// `(seconds in training steps, seconds in all-reduces)` from train's summary line.
fn step_times(out: &Output) -> Option<(f64, f64)> {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains(" s in training steps"))?;
    let number_before = |marker: &str| -> Option<f64> {
        let head = &line[..line.find(marker)?];
        head.rsplit([' ', '(']).next()?.parse().ok()
    };
    let reduce = number_before(" s of them in all-reduces").unwrap_or(0.0);
    Some((number_before(" s in training steps")?, reduce))
}

pub fn run(plan: &Plan) -> Result<(), CliError> {
    let port = free_port()?;
    std::thread::spawn(move || {
        if let Err(e) = mtl_train::run_orchestrator("127.0.0.1", port) {
            eprintln!("orchestrator: {e}");
        }
    });
    let nodes = (0..2)
        .map(|rank| {
            let mut c = me()?;
            c.args(["bench", "--all-reduce-node", &rank.to_string()]);
            c.args(["--all-reduce-port", &port.to_string()]);
            c.args(["--all-reduce-values", &plan.values.to_string()]);
            c.args(["--all-reduce-rounds", &plan.rounds.to_string()]);
            Ok(c)
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    let outputs = together(nodes)?;
    let text = String::from_utf8_lossy(&outputs[0].stdout).into_owned();
    let mut seconds: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("all-reduce seconds: "))
        .map(|l| l.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_default();
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "2 nodes on loopback: one all-reduce of {:.1} M floats ({:.0} MB): median {median:.3} s, min {:.3} s over {} rounds",
        plan.values as f64 / 1e6,
        plan.values as f64 * 4.0 / 1e6,
        seconds.first().copied().unwrap_or(f64::NAN),
        seconds.len()
    );

    let dir = std::env::temp_dir().join(format!("mtl-bench-nodes-{}", std::process::id()));
    let one = together(vec![train(plan, &dir.join("one"), None)?]);
    let two = one.and_then(|one| {
        let two = together(vec![
            train(plan, &dir.join("rank0"), Some((0, port)))?,
            train(plan, &dir.join("rank1"), Some((1, port)))?,
        ])?;
        Ok((one, two))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (one, two) = two?;
    let rate = |s: f64| (plan.steps * plan.batch_size) as f64 / s;
    let (one_s, _) = step_times(&one[0]).unwrap_or((f64::NAN, 0.0));
    let (two_s, reduce_s) = step_times(&two[0]).unwrap_or((f64::NAN, f64::NAN));
    let steps = plan.steps as f64;
    println!(
        "training steps (batch {}, --shards 2, {} steps): 1 node {:.3} s/step ({:.1} sentences/s); 2 nodes {:.3} s/step ({:.1} sentences/s), of it all-reduce {:.3} s/step ({:.1} sentences/s if it were all)",
        plan.batch_size,
        plan.steps,
        one_s / steps,
        rate(one_s),
        two_s / steps,
        rate(two_s),
        reduce_s / steps,
        rate(reduce_s),
    );
    Ok(())
}
