//! State resolution of a fork with about K conflicted events in a room of M members, fedsim
//! beside ruma-state-res 0.18 on the same inputs, room version 12 (state res v2.1).
//!
//! Run: `cargo bench --bench state_res`. Each configuration is named "M=<members> K=<events per
//! fork, both branches together>"; the actual size of the conflicted state set is printed once per
//! configuration when its input is built. ruma is timed on `resolve` alone: its auth chains and
//! conflicted subgraph (which it takes from the caller, as a server would from its database) are
//! prepared outside the timed part, and the copy of the auth chains it consumes is made by divan's
//! input generator, also untimed. fedsim is timed on everything: split, auth difference,
//! conflicted subgraph, orderings, auth checks, building the output map.

#[path = "../tests/common/ruma_oracle.rs"]
mod ruma_oracle;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use fedsim::matrix::auth::auth_types_for_event;
use fedsim::matrix::dag::Dag;
use fedsim::matrix::{Pdu, RoomVersion, StateMap, state_res};
use ruma_oracle::{RumaEvent, RumaInput, prepare, ruma_event};
use serde_json::{Value, json};

const CONFIGS: [&str; 6] = [
    "M=100 K=10",
    "M=100 K=100",
    "M=100 K=1000",
    "M=10000 K=10",
    "M=10000 K=100",
    "M=10000 K=1000",
];

fn main() {
    divan::main();
}

struct Input {
    version: RoomVersion,
    dag: Dag,
    states: Vec<StateMap>,
    ruma_events: HashMap<String, RumaEvent>,
    ruma: RumaInput,
}

fn user(index: usize) -> String {
    format!("@user{index}:server{}.example", index % 50)
}

struct Builder {
    version: RoomVersion,
    dag: Dag,
    room_id: Option<String>,
    next_id: usize,
    clock_ms: i64,
}

impl Builder {
    /// Appends an event after `prev`, with auth events picked from the state after `prev`.
    fn add(&mut self, prev: u32, sender: &str, event_type: &str, key: &str, content: Value) -> u32 {
        let state = self.dag.evaluation(prev).state_after.clone();
        self.add_with_state(Some(prev), &state, sender, event_type, key, content)
    }

    fn add_with_state(
        &mut self,
        prev: Option<u32>,
        state: &fedsim::matrix::dag::LayeredState,
        sender: &str,
        event_type: &str,
        key: &str,
        content: Value,
    ) -> u32 {
        self.next_id += 1;
        self.clock_ms += 1;
        let event_id = format!("$event{:07}", self.next_id);
        let auth_events: Vec<String> =
            auth_types_for_event(&self.version, event_type, sender, Some(key), &content)
                .into_iter()
                .filter_map(|(kind, state_key)| state.get(&kind, &state_key).cloned())
                .collect();
        let prev_events: Vec<String> = prev
            .iter()
            .map(|&index| self.dag.event(index).event_id.clone())
            .collect();
        let depth = prev.map_or(1, |index| self.dag.event(index).depth + 1);
        let mut json = json!({
            "type": event_type, "sender": sender, "state_key": key, "content": content,
            "prev_events": prev_events, "auth_events": auth_events, "depth": depth,
            "origin_server_ts": self.clock_ms,
        });
        if let Some(room_id) = &self.room_id {
            json["room_id"] = json!(room_id);
        }
        let pdu = Pdu::from_json(json, event_id, &self.version).unwrap();
        self.dag.insert(Arc::new(pdu)).unwrap()
    }
}

/// A room of `members` members, then two branches of `fork_events / 2` events each: the creator
/// and a moderator concurrently change the same members' profiles, the topic, power levels, and
/// kick or ban members.
fn build(version: RoomVersion, members: usize, fork_events: usize) -> Input {
    let mut builder = Builder {
        version,
        dag: Dag::new(version),
        room_id: None,
        next_id: 0,
        clock_ms: 0,
    };
    let creator = user(0);
    let moderator = user(1);
    let empty = Default::default();
    let create = builder.add_with_state(
        None,
        &empty,
        &creator,
        "m.room.create",
        "",
        json!({"room_version": version.id}),
    );
    builder.room_id = Some(builder.dag.event(create).event_id.replacen('$', "!", 1));
    let mut tip = builder.add(
        create,
        &creator,
        "m.room.member",
        &creator,
        json!({"membership": "join"}),
    );
    tip = builder.add(
        tip,
        &creator,
        "m.room.power_levels",
        "",
        json!({"users": {moderator.clone(): 100}}),
    );
    tip = builder.add(
        tip,
        &creator,
        "m.room.join_rules",
        "",
        json!({"join_rule": "public"}),
    );
    for index in 1..members {
        let member = user(index);
        tip = builder.add(
            tip,
            &member,
            "m.room.member",
            &member,
            json!({"membership": "join"}),
        );
    }
    let fork = tip;
    let ordinary = members.saturating_sub(2).max(1);
    let target = |offset: usize| user(2 + offset % ordinary);
    let mut tips = [fork, fork];
    for step in 0..fork_events / 2 {
        for (branch, sender) in [(0, &creator), (1, &moderator)] {
            let at = tips[branch];
            let next = match step % 4 {
                0 => {
                    let member = target(step);
                    let name = format!("branch {branch} step {step}");
                    builder.add(
                        at,
                        &member,
                        "m.room.member",
                        &member,
                        json!({"membership": "join", "displayname": name}),
                    )
                }
                1 => builder.add(
                    at,
                    sender,
                    "m.room.topic",
                    "",
                    json!({"topic": format!("{branch}/{step}")}),
                ),
                2 => {
                    let mut users = json!({moderator.clone(): 100});
                    users[target(step + branch)] = json!(10 + branch);
                    builder.add(
                        at,
                        sender,
                        "m.room.power_levels",
                        "",
                        json!({"users": users}),
                    )
                }
                _ => {
                    let membership = if branch == 0 { "leave" } else { "ban" };
                    builder.add(
                        at,
                        sender,
                        "m.room.member",
                        &target(step * 7 + branch),
                        json!({"membership": membership}),
                    )
                }
            };
            if builder.dag.evaluation(next).rejection.is_none() {
                tips[branch] = next;
            }
        }
    }
    let states: Vec<StateMap> = tips
        .iter()
        .map(|&index| builder.dag.evaluation(index).state_after.to_map())
        .collect();
    let dag = builder.dag;
    let ruma_events: HashMap<String, RumaEvent> = dag
        .topological_order()
        .map(|index| {
            let pdu = dag.event(index);
            (
                pdu.event_id.clone(),
                ruma_event(pdu, dag.evaluation(index).rejection.is_some()),
            )
        })
        .collect();
    let state_refs: Vec<&StateMap> = states.iter().collect();
    let ruma = prepare(&version, &state_refs, &ruma_events);
    Input {
        version,
        dag,
        states,
        ruma_events,
        ruma,
    }
}

/// The input of a configuration, built once and checked: both implementations must agree.
fn input(config: &str) -> &'static Input {
    static CACHE: OnceLock<Mutex<BTreeMap<String, &'static Input>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if let Some(input) = cache.get(config) {
        return input;
    }
    let number = |name: &str| -> usize {
        config
            .split(' ')
            .find_map(|part| part.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let input: &'static Input = Box::leak(Box::new(build(
        RoomVersion::V12,
        number("M="),
        number("K="),
    )));
    let (fedsim, explanation) =
        state_res::resolve_explained(&input.version, &input.states, &input.dag).unwrap();
    let ruma: StateMap = input
        .ruma
        .resolve(input.ruma.auth_chains.clone(), &input.ruma_events)
        .into_iter()
        .map(|((event_type, state_key), id)| ((event_type.to_string(), state_key), id.to_string()))
        .collect();
    assert_eq!(fedsim, ruma, "{config}: fedsim and ruma disagree");
    let conflicted: usize = explanation
        .conflicted
        .iter()
        .map(|(_, ids)| ids.len())
        .sum();
    eprintln!(
        "{config}: {} events, {} state entries, {conflicted} conflicted events, full conflicted set {}",
        input.dag.len(),
        input.states[0].len(),
        explanation.full_conflicted_set.len()
    );
    cache.insert(config.to_owned(), input);
    input
}

#[divan::bench(args = CONFIGS, sample_count = 20)]
fn fedsim(bencher: divan::Bencher, config: &str) {
    let input = input(config);
    bencher.bench(|| state_res::resolve(&input.version, &input.states, &input.dag).unwrap());
}

#[divan::bench(args = CONFIGS, sample_count = 20)]
fn ruma(bencher: divan::Bencher, config: &str) {
    let input = input(config);
    bencher
        .with_inputs(|| input.ruma.auth_chains.clone())
        .bench_values(|auth_chains| input.ruma.resolve(auth_chains, &input.ruma_events));
}
