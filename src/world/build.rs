//! Building a world from a scenario and a seed.

use crate::engine::time::DAY_MS;
use crate::engine::{EventQueue, SimRng, Trace};
use crate::matrix::signing::{KeyId, ServerSigningKey};
use crate::net::{DomainState, LatencyDistribution, Network, ServerId};
use crate::scenario::{CountDistribution, Scenario};
use crate::server::absolute_ms;
use crate::server::key_cache::KeyCache;
use crate::server::memo::VerifyMemo;
use crate::server::notary::Notary;
use crate::server::policy::Recheck;
use crate::server::publisher::KeyPublisher;

use super::{Event, Observer, Role, Totals, World};

/// A name usable inside a domain name: lower case letters, digits and '-'.
pub fn slug(name: &str) -> String {
    let mut slug = String::new();
    for character in name.chars() {
        if character.is_ascii_alphanumeric() {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

/// Whether the `index`-th domain of a group is dead: spread evenly, so every prefix of N
/// domains has about `fraction * N` dead ones.
fn is_dead(index: u32, fraction: f64) -> bool {
    let before = (f64::from(index) * fraction).floor();
    let after = (f64::from(index + 1) * fraction).floor();
    after > before
}

impl World {
    /// Builds the world of `scenario` for `seed`: every origin publishes a key response made at
    /// a random time within one lifetime before the start, and every observer starts with those
    /// responses verified in its cache (a warm start: the steady state, not a cold-start burst).
    pub fn build(scenario: &Scenario, seed: u64, trace: Trace) -> World {
        // Warm-start responses are signed here, in the scenario's crypto mode.
        let _crypto = crate::matrix::crypto_mode::enter(scenario.crypto);
        let federation = &scenario.federation;
        let mut domain_names = Vec::new();
        let mut region_of = Vec::new();
        let mut roles = Vec::new();
        let mut publishers = Vec::new();
        let mut domain_states = Vec::new();
        let mut dead = Vec::new();
        let mut made_at_abs_ms = Vec::new();
        let mut groups: Vec<(String, Vec<ServerId>)> = Vec::new();
        for group in &federation.domain_groups {
            let group_slug = slug(&group.name);
            let mut members = Vec::new();
            for index in 0..group.count {
                let server = domain_names.len() as ServerId;
                let name = format!("{group_slug}-{index}.example");
                let lifetime_ms = group.key_lifetime.ms();
                let mut publisher = KeyPublisher::new(
                    name.clone(),
                    lifetime_ms,
                    SimRng::stream(seed, "key-seeds", u64::from(server)),
                );
                let phase_ms =
                    SimRng::stream(seed, "key-phase", u64::from(server)).below(lifetime_ms);
                let made_at = absolute_ms(0) - phase_ms as i64;
                publisher.publish_at(made_at);
                made_at_abs_ms.push(made_at);
                domain_names.push(name);
                region_of.push(group.region);
                roles.push(Role::Origin);
                publishers.push(Some(publisher));
                let is_dead = is_dead(index, group.dead_fraction);
                dead.push(is_dead);
                domain_states.push(if is_dead {
                    DomainState::dead(group.dead_mode, 503)
                } else {
                    DomainState::Served(server)
                });
                members.push(server);
            }
            groups.push((group.name.clone(), members));
        }
        let mut notaries = Vec::new();
        let mut notary_servers = Vec::new();
        let mut notary_members = Vec::new();
        for index in 0..federation.notaries {
            let server = domain_names.len() as ServerId;
            let name = format!("notary-{index}.example");
            let seed_bytes = SimRng::stream(seed, "key-seeds", u64::from(server)).bytes32();
            let key =
                ServerSigningKey::from_seed(KeyId::ed25519("n1").expect("valid"), &seed_bytes);
            notaries.push(Notary::new(name.clone(), key));
            notary_servers.push(server);
            notary_members.push(server);
            domain_names.push(name);
            region_of.push(0);
            roles.push(Role::Notary(index));
            publishers.push(None);
            domain_states.push(DomainState::Served(server));
            dead.push(false);
        }
        groups.push(("notaries".to_owned(), notary_members));
        let notary_identities: Vec<_> = notaries
            .iter()
            .map(|notary| notary.identity().clone())
            .collect();

        let end_ms = scenario.duration.ms();
        let window_ms = scenario.metrics.sample_interval.ms();
        let mut memo = VerifyMemo::new(domain_names.len());
        let mut queue = EventQueue::new();
        let mut observers = Vec::new();
        for (group_index, observer_group) in scenario.observers.iter().enumerate() {
            let policy = observer_group.policy.resolve().expect("validated");
            let (domain_group_index, domain_group) = federation
                .domain_groups
                .iter()
                .enumerate()
                .find(|(_, group)| group.name == observer_group.domains)
                .expect("validated");
            let domain_ids = groups[domain_group_index].1.clone();
            let domain_group_start = domain_ids[0];
            let counts: Vec<u32> = match &observer_group.known_domains_distribution {
                None => observer_group.known_domains.clone(),
                Some(distribution) => {
                    let mut rng = SimRng::stream(seed, "known-domains", group_index as u64);
                    (0..distribution.servers)
                        .map(|_| match distribution.kind {
                            CountDistribution::Uniform => rng
                                .between(u64::from(distribution.min), u64::from(distribution.max))
                                as u32,
                            CountDistribution::LogUniform => {
                                let low = f64::from(distribution.min).ln();
                                let high = f64::from(distribution.max).ln();
                                (low + rng.unit_f64() * (high - low)).exp().round() as u32
                            }
                        })
                        .collect()
                }
            };
            let mut members = Vec::new();
            for known in counts {
                let observer_index = observers.len() as u32;
                let server = (domain_names.len() + observers.len()) as ServerId;
                members.push(server);
                let known_ids = &domain_ids[..known as usize];
                let mut cache = KeyCache::new(
                    policy.clone(),
                    known_ids,
                    federation.notaries,
                    SimRng::stream(seed, "key-cache", u64::from(server)),
                );
                let mut outputs = Vec::new();
                for (slot, domain) in known_ids.iter().enumerate() {
                    let publisher = publishers[*domain as usize].as_mut().expect("origin");
                    let body = publisher.response(made_at_abs_ms[*domain as usize]);
                    let keys = memo
                        .check_direct(*domain, &domain_names[*domain as usize], &body)
                        .expect("an origin's own response verifies")
                        .expect("a direct answer has keys");
                    cache.warm(
                        0,
                        slot as u32,
                        keys,
                        made_at_abs_ms[*domain as usize],
                        &mut outputs,
                    );
                }
                for output in outputs {
                    if let crate::server::key_cache::KeyCacheOutput::SetTimer {
                        at_ms,
                        slot,
                        generation,
                    } = output
                    {
                        queue.push(
                            at_ms,
                            Event::Recheck {
                                observer: observer_index,
                                slot,
                                generation,
                            },
                        );
                    }
                }
                let rate = policy.incoming_requests_per_domain_per_day;
                let incoming_mean_gap_ms = if rate > 0.0 {
                    DAY_MS as f64 / rate
                } else {
                    f64::INFINITY
                };
                let mut incoming_rng = SimRng::stream(seed, "incoming", u64::from(server));
                if policy.recheck == Recheck::OnDemand && rate > 0.0 {
                    for slot in 0..known {
                        let first_ms = incoming_rng.exponential(incoming_mean_gap_ms) as u64;
                        queue.push(
                            first_ms.max(1),
                            Event::Incoming {
                                observer: observer_index,
                                slot,
                            },
                        );
                    }
                }
                observers.push(Observer {
                    group: group_index,
                    server,
                    name: format!("{} N={known}", observer_group.name),
                    known_domains: known,
                    key_lifetime_ms: domain_group.key_lifetime.ms(),
                    cache,
                    window_requests: vec![0; (end_ms / window_ms) as usize + 1],
                    requests_to_dead_domains: 0,
                    bytes_received: 0,
                    incoming_mean_gap_ms,
                    incoming_rng,
                    crashed: false,
                    domain_group_start,
                    wakeups: 0,
                    last_wakeup_second: u64::MAX,
                    verifications: 0,
                    transitions: Vec::new(),
                });
                region_of.push(0);
                roles.push(Role::Observer(observer_index));
                publishers.push(None);
            }
            groups.push((observer_group.name.clone(), members));
        }
        let network = &scenario.network;
        let mut net = Network::new(
            seed,
            LatencyDistribution::from_scenario(&network.latency),
            network
                .inter_region_latency
                .as_ref()
                .map(LatencyDistribution::from_scenario),
            network.loss,
            region_of,
            domain_states,
        );
        for (server, is_dead) in dead.iter().enumerate() {
            if *is_dead {
                net.set_server_status(server as ServerId, crate::net::ServerStatus::Departed);
            }
        }
        let mut actions = Vec::new();
        for (phase_index, phase) in scenario.phases.iter().enumerate() {
            for (action_index, action) in phase.actions.iter().enumerate() {
                actions.push((phase.at.ms() + action.at.ms(), phase_index, action_index));
            }
        }
        actions.sort();
        for (index, (at_ms, _, _)) in actions.iter().enumerate() {
            queue.push(
                *at_ms,
                Event::Action {
                    index: index as u32,
                },
            );
        }
        let mut random_partition_rng = SimRng::stream(seed, "random-partitions", 0);
        let rate = network.random_partitions.rate_per_day;
        if rate > 0.0 {
            let first_ms = random_partition_rng.exponential(DAY_MS as f64 / rate) as u64;
            queue.push(first_ms.max(1), Event::RandomPartition);
        }
        let server_count = roles.len();
        World {
            seed,
            scenario: scenario.clone(),
            queue,
            net,
            memo,
            domain_names,
            roles,
            publishers,
            requests_received: vec![0; server_count],
            notaries,
            notary_servers,
            notary_identities,
            observers,
            groups,
            requests: Default::default(),
            next_request: 0,
            actions,
            random_partition_rng,
            next_partition_id: 0,
            trace,
            totals: Totals::default(),
            samples: Vec::new(),
            next_sample_ms: 0,
            window_ms,
            end_ms,
            key_outputs: Vec::new(),
            notary_outputs: Vec::new(),
            events_processed: 0,
            tracker: super::Tracker::default(),
            lying_audience: std::collections::BTreeMap::new(),
            initially_dead: dead[..federation
                .domain_groups
                .iter()
                .map(|g| g.count as usize)
                .sum::<usize>()]
                .to_vec(),
            pushes_sent: 0,
        }
    }
}
