//! `fedsim policies [--format text|json] [NAME]`: lists the policy presets of questions.md §2.3
//! with every knob value of both layers (issue 5 item 5).
//!
//! A preset exists in two layers: the key layer ([`KeyPolicy::preset`], what `fedsim run` reads
//! from `policy.preset`) and the room layer ([`RoomPolicy::preset`], the receipt pipeline's
//! knobs, read by room-world scenarios through `rooms.policy`). The knob values come from the
//! structs themselves (serde for the key layer, [`RoomPolicy::describe`] for the room layer), so
//! this listing cannot drift from what the code does.

use serde_json::{Map, Value};

use super::CliError;
use crate::room::policy::RoomPolicy;
use crate::server::policy::{KeyPolicy, PRESET_NAMES};

/// Output format of `fedsim policies`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One block per preset, `knob = value` lines.
    Text,
    /// One JSON object keyed by preset name (keys sorted).
    Json,
}

/// Arguments of `fedsim policies`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Show only this preset (case-sensitive, e.g. `P1a`).
    pub name: Option<String>,
}

/// The one-line descriptions of questions.md §2.3 (and of the two extra key-layer presets that
/// RQ1's phase-policy sweep uses).
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "P0",
        "Today: no member keys; server signatures; keys fetched on demand (store -> notary -> origin)",
    ),
    (
        "P1",
        "MSC4430 as written: periodic re-check at cached expiry; fail-open; soft-fail messages from unverified links; per-domain global backoff",
    ),
    ("P1a", "P1 with re-check via notary allowed (gap A1)"),
    ("P1b", "P1 with re-check direct only (gap A1)"),
    (
        "P2",
        "Fail-closed (original draft): link unverified once valid_until_ts passes without a successful re-fetch",
    ),
    (
        "P3",
        "On-demand verification: verify when the link is needed, cache until expiry; no background polling",
    ),
    ("P4", "Verify once, cache forever (MSC4243)"),
    (
        "P5",
        "Label, don't hide: never soft-fail for link status; deliver events with an \"invalid handle\" flag",
    ),
    (
        "P6",
        "Push instead of poll: rotating server notifies every server it remembers federating with; receivers re-fetch",
    ),
    (
        "P7",
        "Expiry != revocation: links signed by a key later in old_verify_keys stay verified for events up to expired_ts",
    ),
    (
        "P8",
        "Join gate / moderation: refuse make_join for unverifiable identities, or kick unverified links",
    ),
    (
        "P9",
        "MSC4499 cache discipline: first-seen-wins key binding (a later body under a known key ID is never adopted; the domain no longer vouching for the old one still invalidates it), negative caching 60 s floor -> 1 h cap, request coalescing; not modelled: notary-learned bindings being provisional",
    ),
    (
        "half-life",
        "P1 re-checking when half the remaining lifetime has passed (RQ1 phase policy)",
    ),
    (
        "jittered",
        "P1 re-checking at expiry plus a late jitter (RQ1 phase policy)",
    ),
];

/// Every preset name of either layer: the room layer's list (questions.md order), then the key
/// layer's names that the room layer lacks, in the key layer's order.
pub fn preset_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = RoomPolicy::PRESETS.iter().map(|(name, _)| *name).collect();
    for name in PRESET_NAMES {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// The description of a preset, or a note that questions.md has none.
pub fn description(name: &str) -> &'static str {
    DESCRIPTIONS
        .iter()
        .find(|(preset, _)| *preset == name)
        .map(|(_, text)| *text)
        .unwrap_or("(no description in questions.md)")
}

/// The key-layer knobs of a preset, serialised from [`KeyPolicy`] (keys sorted), or `None` if the
/// key layer has no such preset.
fn key_knobs(name: &str) -> Result<Option<Map<String, Value>>, CliError> {
    let Some(policy) = KeyPolicy::preset(name) else {
        return Ok(None);
    };
    match serde_json::to_value(&policy) {
        Ok(Value::Object(mut knobs)) => {
            // The preset's own name is not a knob.
            knobs.remove("preset");
            Ok(Some(knobs))
        }
        Ok(other) => Err(CliError::failure(format!(
            "key policy {name}: serialised to {other} instead of an object"
        ))),
        Err(error) => Err(CliError::failure(format!(
            "key policy {name}: cannot serialise: {error}"
        ))),
    }
}

/// The room-layer knobs of a preset, or `None` if the room layer has no such preset.
fn room_knobs(name: &str) -> Option<Vec<(&'static str, String)>> {
    RoomPolicy::preset(name).map(|policy| policy.describe())
}

/// Runs the command.
pub fn run(args: &Args) -> Result<(), CliError> {
    let all_names = preset_names();
    let names: Vec<&str> = match &args.name {
        None => all_names.clone(),
        Some(name) => {
            if !all_names.contains(&name.as_str()) {
                return Err(CliError::input(format!(
                    "policies: unknown preset {name:?}; known presets: {}",
                    all_names.join(", ")
                )));
            }
            vec![name.as_str()]
        }
    };
    let output = match args.format {
        Format::Text => render_text(&names)?,
        Format::Json => render_json(&names)?,
    };
    print!("{output}");
    Ok(())
}

fn render_text(names: &[&str]) -> Result<String, CliError> {
    let mut out = String::new();
    out.push_str(
        "note: key-world scenarios read the key layer (policy.preset); room-world scenarios \
         (`[rooms]`) read both layers through rooms.policy, with P1's key layer where a preset has \
         none.\n",
    );
    for name in names {
        out.push('\n');
        out.push_str(&format!("{name}: {}\n", description(name)));
        match key_knobs(name)? {
            Some(knobs) => {
                out.push_str("  key layer (as a scenario's policy table spells each knob):\n");
                for (knob, value) in &knobs {
                    out.push_str(&format!("    {}\n", scenario_spelling(knob, value)));
                }
            }
            None => out.push_str("  key layer: no such preset (P1's in the room world)\n"),
        }
        match room_knobs(name) {
            Some(knobs) => {
                out.push_str("  room layer:\n");
                for (knob, value) in knobs {
                    out.push_str(&format!("    {knob} = {value}\n"));
                }
            }
            None => out.push_str("  room layer: no such preset\n"),
        }
    }
    Ok(out)
}

/// A key-layer knob as a scenario's `policy = { ... }` table sets it: `retry_interval_ms =
/// 60000` is `retry_interval = "1m"` there; knobs a scenario cannot set say so.
fn scenario_spelling(knob: &str, value: &Value) -> String {
    if knob.starts_with("backoff_jitter_") {
        return format!("{knob} = {} (preset only)", text_value(value));
    }
    match (knob.strip_suffix("_ms"), value.as_u64()) {
        (Some(name), Some(duration_ms)) if duration_ms > 0 => format!(
            "{name} = \"{}\"",
            crate::engine::format_duration_ms(duration_ms)
        ),
        (Some(name), Some(_)) => format!("{name} = \"0s\""),
        _ => format!("{knob} = {}", text_value(value)),
    }
}

/// A JSON value for a text listing: strings without quotes.
fn text_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn render_json(names: &[&str]) -> Result<String, CliError> {
    let mut presets = Map::new();
    for name in names {
        let mut entry = Map::new();
        entry.insert("description".to_owned(), Value::from(description(name)));
        entry.insert(
            "key_layer".to_owned(),
            key_knobs(name)?.map_or(Value::Null, Value::Object),
        );
        entry.insert(
            "room_layer".to_owned(),
            room_knobs(name).map_or(Value::Null, |knobs| {
                Value::Object(
                    knobs
                        .into_iter()
                        .map(|(knob, value)| (knob.to_owned(), Value::from(value)))
                        .collect(),
                )
            }),
        );
        // Which scenarios take the name: a key world's `policy.preset`, a room world's
        // `rooms.policy`.
        entry.insert(
            "key_world_preset".to_owned(),
            Value::from(KeyPolicy::preset(name).is_some()),
        );
        entry.insert(
            "room_world_preset".to_owned(),
            Value::from(RoomPolicy::preset(name).is_some()),
        );
        presets.insert((*name).to_owned(), Value::Object(entry));
    }
    let text = serde_json::to_string_pretty(&Value::Object(presets))
        .map_err(|error| CliError::failure(format!("policies: cannot serialise: {error}")))?;
    Ok(text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_name_has_a_description_and_a_layer() {
        for name in preset_names() {
            assert!(
                DESCRIPTIONS.iter().any(|(preset, _)| *preset == name),
                "{name} has no description"
            );
            assert!(KeyPolicy::preset(name).is_some() || RoomPolicy::preset(name).is_some());
        }
    }
}
