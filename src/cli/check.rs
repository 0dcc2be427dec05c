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
    if is_reproduction_script(&args.scenario) {
        return check_reproduction_script(args);
    }
    let scenario =
        crate::scenario::load(Some(&args.scenario), &args.sets).map_err(CliError::input)?;
    check_declared_sweep(args)?;
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

/// The scenario's own `[sweep]` table (what `fedsim sweep FILE` runs without flags): its form,
/// and each declared value applied alone on top of the `--set`s, so a bad path or value is
/// found here rather than when the sweep starts.
fn check_declared_sweep(args: &Args) -> Result<(), CliError> {
    let file = args.scenario.display().to_string();
    let text = std::fs::read_to_string(&args.scenario)
        .map_err(|error| CliError::input(format!("{file}: cannot read: {error}")))?;
    let declared = crate::sweep::defaults::scenario_sweep(&file, &text).map_err(CliError::input)?;
    for (index, param) in declared.params.iter().enumerate() {
        for value in &param.values {
            let mut sets = args.sets.clone();
            sets.push(format!("{}={value}", param.path));
            crate::scenario::parse(&file, &text, &sets).map_err(|error| {
                CliError::input(format!(
                    "{file}: sweep.params[{index}] ({}={value}): {}: {}",
                    param.path, error.path, error.problem
                ))
            })?;
        }
    }
    Ok(())
}

/// Whether `file` is a reproduction script (`scenarios/repro/*.toml`, run by `fedsim repro`):
/// a TOML table with `steps` or `checks` at the top, which no scenario has. A file that cannot
/// be read or parsed is not one: the scenario loader reports it.
pub(crate) fn is_reproduction_script(file: &std::path::Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .is_some_and(|table| table.contains_key("steps") || table.contains_key("checks"))
}

/// `fedsim check` on a reproduction script: the script language's own validation (it used to
/// fail with "unknown field `checks`" from the scenario loader).
fn check_reproduction_script(args: &Args) -> Result<(), CliError> {
    let file = args.scenario.display().to_string();
    if !args.sets.is_empty() {
        return Err(CliError::input(format!(
            "{file}: --set: a reproduction script has no fields to override; edit the file"
        )));
    }
    let script = crate::room::script::load(&file).map_err(CliError::input)?;
    println!(
        "{file}: ok: reproduction script {:?} (run it with `fedsim repro {file}`), {} servers, \
         {} users, {} steps, {} checks",
        script.name,
        script.servers.len(),
        script.users.len(),
        script.steps.len(),
        script.checks.len()
    );
    Ok(())
}
