//! `fedsim resolve`: state resolution over real room events.
//!
//! Reads PDUs (a JSON array, or one JSON object per line as a homeserver admin export has them),
//! each with its `event_id`, builds the room's DAG (rejecting events that fail PDU checks 4 or 5,
//! as a server holding every event would), and prints a resolved state as a JSON array of
//! `{"type", "state_key", "event_id"}` sorted by (type, state_key).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::CliError;
use crate::matrix::dag::{Dag, EventIndex, RejectionCheck};
use crate::matrix::hashes::{self, ContentHashCheck};
use crate::matrix::server_keys::{ServerKeys, ValidityClamp, key_valid_for_event};
use crate::matrix::state_res::{self, Explanation};
use crate::matrix::{EventId, Pdu, RoomVersion, StateMap, member_keys, redaction, signing};

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
    /// Check each event first (PDU checks 1-3): its event ID must be its reference hash, its
    /// signatures must verify (the sender's server, and for restricted joins the authorising
    /// user's server, with keys from --keys; MSC4430: the member key in `sender`), and an event
    /// whose content hash does not match is replaced by its redacted form.
    #[arg(long)]
    pub verify: bool,
    /// With --verify: a JSON array of `/_matrix/key/v2/server` responses (each self-signature is
    /// checked) giving the servers' keys. Keys are believed as published (no 7-day clamp).
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub keys: Option<String>,
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
    let mut events = parse_events(text, name)?;
    let version = room_version(&events, name, args.room_version.as_deref())?;
    if args.verify {
        let keys = match &args.keys {
            Some(path) => load_server_keys(path)?,
            None => BTreeMap::new(),
        };
        for (event_id, json) in &mut events {
            verify_event(&version, event_id, json, &keys).map_err(|problem| {
                CliError::input(format!("{name}: event {event_id}: {problem}"))
            })?;
        }
    }
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

/// Reads a JSON array of `/_matrix/key/v2/server` responses, checking each one's
/// self-signatures, into keys by server name.
fn load_server_keys(path: &str) -> Result<BTreeMap<String, ServerKeys>, CliError> {
    let text = super::read_input(path)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|error| CliError::input(format!("{path}: invalid JSON: {error}")))?;
    let Value::Array(responses) = value else {
        return Err(CliError::input(format!(
            "{path}: expected a JSON array of /_matrix/key/v2/server responses"
        )));
    };
    let mut keys = BTreeMap::new();
    for (position, response) in responses.iter().enumerate() {
        let server_name = response
            .get("server_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let parsed = ServerKeys::parse_and_verify(response, server_name).map_err(|error| {
            CliError::input(format!("{path}: element {}: {error}", position + 1))
        })?;
        keys.insert(parsed.server_name.clone(), parsed);
    }
    Ok(keys)
}

/// PDU checks 1-3 for one event of the input (`json` without its `event_id`): the event ID
/// must be the reference hash; the signatures must verify; a content-hash mismatch replaces the
/// event by its redacted form (as a receiving server keeps the redacted copy).
fn verify_event(
    version: &RoomVersion,
    event_id: &str,
    json: &mut Value,
    keys: &BTreeMap<String, ServerKeys>,
) -> Result<(), String> {
    // The event ID (room versions 4+) is `$` + the URL-safe base64 of the reference hash.
    let computed = hashes::event_id(version, json).map_err(|error| error.to_string())?;
    if computed != event_id {
        return Err(format!(
            "the event ID does not match the event (its reference hash gives {computed})"
        ));
    }
    // 2. Signatures.
    if version.member_keys {
        member_keys::verify_member_signature(version, json)
            .map_err(|error| format!("member-key signature check failed: {error}"))?;
    } else {
        let origin_server_ts_ms = json
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let mut servers: BTreeSet<&str> = BTreeSet::new();
        if let Some(server) = json
            .get("sender")
            .and_then(Value::as_str)
            .and_then(|sender| sender.split_once(':'))
            .map(|(_, server)| server)
        {
            servers.insert(server);
        }
        let authoriser = json
            .pointer("/content/join_authorised_via_users_server")
            .and_then(Value::as_str)
            .filter(|_| json.pointer("/content/membership").and_then(Value::as_str) == Some("join"))
            .and_then(|user| user.split_once(':'))
            .map(|(_, server)| server);
        servers.extend(authoriser);
        for server in servers {
            let server_keys = keys
                .get(server)
                .ok_or_else(|| format!("no keys for server {server} (give them with --keys)"))?;
            signing::verify_event_entity(version, json, server, |key_id| {
                key_valid_for_event(
                    server_keys,
                    key_id,
                    origin_server_ts_ms,
                    ValidityClamp::unclamped(origin_server_ts_ms),
                )
                .ok()
                .copied()
            })
            .map_err(|error| format!("signature check for {server} failed: {error}"))?;
        }
    }
    // 3. The content hash.
    match hashes::check_content_hash(json).map_err(|error| error.to_string())? {
        ContentHashCheck::Valid => {}
        ContentHashCheck::Mismatch | ContentHashCheck::Missing => {
            *json = redaction::redact(version, json);
        }
    }
    Ok(())
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
