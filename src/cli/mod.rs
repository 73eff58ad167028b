//! The `mtl` command: embed, train, eval, predict, serve, bench, orchestrator.
//!
//! Each subcommand is a module with its arguments (`Args`) and `run`; every failure is a
//! [`CliError`], printed by [`main`] with its causes.

mod args;
mod baselines;
mod bench;
mod embed;
mod error;
mod eval;
pub mod load_test;
mod model_ref;
mod nodes_bench;
mod orchestrator;
mod predict;
mod seeds;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{read_sentences, write_jsonl, SentenceArgs};
pub use error::{report, CliError};
pub use model_ref::{cache_dir, resolve as resolve_model};

/// Multi-task sentence models: embed, train, evaluate, predict and serve.
#[derive(Parser)]
#[command(name = "mtl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings, from arguments or a file.
    Embed(embed::Args),
    /// Fine-tune a shared encoder and one head per task.
    Train(Box<train::Args>),
    /// Score a trained model on a labelled file.
    Eval(eval::Args),
    /// Every task's label for each sentence.
    Predict(predict::Args),
    /// An HTTP server: TEI /embed, OpenAI /v1/embeddings, /predict.
    Serve(serve::Args),
    /// Throughput of encoding, training and serving.
    Bench(bench::Args),
    /// The meeting point of a training run's nodes (`train --nodes`).
    Orchestrator(orchestrator::Args),
}

/// Parses the arguments, runs the command and prints any error; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(&cli.command, Command::Bench(args) if args.default_malloc) {
        mtl_encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    }
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Orchestrator(args) => orchestrator::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for line in report(&error) {
                eprintln!("{line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
