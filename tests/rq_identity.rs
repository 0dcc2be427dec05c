//! RQ14 in the room world: `scenarios/rq14-duplicate-identity.toml` — a server co-signs a second
//! member key claiming its user's localpart; every server of that room shows one user ID for two
//! verified member keys, whatever the policy, and nothing collides elsewhere. P0 cannot express
//! it (no member keys): the scenario is refused with a one-line error.

#[path = "common/world_run.rs"]
mod world_run;

use serde_json::Value;
use world_run::load;

fn run(policy: &str) -> Value {
    let policy_set = format!("rooms.policy={policy}");
    let sets = [policy_set.as_str()];
    let (dir, summary) = world_run::run(
        &load("scenarios/rq14-duplicate-identity.toml", &sets),
        1,
        policy,
    );
    let _ = std::fs::remove_dir_all(&dir);
    summary
}

#[test]
fn every_server_of_the_room_shows_one_user_id_for_two_member_keys() {
    for policy in ["P1", "P5"] {
        let summary = run(policy);
        let metrics = &summary["metrics"];
        assert_eq!(
            metrics["identity_collision_share_in_affected_rooms"],
            Value::from(1.0),
            "{policy}"
        );
        let colliding = metrics["identity_colliding_server_rooms"].as_u64().unwrap();
        assert!(colliding >= 6, "room 0 has 6-12 servers: {colliding}");
        // One collision per colliding server-room: the room with the duplicate only.
        assert_eq!(metrics["identity_collisions"].as_u64().unwrap(), colliding);
        assert!(metrics["identity_server_rooms"].as_u64().unwrap() > colliding);
        for check in summary["checks"].as_array().unwrap() {
            assert_eq!(check["passed"], Value::Bool(true), "{check}");
        }
    }
    let refused = fedsim::scenario::load(
        Some("scenarios/rq14-duplicate-identity.toml".as_ref()),
        &["rooms.policy=P0".to_owned()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("rooms.actions[0].kind") && refused.contains("member keys"),
        "{refused}"
    );
}
