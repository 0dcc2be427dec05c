//! Unit facts from /work/shared/vectors/state_res_classic.md ("Also in test_v2.py"), on a tiny
//! hand-made event source.

use serde_json::json;

use super::*;
use crate::matrix::RoomVersion;

/// One test event: (id, sender, state key, ts, content, auth event IDs).
type TestEvent<'a> = (
    &'a str,
    &'a str,
    &'a str,
    i64,
    serde_json::Value,
    &'a [&'a str],
);

/// Events with explicit auth edges and naive auth chains, and this server's rejections.
#[derive(Default)]
struct TestSource {
    pdus: Vec<Pdu>,
    auth: Vec<Vec<EventIndex>>,
    chains: Vec<Vec<EventIndex>>,
    rejected: Vec<bool>,
    create: Option<EventIndex>,
}

/// One room event for [`TestSource::room`]: (id, type, sender, state key, content, auth event
/// IDs, rejected here).
type RoomEvent<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    serde_json::Value,
    &'a [&'a str],
    bool,
);

impl TestSource {
    /// `events`: (id, sender, state key, ts, content, auth event ids); all `m.room.topic`-like
    /// state events of type `t`, or power levels when the id starts with "PL".
    fn new(events: &[TestEvent<'_>]) -> TestSource {
        let mut source = TestSource::default();
        for (id, sender, state_key, ts, content, auth) in events {
            let event_type = if id.starts_with("PL") {
                "m.room.power_levels"
            } else {
                "t"
            };
            let json = json!({
                "type": event_type, "sender": sender, "state_key": state_key,
                "content": content, "room_id": "!r:x",
                "prev_events": [], "auth_events": auth, "depth": 1, "origin_server_ts": ts,
            });
            source.push(id, json, auth, false, &RoomVersion::V10);
        }
        source
    }

    /// Room events with real types, room version 11, timestamps in list order.
    fn room(events: &[RoomEvent<'_>]) -> TestSource {
        let mut source = TestSource::default();
        for (ts, (id, event_type, sender, state_key, content, auth, rejected)) in
            events.iter().enumerate()
        {
            let json = json!({
                "type": event_type, "sender": sender, "state_key": state_key,
                "content": content, "room_id": "!r:x",
                "prev_events": [], "auth_events": auth, "depth": 1, "origin_server_ts": ts,
            });
            source.push(id, json, auth, *rejected, &RoomVersion::V11);
        }
        source
    }

    /// Adds one event (its auth events first).
    fn push(
        &mut self,
        id: &str,
        json: serde_json::Value,
        auth: &[&str],
        rejected: bool,
        version: &RoomVersion,
    ) {
        let auth_ids: Vec<EventIndex> = auth
            .iter()
            .map(|parent| self.index_of(parent).expect("auth events first"))
            .collect();
        let mut chain: Vec<EventIndex> = Vec::new();
        for &parent in &auth_ids {
            chain.push(parent);
            chain.extend(&self.chains[parent as usize]);
        }
        chain.sort_unstable();
        chain.dedup();
        let pdu = Pdu::from_json(json, id.to_owned(), version).unwrap();
        if pdu.event_type == "m.room.create" {
            self.create = Some(self.pdus.len() as EventIndex);
        }
        self.pdus.push(pdu);
        self.auth.push(auth_ids);
        self.chains.push(chain);
        self.rejected.push(rejected);
    }

    fn state(&self, ids: &[&str]) -> StateMap {
        ids.iter()
            .map(|id| {
                let pdu = &self.pdus[self.index_of(id).unwrap() as usize];
                (pdu.state_key_pair().unwrap(), pdu.event_id.clone())
            })
            .collect()
    }

    fn ids(&self, order: &[EventIndex]) -> Vec<&str> {
        order
            .iter()
            .map(|&index| self.pdus[index as usize].event_id.as_str())
            .collect()
    }
}

impl EventSource for TestSource {
    fn index_of(&self, event_id: &str) -> Option<EventIndex> {
        self.pdus
            .iter()
            .position(|pdu| pdu.event_id == event_id)
            .map(|position| position as EventIndex)
    }
    fn pdu(&self, index: EventIndex) -> &Pdu {
        &self.pdus[index as usize]
    }
    fn auth_indices(&self, index: EventIndex) -> &[EventIndex] {
        &self.auth[index as usize]
    }
    fn is_rejected(&self, index: EventIndex) -> bool {
        self.rejected[index as usize]
    }
    fn is_rejected_by_auth_events(&self, _: EventIndex) -> bool {
        false
    }
    fn create_index(&self) -> Option<EventIndex> {
        self.create
    }
    fn event_count(&self) -> usize {
        self.pdus.len()
    }
    fn auth_chain(&self, index: EventIndex) -> &[EventIndex] {
        &self.chains[index as usize]
    }
}

fn everything(source: &TestSource) -> IndexSet {
    let mut set = IndexSet::new(source.event_count());
    for index in 0..source.event_count() as EventIndex {
        set.insert(index);
    }
    set
}

/// Test that with equal power and timestamps the reverse topological power ordering is the
/// lexicographically smallest topological order by event ID (Synapse
/// `LexicographicalTestCase.test_simple`: o, l, n, m, p).
#[test]
fn lexicographic_topological_order_by_event_id() {
    let source = TestSource::new(&[
        ("o", "@u:x", "o", 0, json!({}), &[]),
        ("l", "@u:x", "l", 0, json!({}), &["o"]),
        ("n", "@u:x", "n", 0, json!({}), &["o"]),
        ("m", "@u:x", "m", 0, json!({}), &["n", "o"]),
        ("p", "@u:x", "p", 0, json!({}), &["o"]),
    ]);
    let all: Vec<EventIndex> = (0..5).collect();
    let order =
        reverse_topological_power_order(&RoomVersion::V10, &all, &everything(&source), &source);
    assert_eq!(source.ids(&order), ["o", "l", "n", "m", "p"]);
}

/// Test the comparator: higher sender power first, then smaller ts, then smaller ID
/// (gomatrixserverlib's items under the spec comparator: g, f, e, d, a, b, c).
#[test]
fn power_then_timestamp_then_event_id() {
    let levels = json!({"users": {"@d:x": 25, "@e:x": 50, "@f:x": 75, "@g:x": 100}});
    let source = TestSource::new(&[
        ("PL", "@g:x", "", 0, levels, &[]),
        ("a", "@a:x", "a", 1, json!({}), &["PL"]),
        ("b", "@b:x", "b", 2, json!({}), &["PL"]),
        ("c", "@c:x", "c", 2, json!({}), &["PL"]),
        ("d", "@d:x", "d", 3, json!({}), &["PL"]),
        ("e", "@e:x", "e", 4, json!({}), &["PL"]),
        ("f", "@f:x", "f", 4, json!({}), &["PL"]),
        ("g", "@g:x", "g", 5, json!({}), &["PL"]),
    ]);
    let items: Vec<EventIndex> = (1..8).collect();
    let mut in_set = IndexSet::new(source.event_count());
    for &item in &items {
        in_set.insert(item);
    }
    let order = reverse_topological_power_order(&RoomVersion::V10, &items, &in_set, &source);
    assert_eq!(source.ids(&order), ["g", "f", "e", "d", "a", "b", "c"]);
}

/// Test the auth difference on Synapse's `AuthChainDifferenceTestCase` (C cites B, B cites A;
/// D cites C; E cites C and B).
#[test]
fn auth_difference_follows_synapse() {
    let source = TestSource::new(&[
        ("A", "@u:x", "a", 1, json!({}), &[]),
        ("B", "@u:x", "b", 2, json!({}), &["A"]),
        ("C", "@u:x", "c", 3, json!({}), &["B"]),
        ("D", "@u:x", "d", 4, json!({}), &["C"]),
        ("E", "@u:x", "e", 5, json!({}), &["C", "B"]),
    ]);
    let state = |ids: &[&str]| -> StateMap {
        ids.iter()
            .map(|id| {
                let pdu = source.pdu(source.index_of(id).unwrap());
                (pdu.state_key_pair().unwrap(), pdu.event_id.clone())
            })
            .collect()
    };
    let difference = |first: &[&str], second: &[&str]| {
        let (_, explanation) =
            resolve_explained(&RoomVersion::V10, &[state(first), state(second)], &source).unwrap();
        explanation.auth_difference
    };
    assert_eq!(difference(&["A", "B"], &["C"]), ["C"]);
    assert_eq!(difference(&["A", "B"], &["C", "D"]), ["C", "D"]);
    assert_eq!(difference(&["A", "B", "E"], &["C", "D"]), ["D", "E"]);
}

/// Test the conflicted subgraph on a chain X1 <- X2 <- X3 <- X4 (each cites the previous) with
/// X1 and X4 conflicted: X2 and X3 lie between them; an event citing X4 does not.
#[test]
fn conflicted_subgraph_is_the_events_between_conflicted_events() {
    let source = TestSource::new(&[
        ("X1", "@u:x", "k", 1, json!({}), &[]),
        ("X2", "@u:x", "two", 2, json!({}), &["X1"]),
        ("X3", "@u:x", "three", 3, json!({}), &["X2"]),
        ("X4", "@u:x", "k", 4, json!({}), &["X3"]),
        ("X5", "@u:x", "five", 5, json!({}), &["X4"]),
    ]);
    let subgraph = conflicted_subgraph(&[0, 3], &source);
    assert_eq!(source.ids(&subgraph), ["X2", "X3"]);
}

/// Test that a split leaves a key present everywhere with one value unconflicted, and makes a
/// key missing from one map, or with different values, conflicted.
#[test]
fn split_by_key_and_value() {
    let map = |entries: &[(&str, &str)]| -> StateMap {
        entries
            .iter()
            .map(|(key, id)| (("t".to_owned(), (*key).to_owned()), (*id).to_owned()))
            .collect()
    };
    let sets = [
        map(&[("same", "$1"), ("differs", "$2"), ("one_side", "$3")]),
        map(&[("same", "$1"), ("differs", "$4")]),
    ];
    let split = split_state_sets(&sets);
    let unconflicted: Vec<&str> = split
        .unconflicted
        .iter()
        .map(|(key, _)| key.1.as_str())
        .collect();
    assert_eq!(unconflicted, ["same"]);
    let conflicted: Vec<(&str, Vec<Option<&str>>)> = split
        .conflicted
        .iter()
        .map(|(key, values)| {
            (
                key.1.as_str(),
                values
                    .iter()
                    .map(|value| value.map(String::as_str))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        conflicted,
        [
            ("differs", vec![Some("$2"), Some("$4")]),
            ("one_side", vec![Some("$3"), None]),
        ]
    );
}

/// Test that an event this server rejected at check 5 (against the state before it), once the
/// iterative auth checks admit it into the partial state, counts there for the events checked
/// after it: Alice's ban of Bob (`$ban`, rejected here) wins the power phase, so Bob's topic,
/// sent meanwhile and authorised only by his old join, fails, and the result is the one a
/// server that accepted the ban computes. (Skipping the admitted entry fell back to the topic's
/// own auth events: Bob banned yet his topic kept.)
#[test]
fn an_entry_admitted_by_the_iterative_checks_counts_though_rejected_here() {
    let resolve_with = |ban_rejected_here: bool| {
        let source = TestSource::room(&[
            (
                "$create",
                "m.room.create",
                "@alice:x",
                "",
                json!({"room_version": "11"}),
                &[],
                false,
            ),
            (
                "$alice",
                "m.room.member",
                "@alice:x",
                "@alice:x",
                json!({"membership": "join"}),
                &["$create"],
                false,
            ),
            (
                "$levels",
                "m.room.power_levels",
                "@alice:x",
                "",
                json!({"users": {"@alice:x": 100, "@bob:x": 50}}),
                &["$create", "$alice"],
                false,
            ),
            (
                "$rules",
                "m.room.join_rules",
                "@alice:x",
                "",
                json!({"join_rule": "public"}),
                &["$create", "$levels", "$alice"],
                false,
            ),
            (
                "$bob",
                "m.room.member",
                "@bob:x",
                "@bob:x",
                json!({"membership": "join"}),
                &["$create", "$levels", "$rules"],
                false,
            ),
            (
                "$topic",
                "m.room.topic",
                "@alice:x",
                "",
                json!({"topic": "zero"}),
                &["$create", "$levels", "$alice"],
                false,
            ),
            (
                "$ban",
                "m.room.member",
                "@alice:x",
                "@bob:x",
                json!({"membership": "ban"}),
                &["$create", "$levels", "$alice", "$bob"],
                ban_rejected_here,
            ),
            (
                "$bob_topic",
                "m.room.topic",
                "@bob:x",
                "",
                json!({"topic": "bob"}),
                &["$create", "$levels", "$bob"],
                false,
            ),
        ]);
        let common = ["$create", "$alice", "$levels", "$rules"];
        let with = |extra: [&str; 2]| source.state(&[&common[..], &extra[..]].concat());
        let states = [with(["$bob", "$bob_topic"]), with(["$ban", "$topic"])];
        resolve(&RoomVersion::V11, &states, &source).unwrap()
    };
    let resolved = resolve_with(true);
    let entry = |state: &StateMap, event_type: &str, state_key: &str| {
        state[&(event_type.to_owned(), state_key.to_owned())].clone()
    };
    assert_eq!(entry(&resolved, "m.room.member", "@bob:x"), "$ban");
    assert_eq!(entry(&resolved, "m.room.topic", ""), "$topic");
    assert_eq!(resolved, resolve_with(false));
}
