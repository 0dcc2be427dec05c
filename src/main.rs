//! The `fedsim` command line. Each subcommand is implemented in `fedsim::cli`.

use clap::{Parser, Subcommand};
use fedsim::cli::CliError;

#[derive(Parser)]
#[command(
    name = "fedsim",
    version,
    about = "A deterministic discrete-event simulator of Matrix federation (MSC4430 member keys)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {};
    if let Err(error) = result {
        eprintln!("fedsim: {error}");
        std::process::exit(error.exit_code);
    }
}
