//! Regression tests for the findings of the adversarial spec review (NOTES-review.md). Each test
//! failed before its fix and names the finding it pins.

use std::sync::Arc;

use fedsim::matrix::auth::Rule;
use fedsim::matrix::dag::{Dag, RejectionCheck};
use fedsim::matrix::{Pdu, RoomVersion};
use serde_json::{Value, json};

fn pdu(version: &RoomVersion, event: Value) -> Arc<Pdu> {
    let event_id = event["event_id"].as_str().unwrap().to_owned();
    Arc::new(Pdu::from_json(event, event_id, version).unwrap())
}

fn event(
    event_id: &str,
    (event_type, state_key): (&str, &str),
    sender: &str,
    content: Value,
    prev_events: &[&str],
    auth_events: &[&str],
    origin_server_ts: i64,
) -> Value {
    json!({
        "event_id": event_id, "type": event_type, "sender": sender, "room_id": "!CREATE",
        "state_key": state_key, "content": content, "prev_events": prev_events,
        "auth_events": auth_events, "depth": origin_server_ts + 1,
        "origin_server_ts": origin_server_ts, "hashes": {"sha256": "unchecked"}, "signatures": {}
    })
}

/// Finding R1: v12 rule 2 — "If the event's `room_id` is not an event ID for an accepted (not
/// rejected) `m.room.create` event ... reject." A rejected create event must not authorise
/// anything in PDU check 4 (the event is rejected against its auth events, so it never enters
/// state resolution), not merely fail check 5 because the state before it is empty.
#[test]
fn r1_v12_rejected_create_event_authorises_nothing_in_check_4() {
    let version = RoomVersion::V12;
    let mut dag = Dag::new(version);
    // Rule 1.4: additional_creators must be an array of user IDs: the create event is rejected.
    let create = json!({
        "event_id": "$CREATE", "type": "m.room.create", "sender": "@alice:a.example",
        "state_key": "", "content": {"room_version": "12", "additional_creators": "@bob:b.example"},
        "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0,
        "hashes": {"sha256": "unchecked"}, "signatures": {}
    });
    let create = dag.insert(pdu(&version, create)).unwrap();
    let (check, rejection) = dag.evaluation(create).rejection.clone().unwrap();
    assert_eq!(check, RejectionCheck::AuthEvents);
    assert_eq!(rejection.rule, Rule::CreateInvalidAdditionalCreators);
    // The creator's join would pass rule 5.3.1 if the rejected create event were used.
    let join = event(
        "$JOIN",
        ("m.room.member", "@alice:a.example"),
        "@alice:a.example",
        json!({"membership": "join"}),
        &["$CREATE"],
        &[],
        1,
    );
    let join = dag.insert(pdu(&version, join)).unwrap();
    let (check, _) = dag
        .evaluation(join)
        .rejection
        .clone()
        .expect("no accepted create event: rejected");
    assert_eq!(
        check,
        RejectionCheck::AuthEvents,
        "rule 2 is a check-4 rule: a rejected create event is not an accepted one"
    );
}

/// Finding R2: rule 1.3 — "If `content.room_version` is present and is not a recognised
/// version, reject." `msc4430` is fedsim's command-line alias for `org.matrix.12.4430`, not a room
/// version identifier any server recognises, so a create event naming it must be rejected.
#[test]
fn r2_the_cli_alias_msc4430_is_not_a_recognised_room_version() {
    let version = RoomVersion::V12;
    let create = |room_version: &str| {
        pdu(
            &version,
            json!({
                "event_id": "$CREATE", "type": "m.room.create", "sender": "@alice:a.example",
                "state_key": "", "content": {"room_version": room_version},
                "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0,
                "hashes": {"sha256": "unchecked"}, "signatures": {}
            }),
        )
    };
    let no_state: Vec<&Pdu> = Vec::new();
    for recognised in ["1", "10", "12", "org.matrix.12.4430"] {
        assert_eq!(
            fedsim::matrix::auth::authorize(&version, &create(recognised), &no_state),
            Ok(Rule::CreateAllowed),
            "{recognised}"
        );
    }
    let rejection =
        fedsim::matrix::auth::authorize(&version, &create("msc4430"), &no_state).unwrap_err();
    assert_eq!(rejection.rule, Rule::CreateUnknownRoomVersion);
}

/// An arbitrary auth DAG (events are plain state events; event `i` cites some of `0..i`), for
/// checking the set definitions of state resolution against their naive spec reading.
struct RandomAuthDag {
    pdus: Vec<Pdu>,
    auth: Vec<Vec<u32>>,
    chains: Vec<Vec<u32>>,
}

impl RandomAuthDag {
    fn new(auth: Vec<Vec<u32>>) -> RandomAuthDag {
        let version = RoomVersion::V12;
        let pdus = (0..auth.len())
            .map(|index| {
                let json = event(
                    &format!("$E{index:03}"),
                    ("m.room.topic", &format!("k{index}")),
                    "@alice:a.example",
                    json!({"topic": index}),
                    &[],
                    &[],
                    index as i64,
                );
                Pdu::from_json(json, format!("$E{index:03}"), &version).unwrap()
            })
            .collect();
        let mut chains: Vec<Vec<u32>> = Vec::new();
        for parents in &auth {
            let mut chain: Vec<u32> = parents.clone();
            for &parent in parents {
                chain.extend_from_slice(&chains[parent as usize]);
            }
            chain.sort_unstable();
            chain.dedup();
            chains.push(chain);
        }
        RandomAuthDag { pdus, auth, chains }
    }
}

impl fedsim::matrix::state_res::EventSource for RandomAuthDag {
    fn index_of(&self, event_id: &str) -> Option<u32> {
        event_id.strip_prefix("$E")?.parse().ok()
    }
    fn pdu(&self, index: u32) -> &Pdu {
        &self.pdus[index as usize]
    }
    fn auth_indices(&self, index: u32) -> &[u32] {
        &self.auth[index as usize]
    }
    fn is_rejected(&self, _: u32) -> bool {
        false
    }
    fn is_rejected_by_auth_events(&self, _: u32) -> bool {
        false
    }
    fn create_index(&self) -> Option<u32> {
        None
    }
    fn event_count(&self) -> usize {
        self.pdus.len()
    }
    fn auth_chain(&self, index: u32) -> &[u32] {
        &self.chains[index as usize]
    }
}

proptest::proptest! {
    /// The conflicted state subgraph ("the union of all such paths between any pair of events in
    /// the conflicted state set (including endpoints)") and the auth difference (∪Cᵢ − ∩Cᵢ, with
    /// the state events in their own Cᵢ — the convention documented in state_res) computed
    /// naively agree with the optimised walks, on arbitrary auth DAGs and state sets.
    #[test]
    fn review_subgraph_and_auth_difference_match_the_naive_definitions(
        parent_picks in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..4), 2..40),
        set_picks in proptest::collection::vec(
            proptest::collection::vec((0u32..6, 0u32..1000), 1..6), 2..4),
    ) {
        use std::collections::{BTreeMap, BTreeSet};
        let auth: Vec<Vec<u32>> = parent_picks
            .iter()
            .enumerate()
            .map(|(index, picks)| {
                let mut parents: Vec<u32> = if index == 0 {
                    Vec::new()
                } else {
                    picks.iter().map(|pick| pick % index as u32).collect()
                };
                parents.sort_unstable();
                parents.dedup();
                parents
            })
            .collect();
        let count = auth.len() as u32;
        let dag = RandomAuthDag::new(auth);
        let id = |index: u32| format!("$E{index:03}");
        let state_sets: Vec<fedsim::matrix::StateMap> = set_picks
            .iter()
            .map(|entries| {
                entries
                    .iter()
                    .map(|&(key, pick)| (("m.room.topic".to_owned(), format!("s{key}")), id(pick % count)))
                    .collect::<BTreeMap<_, _>>()
            })
            .collect();
        let (_, explanation) =
            fedsim::matrix::state_res::resolve_explained(&RoomVersion::V12, &state_sets, &dag)
                .unwrap();
        // Naive split.
        let keys: BTreeSet<_> = state_sets.iter().flat_map(|set| set.keys().cloned()).collect();
        let mut conflicted: BTreeSet<u32> = BTreeSet::new();
        for key in &keys {
            let values: Vec<Option<&String>> = state_sets.iter().map(|set| set.get(key)).collect();
            if values.iter().any(|value| value.is_none() || *value != values[0]) {
                for value in values.into_iter().flatten() {
                    conflicted.insert(value[2..].parse().unwrap());
                }
            }
        }
        // Naive subgraph: X with c1 ->* X ->* c2 for conflicted c1 != c2 (X not conflicted).
        let reaches = |from: u32, to: u32| from == to || dag.chains[from as usize].contains(&to);
        let mut subgraph: Vec<String> = (0..count)
            .filter(|&x| !conflicted.contains(&x))
            .filter(|&x| {
                conflicted.iter().any(|&c1| reaches(c1, x))
                    && conflicted.iter().any(|&c2| reaches(x, c2))
            })
            .map(id)
            .collect();
        subgraph.sort();
        proptest::prop_assert_eq!(&explanation.conflicted_subgraph, &subgraph);
        // Naive auth difference with Synapse's convention (state events in their own chain).
        let full_chain = |set: &fedsim::matrix::StateMap| -> BTreeSet<u32> {
            set.values()
                .flat_map(|value| {
                    let index: u32 = value[2..].parse().unwrap();
                    std::iter::once(index).chain(dag.chains[index as usize].iter().copied())
                })
                .collect()
        };
        let chains: Vec<BTreeSet<u32>> = state_sets.iter().map(full_chain).collect();
        let union: BTreeSet<u32> = chains.iter().flatten().copied().collect();
        let mut difference: Vec<String> = union
            .into_iter()
            .filter(|event| !chains.iter().all(|chain| chain.contains(event)))
            .map(id)
            .collect();
        difference.sort();
        if conflicted.is_empty() {
            difference.clear();
        }
        proptest::prop_assert_eq!(&explanation.auth_difference, &difference);
    }
}
