//! `fedsim resolve`: state resolution over real room events.
//!
//! Reads PDUs (a JSON array, or one JSON object per line as a homeserver admin export has them),
//! each with its `event_id`, builds the room's DAG (rejecting events that fail PDU checks 4 or 5,
//! as a server holding every event would), and prints a resolved state as a JSON array of
//! `{"type", "state_key", "event_id"}` sorted by (type, state_key).

use std::collections::BTreeSet;

use serde_json::Value;

use super::CliError;
use crate::matrix::dag::{Dag, EventIndex, RejectionCheck};
use crate::matrix::state_res::{self, Explanation};
use crate::matrix::{EventId, Pdu, RoomVersion, StateMap};

/// Arguments of `fedsim resolve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The events: a file holding a JSON array of PDUs or one PDU per line, or `-` for stdin.
    pub input: String,
    /// Use this room version instead of the create event's `content.room_version`
    /// ("10", "11", "12", "org.matrix.12.4430" or "msc4430").
    #[arg(long)]
    pub room_version: Option<String>,
    /// Print the state after this event; repeated, the resolution of the states after each.
    /// Without --at or --state-set: the resolution of the states after all forward extremities.
    #[arg(long = "at", value_name = "EVENT_ID", conflicts_with = "state_sets")]
    pub at: Vec<String>,
    /// Resolve this explicit state map, given as comma-separated event IDs (the (type, state_key)
    /// comes from each event); repeat for each state set.
    #[arg(long = "state-set", value_name = "ID,ID,...")]
    pub state_sets: Vec<String>,
    /// Also print, on stderr, the conflicted set, the sorted orders, and every event that failed
    /// an auth check with the rule that rejected it.
    #[arg(long)]
    pub explain: bool,
}

/// Runs `fedsim resolve`.
pub fn run(args: &Args) -> Result<(), CliError> {
    let text = super::read_input(&args.input)?;
    let name = if args.input == "-" {
        "<stdin>"
    } else {
        args.input.as_str()
    };
    let (dag, resolved, explanation) = resolve_text(&text, name, args)?;
    println!("{}", state_json(&resolved));
    if args.explain {
        eprint!("{}", explain_text(&dag, explanation.as_ref()));
    }
    Ok(())
}

/// Parses `text`, builds the DAG and resolves what `args` asks for. `name` names the input in
/// error messages.
pub fn resolve_text(
    text: &str,
    name: &str,
    args: &Args,
) -> Result<(Dag, StateMap, Option<Explanation>), CliError> {
    let events = parse_events(text, name)?;
    let version = room_version(&events, name, args.room_version.as_deref())?;
    let mut pdus = Vec::with_capacity(events.len());
    for (event_id, json) in events {
        let pdu = Pdu::from_json(json, event_id.clone(), &version)
            .map_err(|error| CliError::input(format!("{name}: event {event_id}: {error}")))?;
        pdus.push(pdu);
    }
    let dag = Dag::from_events(version, pdus)
        .map_err(|error| CliError::input(format!("{name}: {error}")))?;
    let lookup = |event_id: &str| {
        dag.index(event_id)
            .ok_or_else(|| CliError::input(format!("{name}: event {event_id}: not in the input")))
    };
    let state_sets: Vec<StateMap> = if !args.state_sets.is_empty() {
        let mut sets = Vec::new();
        for list in &args.state_sets {
            let mut set = StateMap::new();
            for event_id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
                let event = dag.event(lookup(event_id)?);
                let key = event.state_key_pair().ok_or_else(|| {
                    CliError::input(format!(
                        "{name}: event {event_id}: not a state event, so not in a state set"
                    ))
                })?;
                if let Some(other) = set.insert(key.clone(), event.event_id.clone()) {
                    return Err(CliError::input(format!(
                        "{name}: event {event_id}: its state set already has {other} for ({}, {:?})",
                        key.0, key.1
                    )));
                }
            }
            sets.push(set);
        }
        sets
    } else {
        let points: Vec<EventIndex> = if args.at.is_empty() {
            dag.forward_extremities()
        } else {
            args.at
                .iter()
                .map(|event_id| lookup(event_id))
                .collect::<Result<_, _>>()?
        };
        points
            .iter()
            .map(|&index| dag.evaluation(index).state_after.to_map())
            .collect()
    };
    let (resolved, explanation) = if args.explain {
        let (resolved, explanation) =
            state_res::resolve_explained(dag.version(), &state_sets, &dag)
                .map_err(|error| CliError::input(format!("{name}: {error}")))?;
        (resolved, Some(explanation))
    } else {
        let resolved = state_res::resolve(dag.version(), &state_sets, &dag)
            .map_err(|error| CliError::input(format!("{name}: {error}")))?;
        (resolved, None)
    };
    Ok((dag, resolved, explanation))
}

/// Splits the input into `(event_id, event JSON without event_id)`: a JSON array, or one JSON
/// object per non-blank line.
pub fn parse_events(text: &str, name: &str) -> Result<Vec<(EventId, Value)>, CliError> {
    let values: Vec<(String, Value)> = if text.trim_start().starts_with('[') {
        let value: Value = serde_json::from_str(text)
            .map_err(|error| CliError::input(format!("{name}: invalid JSON: {error}")))?;
        let Value::Array(items) = value else {
            unreachable!("text starting with '[' parses as an array or fails");
        };
        items
            .into_iter()
            .enumerate()
            .map(|(position, item)| (format!("element {}", position + 1), item))
            .collect()
    } else {
        let mut values = Vec::new();
        for (line_number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|error| {
                CliError::input(format!(
                    "{name}: line {}: invalid JSON: {error}",
                    line_number + 1
                ))
            })?;
            values.push((format!("line {}", line_number + 1), value));
        }
        values
    };
    let mut events = Vec::with_capacity(values.len());
    for (place, mut value) in values {
        let Some(object) = value.as_object_mut() else {
            return Err(CliError::input(format!(
                "{name}: {place}: an event must be a JSON object"
            )));
        };
        let event_id = match object.remove("event_id") {
            Some(Value::String(event_id)) => event_id,
            Some(_) => {
                return Err(CliError::input(format!(
                    "{name}: {place}: field `event_id` must be a string"
                )));
            }
            None => {
                return Err(CliError::input(format!(
                    "{name}: {place}: field `event_id` is missing"
                )));
            }
        };
        events.push((event_id, value));
    }
    if events.is_empty() {
        return Err(CliError::input(format!("{name}: no events")));
    }
    Ok(events)
}

/// The room version: `override_id` if given, else the create event's `content.room_version`
/// (absent means "1").
fn room_version(
    events: &[(EventId, Value)],
    name: &str,
    override_id: Option<&str>,
) -> Result<RoomVersion, CliError> {
    if let Some(id) = override_id {
        return RoomVersion::parse(id)
            .map_err(|error| CliError::input(format!("--room-version: {error}")));
    }
    let create = events.iter().find(|(_, json)| {
        json.get("type").and_then(Value::as_str) == Some("m.room.create")
            && json.get("state_key").and_then(Value::as_str) == Some("")
    });
    let Some((create_id, create)) = create else {
        return Err(CliError::input(format!(
            "{name}: no m.room.create event with an empty state key"
        )));
    };
    let id = match create.pointer("/content/room_version") {
        None => "1",
        Some(Value::String(id)) => id.as_str(),
        Some(_) => {
            return Err(CliError::input(format!(
                "{name}: event {create_id}: content.room_version is not a string"
            )));
        }
    };
    RoomVersion::parse(id).map_err(|error| {
        let absent = if create.pointer("/content/room_version").is_none() {
            " (content.room_version is absent, which means \"1\")"
        } else {
            ""
        };
        CliError::input(format!("{name}: event {create_id}: {error}{absent}"))
    })
}

/// The resolved state as the output JSON array, sorted by (type, state_key).
pub fn state_json(state: &StateMap) -> String {
    let entries: Vec<Value> = state
        .iter()
        .map(|((event_type, state_key), event_id)| {
            serde_json::json!({"type": event_type, "state_key": state_key, "event_id": event_id})
        })
        .collect();
    serde_json::to_string_pretty(&Value::Array(entries)).expect("JSON values serialize")
}

/// The `--explain` report.
pub fn explain_text(dag: &Dag, explanation: Option<&Explanation>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rejected: Vec<EventIndex> = dag
        .topological_order()
        .filter(|&index| dag.evaluation(index).rejection.is_some())
        .collect();
    let _ = writeln!(out, "room version: {}", dag.version());
    let _ = writeln!(
        out,
        "events rejected on insertion (PDU checks 4 and 5): {}",
        rejected.len()
    );
    for index in rejected {
        if let Some((check, rejection)) = &dag.evaluation(index).rejection {
            let check = match check {
                RejectionCheck::AuthEvents => "check 4 (auth events)",
                RejectionCheck::StateBefore => "check 5 (state before)",
            };
            let _ = writeln!(out, "  {} {check}: {rejection}", dag.event(index).event_id);
        }
    }
    let Some(explanation) = explanation else {
        return out;
    };
    let _ = writeln!(
        out,
        "conflicted state set: {} keys",
        explanation.conflicted.len()
    );
    for ((event_type, state_key), candidates) in &explanation.conflicted {
        let _ = writeln!(
            out,
            "  ({event_type}, {state_key:?}): {}",
            candidates.join(" ")
        );
    }
    let line =
        |label: &str, ids: &[EventId]| format!("{label} ({}): {}\n", ids.len(), ids.join(" "));
    out += &line("auth difference", &explanation.auth_difference);
    out += &line("conflicted subgraph", &explanation.conflicted_subgraph);
    out += &line("full conflicted set", &explanation.full_conflicted_set);
    out += &line(
        "step 1, reverse topological power ordering",
        &explanation.power_order,
    );
    out += &line("step 3, mainline ordering", &explanation.mainline_order);
    let failed: BTreeSet<&str> = explanation
        .auth_failures
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    let _ = writeln!(out, "failed iterative auth checks: {}", failed.len());
    for (event_id, rejection) in &explanation.auth_failures {
        let _ = writeln!(out, "  {event_id}: {rejection}");
    }
    out
}
