//! Differential test: fedsim's state resolution against `ruma-state-res` 0.18 (an independent
//! implementation, dev-dependency only) on thousands of seeded random room DAGs per room version.
//!
//! Each DAG starts with a common prefix (create, the creator's join, power levels, public join
//! rules, five more joins), then grows two or three branches with concurrent power-levels,
//! join-rules, membership (join, leave, kick, invite, ban) and topic changes, occasionally merging
//! branches. Events go through fedsim's DAG (PDU checks 4 and 5), so every merge point resolves
//! the states after its parents; each of those resolutions, and the final resolution of all branch
//! tips, is repeated with ruma and must agree exactly.
//!
//! ruma takes the auth chains and the conflicted state subgraph from the caller. They are computed
//! here by a plain, separate implementation over event-ID strings (not fedsim's indexed, memoised
//! code), with the same auth-difference convention as fedsim (each state set's full auth chain
//! includes its own events, as Synapse does). ruma's `Event::rejected` reports fedsim's verdict on
//! insertion, so both skip the same rejected auth events.
//!
//! Not compared: the MSC4430 room version. ruma-state-res has no rules for it, and its senders
//! (member keys, `@` + base64 with no server name) are not user IDs ruma's types accept. Its
//! resolution is v2.1 with MSC4430's auth rules, which the auth branch tests on their own.

#[path = "common/ruma_oracle.rs"]
mod ruma_oracle;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use fedsim::matrix::auth::auth_types_for_event;
use fedsim::matrix::dag::Dag;
use fedsim::matrix::state_res::{self, EventSource};
use fedsim::matrix::{Pdu, RoomVersion, StateMap};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ruma_oracle::{RumaEvent, ruma_event, ruma_resolve};
use serde_json::{Value, json};

/// Random DAGs per room version.
const DAGS_PER_VERSION: u64 = 2_000;

const USERS: [&str; 7] = [
    "@alice:a.example",
    "@bob:b.example",
    "@carol:a.example",
    "@dan:c.example",
    "@erin:b.example",
    "@frank:c.example",
    "@grace:d.example",
];

/// Builds one random room DAG.
struct Generator {
    version: RoomVersion,
    rng: ChaCha8Rng,
    dag: Dag,
    room_id: Option<String>,
    clock_ms: i64,
    /// Tips of the live branches (indices into the DAG).
    tips: Vec<u32>,
}

impl Generator {
    fn new_event_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let body: String = (0..12)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        format!("${body}")
    }

    /// Adds an event after `prev` (the tips it names), with auth events picked from
    /// `state_before` by the auth events selection. Returns its index.
    fn add(
        &mut self,
        prev: &[u32],
        state_before: &StateMap,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> u32 {
        let event_id = self.new_event_id();
        // Timestamps mostly advance, sometimes tie or step back, so the ts and event-ID
        // tie-breaks are exercised.
        self.clock_ms += self.rng.random_range(-1..=2);
        self.clock_ms = self.clock_ms.max(1);
        let auth_events: Vec<String> =
            auth_types_for_event(&self.version, event_type, sender, state_key, &content)
                .into_iter()
                .filter_map(|key| state_before.get(&key).cloned())
                .collect();
        let prev_events: Vec<String> = prev
            .iter()
            .map(|&index| self.dag.event(index).event_id.clone())
            .collect();
        let depth = prev
            .iter()
            .map(|&index| self.dag.event(index).depth)
            .max()
            .unwrap_or(0)
            + 1;
        let mut json = json!({
            "type": event_type, "sender": sender, "content": content,
            "prev_events": prev_events, "auth_events": auth_events,
            "depth": depth, "origin_server_ts": self.clock_ms,
        });
        if let Some(room_id) = &self.room_id {
            json["room_id"] = json!(room_id);
        }
        if let Some(state_key) = state_key {
            json["state_key"] = json!(state_key);
        }
        let pdu = Pdu::from_json(json, event_id, &self.version).unwrap();
        self.dag.insert(Arc::new(pdu)).unwrap()
    }

    fn power_levels_content(&mut self, state: &StateMap) -> Value {
        let current = state
            .get(&("m.room.power_levels".to_owned(), String::new()))
            .map(|id| self.dag.event(self.dag.index(id).unwrap()).content.clone())
            .unwrap_or_else(|| json!({}));
        let mut content = current;
        let user = *USERS.choose(&mut self.rng).unwrap();
        let levels = [0, 0, 25, 50, 50, 75, 100];
        let level = *levels.choose(&mut self.rng).unwrap();
        let creator_is_privileged = self.version.privileged_creators && user == USERS[0];
        if !creator_is_privileged {
            content["users"][user] = json!(level);
        }
        match self.rng.random_range(0..6) {
            0 => content["state_default"] = json!(*levels.choose(&mut self.rng).unwrap()),
            1 => content["ban"] = json!(*levels.choose(&mut self.rng).unwrap()),
            2 => content["events"]["m.room.topic"] = json!(*levels.choose(&mut self.rng).unwrap()),
            3 => content["kick"] = json!(*levels.choose(&mut self.rng).unwrap()),
            _ => {}
        }
        content
    }

    /// One random state change on branch `branch`.
    fn random_state_event(&mut self, branch: usize) {
        let tip = self.tips[branch];
        let state = self.dag.evaluation(tip).state_after.to_map();
        let joined: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|user| {
                state
                    .get(&("m.room.member".to_owned(), (*user).to_owned()))
                    .is_some_and(|id| {
                        self.dag.event(self.dag.index(id).unwrap()).membership() == Some("join")
                    })
            })
            .collect();
        // Mostly joined senders, sometimes anyone (who may then be rejected).
        let sender = if !joined.is_empty() && self.rng.random_bool(0.85) {
            *joined.choose(&mut self.rng).unwrap()
        } else {
            *USERS.choose(&mut self.rng).unwrap()
        };
        let target = *USERS.choose(&mut self.rng).unwrap();
        let (event_type, state_key, content) = match self.rng.random_range(0..10) {
            0 | 1 => (
                "m.room.power_levels",
                String::new(),
                self.power_levels_content(&state),
            ),
            2 => {
                let rule = *["public", "invite", "public"]
                    .choose(&mut self.rng)
                    .unwrap();
                (
                    "m.room.join_rules",
                    String::new(),
                    json!({"join_rule": rule}),
                )
            }
            3 => (
                "m.room.member",
                sender.to_owned(),
                json!({"membership": "join"}),
            ),
            4 => (
                "m.room.member",
                sender.to_owned(),
                json!({"membership": "leave"}),
            ),
            5 => (
                "m.room.member",
                target.to_owned(),
                json!({"membership": "leave"}),
            ),
            6 => (
                "m.room.member",
                target.to_owned(),
                json!({"membership": "ban"}),
            ),
            7 => (
                "m.room.member",
                target.to_owned(),
                json!({"membership": "invite"}),
            ),
            _ => {
                let topic = format!("topic {}", self.rng.random_range(0..1000));
                ("m.room.topic", String::new(), json!({"topic": topic}))
            }
        };
        let index = self.add(
            &[tip],
            &state,
            sender,
            event_type,
            Some(&state_key),
            content,
        );
        // A server does not build on an event it rejected.
        if self.dag.evaluation(index).rejection.is_none() {
            self.tips[branch] = index;
        }
    }

    /// A message merging two branches; `None` if no one is joined in the merged state.
    fn merge(&mut self, into: usize, from: usize) {
        let prev = [self.tips[into], self.tips[from]];
        let states: Vec<StateMap> = prev
            .iter()
            .map(|&index| self.dag.evaluation(index).state_after.to_map())
            .collect();
        let merged = state_res::resolve(&self.version, &states, &self.dag).unwrap();
        let Some(sender) = USERS.iter().copied().find(|user| {
            merged
                .get(&("m.room.member".to_owned(), (*user).to_owned()))
                .is_some_and(|id| {
                    self.dag.event(self.dag.index(id).unwrap()).membership() == Some("join")
                })
        }) else {
            return;
        };
        let index = self.add(
            &prev,
            &merged,
            sender,
            "m.room.message",
            None,
            json!({"body": "merge"}),
        );
        if self.dag.evaluation(index).rejection.is_none() {
            self.tips[into] = index;
            self.tips.remove(from);
        }
    }
}

fn random_dag(version: RoomVersion, seed: u64) -> Generator {
    let mut generator = Generator {
        version,
        rng: ChaCha8Rng::seed_from_u64(seed),
        dag: Dag::new(version),
        room_id: None,
        clock_ms: 1,
        tips: Vec::new(),
    };
    let creator = USERS[0];
    let create_content = if version.create_has_creator_key {
        json!({"creator": creator, "room_version": version.id})
    } else {
        json!({"room_version": version.id})
    };
    if !version.room_id_from_create_event {
        generator.room_id = Some("!room:a.example".to_owned());
    }
    let empty = StateMap::new();
    let create = generator.add(
        &[],
        &empty,
        creator,
        "m.room.create",
        Some(""),
        create_content,
    );
    if version.room_id_from_create_event {
        generator.room_id = Some(generator.dag.event(create).event_id.replacen('$', "!", 1));
    }
    let mut tip = create;
    let mut step =
        |generator: &mut Generator, sender: &str, event_type: &str, key: &str, content: Value| {
            let state = generator.dag.evaluation(tip).state_after.to_map();
            tip = generator.add(&[tip], &state, sender, event_type, Some(key), content);
            assert!(
                generator.dag.evaluation(tip).rejection.is_none(),
                "prefix event rejected"
            );
        };
    step(
        &mut generator,
        creator,
        "m.room.member",
        creator,
        json!({"membership": "join"}),
    );
    let mut users = json!({"@bob:b.example": 100, "@carol:a.example": 50, "@dan:c.example": 50});
    if !version.privileged_creators {
        users[creator] = json!(100);
    }
    step(
        &mut generator,
        creator,
        "m.room.power_levels",
        "",
        json!({"users": users}),
    );
    step(
        &mut generator,
        creator,
        "m.room.join_rules",
        "",
        json!({"join_rule": "public"}),
    );
    for user in &USERS[1..6] {
        step(
            &mut generator,
            user,
            "m.room.member",
            user,
            json!({"membership": "join"}),
        );
    }
    let branches = generator.rng.random_range(2..=3);
    generator.tips = vec![tip; branches];
    let steps = generator.rng.random_range(4..=16);
    for _ in 0..steps {
        let branch = generator.rng.random_range(0..generator.tips.len());
        if generator.tips.len() > 1 && generator.rng.random_bool(0.15) {
            let other = (branch + 1) % generator.tips.len();
            generator.merge(branch, other);
        } else {
            generator.random_state_event(branch);
        }
    }
    generator
}

/// Runs the differential on `DAGS_PER_VERSION` random DAGs of `version`.
fn differential(version: RoomVersion, seed_base: u64) {
    let mut resolutions = 0;
    let mut with_conflicts = 0;
    let mut with_auth_failures = 0;
    let mut with_subgraph_additions = 0;
    let mut rejected_events = 0;
    for seed in seed_base..seed_base + DAGS_PER_VERSION {
        let generator = random_dag(version, seed);
        let dag = &generator.dag;
        rejected_events += dag
            .topological_order()
            .filter(|&index| dag.is_rejected(index))
            .count();
        let ruma_events: HashMap<String, RumaEvent> = dag
            .topological_order()
            .map(|index| {
                let pdu = dag.event(index);
                (
                    pdu.event_id.clone(),
                    ruma_event(pdu, dag.is_rejected(index)),
                )
            })
            .collect();
        // Every merge point: the state before it is fedsim's resolution of its parents' states.
        let mut cases: Vec<(String, Vec<StateMap>, StateMap)> = Vec::new();
        for index in dag.topological_order() {
            let prev = dag.prev_indices(index);
            if prev.len() < 2 {
                continue;
            }
            let states: Vec<StateMap> = prev
                .iter()
                .map(|&parent| dag.evaluation(parent).state_after.to_map())
                .collect();
            let fedsim = dag.evaluation(index).state_before.to_map();
            cases.push((
                format!("before {}", dag.event(index).event_id),
                states,
                fedsim,
            ));
        }
        // The final resolution over all branch tips.
        let tips: BTreeSet<u32> = generator.tips.iter().copied().collect();
        if tips.len() > 1 {
            let states: Vec<StateMap> = tips
                .iter()
                .map(|&tip| dag.evaluation(tip).state_after.to_map())
                .collect();
            let fedsim = state_res::resolve(&version, &states, dag).unwrap();
            cases.push(("at the tips".to_owned(), states, fedsim));
        }
        // A partial-sync shape (MSC4297): one tip's state with some entries replaced by older
        // values from the state after an earlier event, as a `/state_ids` answer may hold.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let tip_list: Vec<u32> = tips.iter().copied().collect();
        let mut stale = dag.evaluation(tip_list[0]).state_after.to_map();
        let older_event = rng.random_range(0..dag.len() as u32);
        let older = dag.evaluation(older_event).state_after.to_map();
        for (key, id) in &older {
            if rng.random_bool(0.3) {
                stale.insert(key.clone(), id.clone());
            }
        }
        let mut stale_states: Vec<StateMap> = vec![stale];
        stale_states.extend(
            tip_list
                .iter()
                .map(|&tip| dag.evaluation(tip).state_after.to_map()),
        );
        let fedsim = state_res::resolve(&version, &stale_states, dag).unwrap();
        cases.push(("with a stale state set".to_owned(), stale_states, fedsim));
        for (label, states, fedsim) in cases {
            resolutions += 1;
            if states.iter().any(|state| *state != states[0]) {
                with_conflicts += 1;
                let (_, explanation) =
                    state_res::resolve_explained(&version, &states, dag).unwrap();
                with_auth_failures += usize::from(!explanation.auth_failures.is_empty());
                let added_by_subgraph = explanation.conflicted_subgraph.iter().any(|id| {
                    !explanation.auth_difference.contains(id)
                        && !explanation
                            .conflicted
                            .iter()
                            .any(|(_, ids)| ids.contains(id))
                });
                with_subgraph_additions += usize::from(added_by_subgraph);
            }
            let state_refs: Vec<&StateMap> = states.iter().collect();
            let ruma = ruma_resolve(&version, &state_refs, &ruma_events);
            if ruma != fedsim {
                let difference: BTreeMap<_, _> = ruma
                    .keys()
                    .chain(fedsim.keys())
                    .filter(|key| ruma.get(*key) != fedsim.get(*key))
                    .map(|key| (key.clone(), (fedsim.get(key), ruma.get(key))))
                    .collect();
                panic!(
                    "room version {} seed {seed}, resolution {label}: fedsim and ruma disagree \
                     on (key: (fedsim, ruma)) {difference:?}",
                    version.id
                );
            }
        }
    }
    eprintln!(
        "room version {}: {resolutions} resolutions compared, {with_conflicts} with conflicts, \
         {with_auth_failures} with failed iterative auth checks, {with_subgraph_additions} where \
         the conflicted subgraph added events, {rejected_events} events rejected on insertion",
        version.id
    );
    // The generator must actually produce conflicts, and resolutions that reject something, for
    // the comparison to mean something.
    assert!(
        with_conflicts as u64 * 2 > DAGS_PER_VERSION,
        "only {with_conflicts} conflicted resolutions out of {resolutions}"
    );
    assert!(
        with_auth_failures * 10 > with_conflicts,
        "too few auth failures"
    );
}

#[test]
fn agrees_with_ruma_on_room_version_10() {
    differential(RoomVersion::V10, 10_000_000);
}

#[test]
fn agrees_with_ruma_on_room_version_11() {
    differential(RoomVersion::V11, 11_000_000);
}

#[test]
fn agrees_with_ruma_on_room_version_12() {
    differential(RoomVersion::V12, 12_000_000);
}
