//! `mtl orchestrator`: where the nodes of a multi-machine training run meet.

use super::error::CliError;

/// Run the orchestrator of `mtl train --nodes N --orchestrator HOST:PORT` until interrupted.
#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on (every interface).
    #[arg(long)]
    port: u16,
}

pub fn run(args: Args) -> Result<(), CliError> {
    eprintln!("orchestrator listening on port {}", args.port);
    mtl_train::run_orchestrator(args.port)?;
    Ok(())
}
