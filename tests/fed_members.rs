//! Several users of one server in one room (`rooms.members_per_server`, `src/fed/members.rs`):
//! the server's first user joins with `make_join`/`send_join`, further users with a plain join
//! event over `/send`; every user's join and messages reach every server; under MSC4430 each
//! user has its own member key and co-signed link; a leave of one user keeps the server
//! resident, the leave of its last user ends that; runs are byte-identical.

#[path = "common/world_run.rs"]
mod world_run;

use std::collections::BTreeSet;

use fedsim::engine::Trace;
use fedsim::fed::FedWorld;
use fedsim::room::links::LinkStatus;
use fedsim::room::room_state::Fate;
use world_run::{all_checks_pass, assert_files_equal, metric, run, scenario};

/// 6 servers with 3–4 users each, 2 rooms of 3–6 servers, 2–3 users of each member server per
/// room.
const MULTI: &str = r#"
name = "fed-members"
duration = "12h"

[rooms]
servers = 6
rooms = 2
servers_per_room = { min = 3, max = 6 }
users_per_server = { min = 3, max = 4 }
members_per_server = { min = 2, max = 3 }
policy = "P1"
messages_per_room_per_hour = 20.0
join_window = "1h"
"#;

/// 4 servers with 2 users each, all in one room with both users. hs2's second user leaves at
/// 6h; hs3's two users leave at 9h.
const LEAVES: &str = r#"
name = "fed-member-leaves"
duration = "12h"

[rooms]
servers = 4
rooms = 1
servers_per_room = { min = 4, max = 4 }
users_per_server = { min = 2, max = 2 }
members_per_server = { min = 2, max = 2 }
policy = "P1"
messages_per_room_per_hour = 30.0
join_window = "1h"

[[rooms.actions]]
at = "6h"
kind = "leave"
servers = [2]
room = 0
user = 1

[[rooms.actions]]
at = "9h"
kind = "leave"
servers = [3]
room = 0
user = 0

[[rooms.actions]]
at = "9h"
kind = "leave"
servers = [3]
room = 0
user = 1
"#;

/// `member`'s membership in `server`'s current state of `room`.
fn membership(world: &mut FedWorld, server: u32, room: u32, member: &str) -> Option<String> {
    let state = &mut world.servers[server as usize].rooms.get_mut(&room)?.state;
    let event = state.current_state_event("m.room.member", member).ok()??;
    event.membership().map(str::to_owned)
}

#[test]
fn every_users_join_and_messages_reach_every_server() {
    for policy in ["P0", "P1"] {
        let scenario = scenario(MULTI, &[&format!("rooms.policy={policy}")]);
        let mut world = FedWorld::build(&scenario, 5, Trace::default());
        world.run(|_| {});
        let mut further_users = 0;
        let mut joining_servers = 0;
        for room in 0..world.plans.len() as u32 {
            let plan = &world.plans[room as usize];
            let servers = plan.servers();
            let members: Vec<(u32, u32, String)> = plan
                .members
                .iter()
                .zip(&plan.member_ids)
                .map(|(&(server, user), id)| (server, user, id.clone()))
                .collect();
            for &server in &servers {
                let users = plan.users_of(server).count();
                assert!((2..=3).contains(&users), "{policy}: 2-3 users of a server");
                further_users += users - 1;
            }
            joining_servers += servers.len() - 1;
            let ids: BTreeSet<&String> = members.iter().map(|(_, _, id)| id).collect();
            assert_eq!(ids.len(), members.len(), "{policy}: one ID per user");
            // Every server sees every planned user joined.
            for &observer in &servers {
                for (server, user, id) in &members {
                    assert_eq!(
                        membership(&mut world, observer, room, id).as_deref(),
                        Some("join"),
                        "{policy}: room {room}: hs{observer} sees user {user} of hs{server} joined"
                    );
                }
            }
            // MSC4430: each user has its own member key and link, verified everywhere.
            if policy == "P1" {
                for &observer in &servers {
                    let links = &world.servers[observer as usize].rooms[&room].links;
                    for (server, _, id) in &members {
                        if *server == observer {
                            continue;
                        }
                        assert_eq!(
                            links.status(id),
                            LinkStatus::Verified,
                            "room {room}: hs{observer}'s link to {id}"
                        );
                        let domain = links.link(id).and_then(|link| link.domain.clone());
                        assert_eq!(
                            domain.as_deref(),
                            Some(format!("hs{server}.example").as_str())
                        );
                    }
                }
            }
            // Messages come from more users than servers, and every server holds each one.
            let mut senders = BTreeSet::new();
            let creator = world.plans[room as usize].creator.0 as usize;
            let sent: Vec<_> = world
                .sent
                .iter()
                .filter(|sent| sent.room == room && sent.message)
                .map(|sent| sent.event_id.clone())
                .collect();
            for event_id in &sent {
                let sender = world.servers[creator].rooms[&room]
                    .state
                    .event(event_id)
                    .map(|pdu| pdu.sender.clone())
                    .expect("the creator holds every message");
                senders.insert(sender);
                for &observer in &servers {
                    let held = world.servers[observer as usize].rooms[&room]
                        .state
                        .held(event_id)
                        .map(|held| held.fate.clone());
                    assert!(
                        matches!(held, Some(Fate::Accepted { .. })),
                        "{policy}: hs{observer} holds {event_id} accepted"
                    );
                }
            }
            assert!(
                senders.len() > servers.len(),
                "{policy}: room {room}: {} senders from {} servers",
                senders.len(),
                servers.len()
            );
        }
        // One make_join/send_join per joining server, a local join per further user.
        assert_eq!(
            world.counters.joins_completed, joining_servers as u64,
            "{policy}"
        );
        assert_eq!(world.counters.local_joins, further_users as u64, "{policy}");
        assert_eq!(world.counters.rejected, 0, "{policy}");
        assert_eq!(world.counters.gaps_given_up, 0, "{policy}");
    }
}

#[test]
fn a_leave_of_one_user_keeps_the_server_resident_and_the_last_leave_ends_it() {
    let scenario = scenario(LEAVES, &[]);
    let mut world = FedWorld::build(&scenario, 1, Trace::default());
    world.run(|_| {});
    let room = 0;
    let id = |world: &FedWorld, server: u32, position: usize| {
        let plan = &world.plans[room as usize];
        let user = plan.users_of(server).nth(position).unwrap();
        plan.member_id_of(server, user).unwrap().to_owned()
    };
    let (hs2_first, hs2_second) = (id(&world, 2, 0), id(&world, 2, 1));
    let (hs3_first, hs3_second) = (id(&world, 3, 0), id(&world, 3, 1));
    for observer in 0..4 {
        assert_eq!(
            membership(&mut world, observer, room, &hs2_first).as_deref(),
            Some("join")
        );
        assert_eq!(
            membership(&mut world, observer, room, &hs2_second).as_deref(),
            Some("leave")
        );
        for member in [&hs3_first, &hs3_second] {
            assert_eq!(
                membership(&mut world, observer, room, member).as_deref(),
                Some("leave"),
                "hs{observer}"
            );
        }
    }
    let hour_ms = 3_600_000;
    let holds = |world: &FedWorld, server: u32, event_id: &str| {
        world.servers[server as usize].rooms[&room]
            .state
            .held(event_id)
            .is_some_and(|held| matches!(held.fate, Fate::Accepted { .. }))
    };
    let messages: Vec<(u64, String)> = world
        .sent
        .iter()
        .filter(|sent| sent.message)
        .map(|sent| (sent.at_ms, sent.event_id.clone()))
        .collect();
    let after_first_leave: Vec<&String> = messages
        .iter()
        .filter(|(at_ms, _)| *at_ms > 6 * hour_ms + 60_000)
        .map(|(_, id)| id)
        .collect();
    assert!(
        after_first_leave.len() > 20,
        "traffic after the first leave"
    );
    for event_id in &after_first_leave {
        assert!(holds(&world, 2, event_id), "hs2 stays resident: {event_id}");
    }
    // After hs3's last user left, nothing new reaches hs3 (it is not resident any more).
    let after_last_leave: Vec<&String> = messages
        .iter()
        .filter(|(at_ms, _)| *at_ms > 9 * hour_ms + 60_000)
        .map(|(_, id)| id)
        .collect();
    assert!(after_last_leave.len() > 20, "traffic after the last leave");
    for event_id in &after_last_leave {
        assert!(!holds(&world, 3, event_id), "hs3 left: {event_id}");
        assert!(holds(&world, 2, event_id));
    }
    assert_eq!(world.counters.local_joins, 4, "one further user per server");
}

#[test]
fn several_users_per_server_are_byte_identical_twice_and_with_kicks_all_checks_pass() {
    let sets = [
        "rooms.kicks_per_room_per_day=24",
        "rooms.bans_per_room_per_day=12",
        "rooms.ban_duration=30m",
    ];
    let scenario = scenario(MULTI, &sets);
    let (first, summary) = run(&scenario, 2, "det-a");
    let (second, _) = run(&scenario, 2, "det-b");
    assert_files_equal(
        &first,
        &second,
        &["summary.json", "timeseries.csv", "servers.csv"],
        "two runs of seed 2",
    );
    all_checks_pass(&summary);
    assert!(metric(&summary, "kicks_sent") > 0.0);
    assert!(metric(&summary, "rejoins_started") > 0.0);
    assert!(metric(&summary, "local_joins") > 0.0);
    assert_eq!(metric(&summary, "rooms_disagreeing_at_end"), 0.0);
    for dir in [first, second] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_rotation_re_queries_every_users_member_event() {
    // RQ7 with 3 users of every server in every room: each observer re-queries the rotating
    // server's member event once per member key, 3x the storm with one user per server.
    let file = std::path::Path::new("scenarios/rq7-requery-storm.toml");
    let mut requeries = Vec::new();
    for users in [1, 3] {
        let sets: Vec<String> = [
            "rooms.servers=12".to_owned(),
            "rooms.servers_per_room.min=12".to_owned(),
            "rooms.servers_per_room.max=12".to_owned(),
            "rooms.rooms=3".to_owned(),
            "rooms.users_per_server.min=3".to_owned(),
            "rooms.users_per_server.max=3".to_owned(),
            format!("rooms.members_per_server.min={users}"),
            format!("rooms.members_per_server.max={users}"),
        ]
        .to_vec();
        let scenario = fedsim::scenario::load(Some(file), &sets).unwrap();
        let (dir, summary) = run(&scenario, 1, &format!("rq7-{users}"));
        all_checks_pass(&summary);
        assert_eq!(metric(&summary, "message_coverage"), 1.0);
        requeries.push(metric(&summary, "storm_requeries_sent"));
        let _ = std::fs::remove_dir_all(dir);
    }
    // 3 rooms x 11 observers x users.
    assert_eq!(requeries, vec![33.0, 99.0]);
}
