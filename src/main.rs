//! The `fedsim` command line. Each subcommand is implemented in `fedsim::cli`.

use clap::{Parser, Subcommand};
use fedsim::cli::CliError;

/// mimalloc instead of glibc's allocator: a large world holds gigabytes of small objects
/// (events, DAG nodes, link-table entries) that each receipt touches cold. mimalloc packs them
/// in size-class pages inside large arenas that Linux backs with transparent huge pages, so
/// those touches miss the TLB far less: full-size bench-medium runs ~16% faster (docs/notes/
/// perf.md, session 15). Results do not depend on the allocator (nothing is ordered by address).
/// Wrapped so that fresh pages are faulted in on the spare core (`fedsim::prefault`).
#[global_allocator]
static ALLOCATOR: fedsim::prefault::PrefaultingAlloc = fedsim::prefault::PrefaultingAlloc;

#[derive(Parser)]
#[command(
    name = "fedsim",
    version = fedsim::BUILD,
    about = "A deterministic discrete-event simulator of Matrix federation (MSC4430 member keys)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the room versions fedsim implements and how they differ.
    Versions,
    /// Join the directories of a sharded sweep (`fedsim sweep --shard I/N`) into one.
    Merge(fedsim::cli::sweep::MergeArgs),
    /// Redraw a sweep's charts (SVG and PNG per metric) from its runs.csv.
    Plot(fedsim::cli::plot::PlotArgs),
    /// Run a scenario over parameter values x seeds in parallel; resumable, shardable.
    Sweep(fedsim::cli::sweep::SweepArgs),
    /// Sign or inspect events and JSON objects (canonical JSON, hashes, event IDs, redaction).
    #[command(subcommand)]
    Pdu(fedsim::cli::pdu::PduCommand),
    /// Resolve room state over real events (a JSON array or JSON lines of PDUs).
    Resolve(fedsim::cli::resolve::Args),
    /// Run a scenario (default: the built-in RQ1 polling-load scenario) and write its results.
    Run(fedsim::cli::run::Args),
    /// Validate a scenario file without running it.
    Check(fedsim::cli::check::Args),
    /// List the policy presets (P0-P9) with the knob values of the key and room layers.
    Policies(fedsim::cli::policies::Args),
    /// Run the standard benchmark scenarios (small, medium, federation) and print wall time,
    /// events per second, peak memory and the crypto floor ratio.
    Bench(fedsim::cli::bench::Args),
    /// Run a scripted reproduction (scenarios/repro/*.toml): checks, summary, timelines, DAG.
    Repro(fedsim::cli::repro::Args),
}

fn main() {
    // Die quietly when a reader of stdout goes away (`fedsim resolve ... | head`), as Unix tools
    // do, instead of panicking on the failed write (Rust ignores SIGPIPE by default).
    // SAFETY: called first, before any other thread exists; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Sweep(_)) {
        fedsim::prefault::start();
    }
    let result: Result<(), CliError> = match cli.command {
        Command::Versions => {
            print_versions();
            Ok(())
        }
        Command::Merge(args) => fedsim::cli::sweep::run_merge(&args),
        Command::Plot(args) => fedsim::cli::plot::run(&args),
        Command::Sweep(args) => fedsim::cli::sweep::run(&args),
        Command::Pdu(command) => fedsim::cli::pdu::run(&command),
        Command::Resolve(args) => fedsim::cli::resolve::run(&args),
        Command::Run(args) => fedsim::cli::run::run(&args),
        Command::Check(args) => fedsim::cli::check::run(&args),
        Command::Policies(args) => fedsim::cli::policies::run(&args),
        Command::Bench(args) => fedsim::cli::bench::run(&args),
        Command::Repro(args) => fedsim::cli::repro::run(&args),
    };
    if let Err(error) = result {
        eprintln!("fedsim: {error}");
        std::process::exit(error.exit_code);
    }
}

fn print_versions() {
    use fedsim::matrix::RoomVersion;
    println!("room version        state res  member keys  federate in auth rules");
    for version in RoomVersion::ALL {
        println!(
            "{:<19} {:<10} {:<12} {}",
            version.id,
            format!("{:?}", version.state_res),
            version.member_keys,
            version.federate_in_auth_rules
        );
    }
}
