//! Building the room world from a scenario and a seed: servers with users, key publishers and
//! warm key caches, room plans (heavy-tailed sizes), the network and the first events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::engine::{EventQueue, SimRng, Trace};
use crate::matrix::member_keys::member_signing_key;
use crate::matrix::signing::ServerSigningKey;
use crate::net::{DomainState, LatencyDistribution, Network, ServerId};
use crate::room::memo::CheckMemo;
use crate::room::policy::RoomPolicy;
use crate::scenario::{CountSpec, RoomActionKind, Scenario, server_name};
use crate::server::absolute_ms;
use crate::server::key_cache::{KeyCache, KeyCacheOutput};
use crate::server::memo::VerifyMemo;
use crate::server::policy::KeyPolicy;
use crate::server::publisher::KeyPublisher;

use super::{Counters, Ev, FedWorld, Homeserver, RoomIndex, RoomPlan, ServerStats};
use crate::room::links::UnsettledTally;

/// The member key of `user` of `server` in `room` (MSC4430 rooms), from its own random stream.
pub(crate) fn member_key(
    seed: u64,
    room: RoomIndex,
    server: ServerId,
    user: u32,
) -> ServerSigningKey {
    let entity = (u64::from(room) << 40) | (u64::from(server) << 20) | u64::from(user);
    member_signing_key(&SimRng::stream(seed, "member-keys", entity).bytes32())
}

/// The room-layer and key-layer policies of a preset name (presets the key layer does not
/// distinguish use P1's key policy).
pub fn policies(name: &str) -> (RoomPolicy, KeyPolicy) {
    let room = RoomPolicy::preset(name).unwrap_or(RoomPolicy::P1);
    let mut key = KeyPolicy::preset(name).unwrap_or_else(KeyPolicy::msc4430);
    key.preset = name.to_owned();
    (room, key)
}

/// A count drawn from `spec`: uniform on `min..=max`, or bounded Zipf with the exponent.
pub(crate) fn draw_count(spec: &CountSpec, rng: &mut SimRng) -> u32 {
    match spec.exponent {
        None => rng.between(u64::from(spec.min), u64::from(spec.max)) as u32,
        Some(exponent) => {
            let weights: Vec<f64> = (spec.min..=spec.max)
                .map(|k| f64::from(k).powf(-exponent))
                .collect();
            let total: f64 = weights.iter().sum();
            let mut target = rng.unit_f64() * total;
            for (offset, weight) in weights.iter().enumerate() {
                if target < *weight {
                    return spec.min + offset as u32;
                }
                target -= weight;
            }
            spec.max
        }
    }
}

/// `server`'s planned users in `room`: its `first` user, then further distinct users of its
/// `user_count` (sorted) up to a count drawn from `spec` (capped at the server's users), from
/// the stream `room-members`/(room, server).
fn further_users(
    seed: u64,
    room: RoomIndex,
    server: ServerId,
    first: u32,
    user_count: u32,
    spec: &CountSpec,
) -> Vec<(ServerId, u32)> {
    let mut rng = SimRng::stream(
        seed,
        "room-members",
        (u64::from(room) << 32) | u64::from(server),
    );
    let count = draw_count(spec, &mut rng).min(user_count) as usize;
    // A partial Fisher-Yates shuffle of the server's other users.
    let mut pool: Vec<u32> = (0..user_count).filter(|user| *user != first).collect();
    let extra = count.saturating_sub(1).min(pool.len());
    for index in 0..extra {
        let pick = index + rng.below((pool.len() - index) as u64) as usize;
        pool.swap(index, pick);
    }
    let mut further: Vec<u32> = pool[..extra].to_vec();
    further.sort_unstable();
    std::iter::once((server, first))
        .chain(further.into_iter().map(|user| (server, user)))
        .collect()
}

/// The servers each server shares a planned room with (its key-cache slots), ascending and
/// without itself: for each server, the member servers of its rooms marked in a bitset of all
/// servers and read back in order. The same sets as inserting every pair of co-members into a
/// `BTreeSet` per server, at Σ room size² bit writes instead of as many tree inserts.
fn shared_servers(server_count: u32, plans: &[RoomPlan]) -> Vec<Vec<ServerId>> {
    shared_servers_of_rooms(
        server_count,
        plans
            .iter()
            .map(|plan| plan.members.iter().map(|&(server, _)| server).collect())
            .collect(),
    )
}

/// [`shared_servers`] for rooms given as their member servers (in any order, repeats allowed).
fn shared_servers_of_rooms(server_count: u32, rooms: Vec<Vec<ServerId>>) -> Vec<Vec<ServerId>> {
    // Each room's member servers once (a server is listed once per user it has in the room).
    let room_servers: Vec<Vec<ServerId>> = rooms
        .into_iter()
        .map(|mut servers| {
            servers.sort_unstable();
            servers.dedup();
            servers
        })
        .collect();
    let mut rooms_of: Vec<Vec<u32>> = vec![Vec::new(); server_count as usize];
    for (room, servers) in room_servers.iter().enumerate() {
        for &server in servers {
            rooms_of[server as usize].push(room as u32);
        }
    }
    let mut marked = vec![0u64; (server_count as usize).div_ceil(64)];
    let mut shared = Vec::with_capacity(server_count as usize);
    for (server, rooms) in rooms_of.iter().enumerate() {
        for &room in rooms {
            for &other in &room_servers[room as usize] {
                marked[other as usize / 64] |= 1 << (other % 64);
            }
        }
        marked[server / 64] &= !(1 << (server % 64));
        let count: u32 = marked.iter().map(|word| word.count_ones()).sum();
        let mut servers = Vec::with_capacity(count as usize);
        for (word_index, word) in marked.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                servers.push((word_index * 64) as ServerId + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        shared.push(servers);
    }
    shared
}

impl FedWorld {
    /// Builds the room world of `scenario` (which has a `[rooms]` table) for `seed`.
    pub fn build(scenario: &Scenario, seed: u64, trace: Trace) -> FedWorld {
        let _crypto = crate::matrix::crypto_mode::enter(scenario.crypto);
        let config = scenario
            .rooms
            .clone()
            .expect("the room world needs [rooms]");
        let (room_policy, key_policy) = policies(&config.policy);
        let version = room_policy.room_version;
        let server_count = config.servers;
        let lifetime_ms = config.key_lifetime.ms();
        // Users and room plans.
        let users: Vec<Vec<String>> = (0..server_count)
            .map(|server| {
                let mut rng = SimRng::stream(seed, "users", u64::from(server));
                let count = draw_count(&config.users_per_server, &mut rng);
                (0..count).map(|user| format!("u{user}")).collect()
            })
            .collect();
        let mut plans = Vec::new();
        for room in 0..config.rooms {
            let mut rng = SimRng::stream(seed, "room-plan", u64::from(room));
            // Bystanders (the last `bystanders` servers) are in no planned room.
            let room_servers = server_count - config.bystanders;
            let size = draw_count(&config.servers_per_room, &mut rng).min(room_servers);
            // A partial Fisher-Yates shuffle picks `size` distinct servers; the first creates.
            let mut pool: Vec<ServerId> = (0..room_servers).collect();
            let mut members = Vec::new();
            for index in 0..size as usize {
                let pick = index + rng.below((pool.len() - index) as u64) as usize;
                pool.swap(index, pick);
                let server = pool[index];
                let user = rng.below(users[server as usize].len() as u64) as u32;
                members.push((server, user));
            }
            // The member with the smallest server index creates the room (scenario authors can
            // tell which server holds the power).
            members.sort_unstable();
            let creator = members[0];
            // Further users of each member server (`rooms.members_per_server`), listed after
            // the server's first user; drawn from their own stream, and only when asked for, so
            // the plan above (and every other draw) stays the same.
            if config.members_per_server.max > 1 {
                members = members
                    .into_iter()
                    .flat_map(|(server, first)| {
                        further_users(
                            seed,
                            room,
                            server,
                            first,
                            users[server as usize].len() as u32,
                            &config.members_per_server,
                        )
                    })
                    .collect();
            }
            plans.push(RoomPlan {
                room_id: None,
                creator,
                members,
                member_ids: Vec::new(),
                late: BTreeSet::new(),
                message_rng: SimRng::stream(seed, "room-messages", u64::from(room)),
                join_rng: SimRng::stream(seed, "member-joins", u64::from(room)),
                topic_rng: SimRng::stream(seed, "room-topics", u64::from(room)),
                reply_rng: SimRng::stream(seed, "room-replies", u64::from(room)),
            });
        }
        for action in &config.actions {
            if action.kind != RoomActionKind::JoinLate {
                continue;
            }
            for server in action.servers.iter().filter_map(|r| r.index(server_count)) {
                for (room, plan) in plans.iter_mut().enumerate() {
                    if action.room.is_some_and(|only| only as usize != room) {
                        continue;
                    }
                    let planned = plan.members.iter().any(|(member, _)| *member == server);
                    if !planned && action.room.is_some() {
                        plan.members.push((server, 0));
                    }
                    if plan.creator.0 != server
                        && plan.members.iter().any(|(member, _)| *member == server)
                    {
                        plan.late.insert(server);
                    }
                }
            }
        }
        for (room, plan) in plans.iter_mut().enumerate() {
            plan.member_ids = plan
                .members
                .iter()
                .map(|&(server, user)| {
                    if version.member_keys {
                        let key = member_key(seed, room as RoomIndex, server, user);
                        crate::matrix::member_keys::member_key_user_id(&key.verifying_key())
                    } else {
                        format!(
                            "@{}:{}",
                            users[server as usize][user as usize],
                            server_name(server)
                        )
                    }
                })
                .collect();
        }
        // RQ4 churn (server lifetimes, random rotations) runs as generated actions.
        let mut config = config;
        config.actions.extend(super::churn::churn_actions(
            &config,
            seed,
            &plans,
            scenario.duration.ms(),
        ));
        let newcomers = super::churn::newcomers(&plans);
        // The domains each server shares a room with (its key-cache slots), ascending.
        let shared = shared_servers(server_count, &plans);
        let key_cache_slots: u64 = shared.iter().map(|domains| domains.len() as u64).sum();
        // Publishers: each key response made at a random time within one lifetime before t = 0.
        let mut verify_memo = VerifyMemo::new(server_count as usize);
        let mut publishers = Vec::new();
        let mut published = Vec::new();
        for server in 0..server_count {
            let name = server_name(server);
            let mut publisher = KeyPublisher::new(
                name.clone(),
                lifetime_ms,
                SimRng::stream(seed, "key-seeds", u64::from(server)),
            );
            let phase_ms = SimRng::stream(seed, "key-phase", u64::from(server)).below(lifetime_ms);
            let made_at_abs_ms = absolute_ms(0) - phase_ms as i64;
            let body = publisher.publish_at(made_at_abs_ms);
            let keys = verify_memo
                .check_direct(server, &name, &body)
                .ok()
                .flatten()
                .expect("a fresh key response verifies");
            published.push((body, keys, made_at_abs_ms));
            publishers.push(publisher);
        }
        let mut queue = EventQueue::new();
        let mut servers = Vec::new();
        let mut out: Vec<KeyCacheOutput> = Vec::new();
        // Warm caches: every slot as if its domain's published response had been fetched when
        // it was made, its first re-check timer set. When that start is the same in every cache
        // (the policy draws nothing for it), each domain's warm slot is made once and shared
        // until a cache changes it, and the timers are pushed when due (`InitialTimers`), under
        // the sequence numbers their pushes here would have taken.
        let warm_starts = KeyCache::warm_start_is_shared(&key_policy).then(|| {
            KeyCache::warm_starts(
                &key_policy,
                published
                    .iter()
                    .map(|(_, keys, made_at_abs_ms)| (Arc::clone(keys), *made_at_abs_ms)),
            )
        });
        // Whether each warm start set a timer: for every domain or for none (a policy either
        // schedules re-checks or does not).
        let warm_timers = warm_starts
            .as_ref()
            .is_some_and(|(_, due)| due.iter().all(Option::is_some));
        if let Some((_, due)) = &warm_starts {
            assert!(
                warm_timers || due.iter().all(Option::is_none),
                "a policy's warm start sets a timer for every domain or for none"
            );
        }
        let mut first_seq = Vec::new();
        for ((server, publisher), domains) in publishers.into_iter().enumerate().zip(shared) {
            let rng = SimRng::stream(seed, "key-cache", server as u64);
            // A newcomer to the federation has fetched nobody's keys yet.
            let newcomer = newcomers.contains(&(server as ServerId));
            let cache = match &warm_starts {
                Some((warm_slots, _)) if !newcomer => {
                    let timers = if warm_timers { domains.len() as u64 } else { 0 };
                    first_seq.push(Some(queue.reserve_seqs(timers)));
                    KeyCache::with_warm_slots(key_policy.clone(), &domains, 0, rng, warm_slots)
                }
                _ => {
                    first_seq.push(None);
                    let mut cache = KeyCache::new(key_policy.clone(), &domains, 0, rng);
                    for (slot, domain) in domains.iter().enumerate() {
                        if newcomer {
                            continue;
                        }
                        let (_, keys, made_at_abs_ms) = &published[*domain as usize];
                        cache.warm(0, slot as u32, Arc::clone(keys), *made_at_abs_ms, &mut out);
                    }
                    cache
                }
            };
            for output in out.drain(..) {
                if let KeyCacheOutput::SetTimer {
                    at_ms,
                    slot,
                    generation,
                } = output
                {
                    queue.push(
                        at_ms,
                        Ev::KeyTimer {
                            server: server as ServerId,
                            slot,
                            generation,
                        },
                    );
                }
            }
            let (body, keys, _) = &published[server];
            servers.push(Homeserver {
                name: server_name(server as ServerId),
                publisher,
                own_keys: Arc::clone(keys),
                own_body: Arc::clone(body),
                cache,
                slot_of: super::keys::SlotOf::with_planned(domains),
                users: users[server].clone(),
                rooms: super::vec_map::VecMap::new(),
                outbox: Default::default(),
                key_waiters: BTreeMap::new(),
                resigned: BTreeMap::new(),
                archive: BTreeMap::new(),
                notary_asked: BTreeSet::new(),
                unsettled: UnsettledTally::default(),
                stats: ServerStats::default(),
                epoch: 0,
                deferred: Vec::new(),
            });
        }
        let network = &scenario.network;
        let regions = network.regions.max(1);
        let net = Network::new(
            seed,
            LatencyDistribution::from_scenario(&network.latency),
            network
                .inter_region_latency
                .as_ref()
                .map(LatencyDistribution::from_scenario),
            network.loss,
            (0..server_count).map(|server| server % regions).collect(),
            (0..server_count).map(DomainState::Served).collect(),
        );
        // Rooms are created over the create window; actions at their times; extremity
        // exchange at a random phase per server.
        let mut create_rng = SimRng::stream(seed, "room-create", 0);
        for room in 0..config.rooms {
            let at_ms = create_rng.below(config.create_window.ms().max(1));
            queue.push(at_ms, Ev::CreateRoom { room });
        }
        for (index, action) in config.actions.iter().enumerate() {
            queue.push(
                action.at.ms(),
                Ev::Action {
                    index: index as u32,
                },
            );
        }
        if let Some(interval) = config.extremity_exchange_interval {
            let mut phase_rng = SimRng::stream(seed, "exchange-phase", 0);
            for server in 0..server_count {
                let at_ms = phase_rng.below(interval.ms());
                queue.push(at_ms, Ev::Exchange { server });
            }
        }
        let window_ms = scenario.metrics.sample_interval.ms();
        let shared_facts = config
            .share_facts
            .then(crate::room::shared::SharedEventFacts::new);
        let storm = super::storm::StormLog::new(&config);
        FedWorld {
            seed,
            scenario: scenario.clone(),
            config,
            room_policy,
            key_policy,
            version,
            queue,
            net,
            servers,
            plans,
            room_of_id: HashMap::default(),
            memo: CheckMemo::new(),
            key_cache_slots,
            shared_facts,
            verify_memo,
            requests: HashMap::default(),
            next_request: 0,
            counters: Counters::default(),
            samples: Vec::new(),
            rooms_disagreeing: Vec::new(),
            last_heal_ms: None,
            agreed_after_heal_ms: None,
            agreement_watch_until_ms: None,
            attacker: Default::default(),
            adv: Default::default(),
            key_adv: Default::default(),
            workload: Default::default(),
            sent: Vec::new(),
            trace,
            events_processed: 0,
            end_ms: scenario.duration.ms(),
            window_ms,
            next_sample_ms: 0,
            key_outputs: Vec::new(),
            sign_nanos: 0,
            events_signed: 0,
            cosignatures_made: 0,
            join_attempts: BTreeMap::new(),
            join_users: BTreeMap::new(),
            wire: HashMap::new(),
            wire_sizes: HashMap::new(),
            wire_facts: HashMap::default(),
            stale_requeried: BTreeSet::new(),
            bitrot_rows: Vec::new(),
            bitrot_taken: BTreeSet::new(),
            storm,
            initial_timers: match warm_starts {
                Some((_, due)) => super::keys::InitialTimers::new(&due, first_seq),
                None => super::keys::InitialTimers::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every pair of co-members of a room, inserted into a set per server.
    fn shared_by_pairs(server_count: u32, rooms: &[Vec<ServerId>]) -> Vec<Vec<ServerId>> {
        let mut shared = vec![BTreeSet::new(); server_count as usize];
        for room in rooms {
            for &a in room {
                for &b in room {
                    if a != b {
                        shared[a as usize].insert(b);
                    }
                }
            }
        }
        shared
            .into_iter()
            .map(|set| set.into_iter().collect())
            .collect()
    }

    #[test]
    fn the_bitset_finds_the_same_shared_servers_as_every_pair() {
        let mut rng = SimRng::stream(7, "shared-servers-test", 0);
        for server_count in [1, 2, 63, 64, 65, 130, 300] {
            for _ in 0..20 {
                let rooms: Vec<Vec<ServerId>> = (0..rng.between(0, 12))
                    .map(|_| {
                        // Repeats allowed: a server listed once per user in the room.
                        (0..rng.between(1, 40))
                            .map(|_| rng.below(u64::from(server_count)) as ServerId)
                            .collect()
                    })
                    .collect();
                assert_eq!(
                    shared_servers_of_rooms(server_count, rooms.clone()),
                    shared_by_pairs(server_count, &rooms),
                    "{server_count} servers, rooms {rooms:?}"
                );
            }
        }
    }
}
