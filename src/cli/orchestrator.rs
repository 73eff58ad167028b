//! `mtl orchestrator`: where the nodes of a multi-machine training run meet.

use super::error::CliError;

/// Run the orchestrator of `mtl train --nodes N --orchestrator HOST:PORT` until interrupted.
/// Its transport has no authentication: run it on a private network only.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on: 127.0.0.1 for nodes on this machine, this machine's address on
    /// the private network the nodes share, or 0.0.0.0 for every interface.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
}

pub fn run(args: Args) -> Result<(), CliError> {
    eprintln!("orchestrator listening on {}:{}", args.host, args.port);
    mtl_train::run_orchestrator(&args.host, args.port)?;
    Ok(())
}
