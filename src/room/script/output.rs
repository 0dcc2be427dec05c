//! What a scripted reproduction writes, as bytes (the caller writes them atomically):
//! `summary.json` (checks with expectation and result, the step log, each server's final view
//! with a late joiner's bitrot, and the room metrics), `timeline.csv` (every server's client timeline, one row per held
//! event) and `dag.dot` (the room's DAG, one node per event held by at least one server, edges
//! to prev events, coloured and labelled by each server's outcome; `dot -Tsvg dag.dot`), plus
//! `dag-NAME.dot`, the same view at each checkpoint step.
//!
//! Everything is ordered (script order, creation order, sorted maps), so the same script gives
//! byte-identical files.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::run::Run;
use crate::metrics::rounded;
use crate::room::metrics;

/// The output files of a run, by file name, in a fixed order.
pub fn files(run: &mut Run) -> Vec<(String, Vec<u8>)> {
    let mut summary = serde_json::to_string_pretty(&summary(run)).expect("a JSON value");
    summary.push('\n');
    let mut files = vec![
        ("summary.json".to_owned(), summary.into_bytes()),
        ("timeline.csv".to_owned(), timeline_csv(run)),
        ("dag.dot".to_owned(), dag_dot(run, None).into_bytes()),
    ];
    for (checkpoint, dot) in &run.dag_snapshots {
        files.push((format!("dag-{checkpoint}.dot"), dot.clone().into_bytes()));
    }
    files
}

/// Resident servers, in script order.
fn residents(run: &Run) -> Vec<usize> {
    (0..run.servers.len())
        .filter(|&server| run.servers[server].resident)
        .collect()
}

/// The summary document.
pub fn summary(run: &mut Run) -> Value {
    let checks: Vec<Value> = run
        .script
        .checks
        .iter()
        .zip(&run.results)
        .map(|(check, result)| {
            json!({
                "index": check.index,
                "kind": check.keyword,
                "description": check.description,
                "at": check.at.clone().unwrap_or_else(|| "end".to_owned()),
                "expect": if check.expect_pass { "pass" } else { "fail" },
                "result": if result.passed { "pass" } else { "fail" },
                "met": check.expect_pass == result.passed,
                "observed": result.observed,
            })
        })
        .collect();
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|step| {
            json!({
                "index": step.index,
                "action": step.keyword,
                "at_ms": step.at_ms,
                "event": step.event,
                "notes": step.notes,
            })
        })
        .collect();
    let mut servers = Map::new();
    for index in 0..run.servers.len() {
        let name = run.script.servers[index].name.clone();
        let extremities: Vec<String> = run.servers[index]
            .server
            .room
            .forward_extremities()
            .iter()
            .map(|id| run.event_name(id))
            .collect();
        let mut memberships = Map::new();
        let mut links = Map::new();
        for user in 0..run.users.len() {
            let id = run.users[user].id();
            let user_name = run.script.users[user].name.clone();
            let membership = run.servers[index]
                .server
                .room
                .current_state_event("m.room.member", &id)
                .ok()
                .flatten()
                .and_then(|event| event.membership().map(str::to_owned));
            if let Some(membership) = membership {
                memberships.insert(user_name.clone(), json!(membership));
            }
            if run.users[user].member_key.is_some() {
                let status = run.servers[index].server.links.status(&id);
                links.insert(user_name, json!(format!("{status:?}").to_lowercase()));
            }
        }
        let info = run.member_info(index);
        let mut member_info = Map::new();
        for (member, user_id) in &info {
            member_info.insert(run.user_name(member), json!(user_id));
        }
        let collisions: Vec<String> = metrics::identity_collisions(&info).into_keys().collect();
        let server = &run.servers[index];
        // A late joiner's bitrot: the history from before its join, as it shows it.
        let bitrot = server.late_joined_at_ms.map(|joined_at_ms| {
            let all = metrics::bitrot(&server.server.room, &server.server.links, joined_at_ms, &[]);
            let bucket = &all[0];
            json!({
                "joined_at_ms": joined_at_ms,
                "historical_links": bucket.links,
                "historical_links_verified": bucket.links_verified,
                "historical_messages": bucket.messages,
                "historical_messages_visible": bucket.messages_visible,
            })
        });
        servers.insert(
            name,
            json!({
                "policy": run.script.servers[index].policy.name,
                "online": server.online,
                "resident": server.resident,
                "held_events": server.server.room.dag().len(),
                "visible_events": server.server.room.visible_event_ids().len(),
                "forward_extremities": extremities,
                "memberships": memberships,
                "links": links,
                "member_info": member_info,
                "identity_collisions": collisions,
                "late_joiner_bitrot": bitrot,
            }),
        );
    }
    let residents = residents(run);
    let views = run.message_views(&residents);
    let matrix = metrics::divergence_matrix(&views);
    let mut hidden = Map::new();
    for share in metrics::hidden_shares(&views) {
        hidden.insert(
            share.server.clone(),
            json!({
                "room_messages": share.room_messages,
                "held": share.held,
                "visible": share.visible,
                "hidden": share.hidden,
                "hidden_share": rounded(share.hidden_share),
                "hidden_by_reason": share.hidden_by_reason,
            }),
        );
    }
    let mut orphans = Map::new();
    for view in &views {
        let found = metrics::orphans(view);
        orphans.insert(
            found.server.clone(),
            json!({
                "visible": found.visible,
                "reply_orphans": found.reply_orphans,
                "follow_orphans": found.follow_orphans,
                "orphans": found.orphans,
                "orphan_ratio": rounded(found.orphan_ratio),
            }),
        );
    }
    // Containment of each compromised member's link: when each server in the room other than
    // the member's own first had it unverified after the compromise.
    let mut containment = Map::new();
    for (&user, &start_ms) in &run.compromised_at_ms {
        let id = run.users[user].id();
        let home = run.script.users[user].server;
        let mut unverified_at = Map::new();
        let mut times = Vec::new();
        for &server in residents.iter().filter(|&&server| server != home) {
            let at = metrics::unverified_since(&run.servers[server].server.links, &id, start_ms);
            unverified_at.insert(run.script.servers[server].name.clone(), json!(at));
            times.push(at);
        }
        let found = metrics::containment(&times, start_ms);
        containment.insert(
            run.script.users[user].name.clone(),
            json!({
                "compromised_at_ms": start_ms,
                "observers": found.observers,
                "p50_ms": found.p50_ms,
                "p95_ms": found.p95_ms,
                "p100_ms": found.p100_ms,
                "unverified_at_ms": unverified_at,
            }),
        );
    }
    let all_met = run.all_met();
    json!({
        "scenario": run.script.name,
        "room_version": run.script.servers[0].policy.room_version.id,
        "all_met": all_met,
        "checks": checks,
        "steps": steps,
        "servers": servers,
        "metrics": {
            "servers": matrix.servers,
            "divergence_matrix": matrix
                .matrix
                .iter()
                .map(|row| row.iter().map(|&value| rounded(value)).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "divergence_mean": rounded(matrix.mean),
            "divergence_max": rounded(matrix.max),
            "visible_somewhere_hidden_elsewhere":
                rounded(metrics::visible_somewhere_hidden_elsewhere(&views)),
            "hidden": hidden,
            "orphans": orphans,
            "containment": containment,
        },
    })
}

/// One row per (server, held event) in the order each server processed them.
pub fn timeline_csv(run: &Run) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([
            "server",
            "position",
            "event",
            "event_id",
            "type",
            "sender",
            "received_at_ms",
            "path",
            "shown",
        ])
        .expect("writing to memory cannot fail");
    for index in 0..run.servers.len() {
        let room = &run.servers[index].server.room;
        for (position, entry) in room.timeline().iter().enumerate() {
            let path = room
                .held(&entry.event_id)
                .map_or("", |held| held.path.name());
            writer
                .write_record([
                    run.script.servers[index].name.clone(),
                    position.to_string(),
                    run.event_name(&entry.event_id),
                    entry.event_id.clone(),
                    entry.event_type.clone(),
                    run.user_name(&entry.sender),
                    entry.at_ms.to_string(),
                    path.to_owned(),
                    run.shown_id(index, &entry.event_id),
                ])
                .expect("writing to memory cannot fail");
        }
    }
    writer.into_inner().expect("writing to memory cannot fail")
}

/// The fill colour of a node from every resident server's outcome: any rejection, else any
/// soft-fail, else a resident server that lacks it, else a label, else accepted everywhere.
fn colour(outcomes: &[String]) -> &'static str {
    if outcomes.iter().any(|shown| shown.contains("rejected")) {
        "salmon"
    } else if outcomes.iter().any(|shown| shown.contains("soft-failed")) {
        "orange"
    } else if outcomes.iter().any(|shown| shown == "not held") {
        "lightblue"
    } else if outcomes.iter().any(|shown| shown == "labelled") {
        "khaki"
    } else {
        "palegreen"
    }
}

/// The Graphviz view of the room's DAG as the servers see it now; `checkpoint` names the
/// checkpoint step it is taken at (`None` = the end of the script).
pub fn dag_dot(run: &Run, checkpoint: Option<&str>) -> String {
    let residents = residents(run);
    let mut out = String::new();
    out.push_str(&format!(
        "// fedsim repro {} ({}): the room's DAG. One node per event held by at least one server;\n\
         // edges point to prev events. Each node lists every server's outcome. Fill: salmon =\n\
         // rejected somewhere, orange = soft-failed somewhere, lightblue = not held by a server\n\
         // in the room, khaki = labelled somewhere, palegreen = accepted everywhere; a red\n\
         // border marks an attacker's event. Render: dot -Tsvg FILE.dot -o FILE.svg\n",
        run.script.name,
        checkpoint.map_or_else(|| "end".to_owned(), |name| format!("at checkpoint {name}"))
    ));
    out.push_str("digraph room {\n  rankdir=BT;\n");
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];\n",
    );
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for (name, pdu) in &run.events {
        let held_anywhere = run
            .servers
            .iter()
            .any(|server| server.server.room.holds(&pdu.event_id));
        if !held_anywhere {
            continue;
        }
        nodes.insert(pdu.event_id.clone());
        let outcomes: Vec<String> = residents
            .iter()
            .map(|&server| run.shown_id(server, &pdu.event_id))
            .collect();
        let mut label = format!(
            "{name}\\n{} · {}",
            pdu.event_type,
            run.user_name(&pdu.sender)
        );
        if let Some(key) = &pdu.state_key
            && pdu.event_type == "m.room.member"
        {
            let membership = pdu.membership().unwrap_or("?");
            label.push_str(&format!(" → {} {membership}", run.user_name(key)));
        }
        let attacker = run.attacker_made.contains(&pdu.event_id);
        if attacker {
            label.push_str(" (attacker)");
        }
        for (&server, shown) in residents.iter().zip(&outcomes) {
            label.push_str(&format!("\\n{}: {shown}", run.script.servers[server].name));
        }
        let border = if attacker {
            ", color=\"red\", penwidth=2"
        } else {
            ""
        };
        out.push_str(&format!(
            "  \"{name}\" [label=\"{label}\", fillcolor=\"{}\"{border}];\n",
            colour(&outcomes)
        ));
    }
    for (name, pdu) in &run.events {
        if !nodes.contains(&pdu.event_id) {
            continue;
        }
        for prev in &pdu.prev_events {
            if nodes.contains(prev) {
                out.push_str(&format!("  \"{name}\" -> \"{}\";\n", run.event_name(prev)));
            }
        }
    }
    out.push_str("}\n");
    out
}
