//! `fedsim check FILE [--set k=v ...]`: validates a scenario without running it.

use std::path::PathBuf;

use super::CliError;

/// Arguments of `fedsim check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Override a scenario field before validating (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}

/// Runs the command: prints a one-line summary, or the one-line error (exit code 2).
pub fn run(args: &Args) -> Result<(), CliError> {
    let scenario =
        crate::scenario::load(Some(&args.scenario), &args.sets).map_err(CliError::input)?;
    if let Some(rooms) = &scenario.rooms {
        println!(
            "{}: ok: scenario {:?}, {} simulated, room world: {} servers, {} rooms, policy {}, {} action(s)",
            args.scenario.display(),
            scenario.name,
            crate::engine::format_duration_ms(scenario.duration.ms()),
            rooms.servers,
            rooms.rooms,
            rooms.policy,
            rooms.actions.len()
        );
        return Ok(());
    }
    let observers: usize = scenario
        .observers
        .iter()
        .map(|group| {
            group.known_domains.len().max(
                group
                    .known_domains_distribution
                    .as_ref()
                    .map(|d| d.servers as usize)
                    .unwrap_or(0),
            )
        })
        .sum();
    let domains: u64 = scenario
        .federation
        .domain_groups
        .iter()
        .map(|group| u64::from(group.count))
        .sum();
    println!(
        "{}: ok: scenario {:?}, {} simulated, {} domains, {} observers, {} phase(s)",
        args.scenario.display(),
        scenario.name,
        crate::engine::format_duration_ms(scenario.duration.ms()),
        domains,
        observers,
        scenario.phases.len()
    );
    Ok(())
}
