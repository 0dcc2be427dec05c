//! The simulated network and internet naming.
//!
//! - Latency per message from a distribution (constant, uniform, log-normal), plus an extra
//!   distribution between regions; loss per message.
//! - Partitions: symmetric (nothing crosses), asymmetric (each direction loses with its own
//!   probability) and one-way (a to b lost, b to a passes).
//! - Server lifecycle (up, crashed, departed) and domain lifecycle (served by a server, parked,
//!   answering 404, refusing connections, answering another status, re-registered).
//!
//! Every request ends in one [`Outcome`]. Random draws come from one stream per sending server,
//! so what one server sends never changes the draws of another.

use std::sync::Arc;

use crate::engine::SimRng;
use crate::scenario::{DeadMode, Latency, LatencyKind, PartitionKind};

/// Index of a simulated server.
pub type ServerId = u32;
/// Index of a domain name.
pub type DomainId = u32;

/// How a request ended, as HTTP-like values: the key layer's fail-open/closed reading needs
/// each one distinguished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a body.
    Ok(Arc<str>),
    /// 404 Not Found.
    NotFound,
    /// Any other HTTP status.
    Status(u16),
    /// Nothing came back in time (lost, partitioned, parked domain, slow answer).
    Timeout,
    /// Connection refused (server down, or a domain that refuses).
    Refused,
}

impl Outcome {
    /// A short stable label for metrics and traces.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Status(_) => "status",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
        }
    }
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyDistribution {
    Constant(u64),
    Uniform { min_ms: u64, max_ms: u64 },
    LogNormal { median_ms: f64, sigma: f64 },
}

impl LatencyDistribution {
    /// From the scenario's latency table (validated: the needed fields are present).
    pub fn from_scenario(latency: &Latency) -> LatencyDistribution {
        let ms = |value: Option<crate::scenario::Duration>| value.map(|d| d.ms()).unwrap_or(0);
        match latency.kind {
            LatencyKind::Constant => LatencyDistribution::Constant(ms(latency.value)),
            LatencyKind::Uniform => LatencyDistribution::Uniform {
                min_ms: ms(latency.min),
                max_ms: ms(latency.max),
            },
            LatencyKind::LogNormal => LatencyDistribution::LogNormal {
                median_ms: ms(latency.median) as f64,
                sigma: latency.sigma.unwrap_or(0.0),
            },
        }
    }

    /// One draw, in whole milliseconds.
    pub fn sample_ms(&self, rng: &mut SimRng) -> u64 {
        match *self {
            LatencyDistribution::Constant(value_ms) => value_ms,
            LatencyDistribution::Uniform { min_ms, max_ms } => rng.between(min_ms, max_ms),
            LatencyDistribution::LogNormal { median_ms, sigma } => {
                let draw = median_ms * (sigma * rng.standard_normal()).exp();
                // Cap at one hour so a far tail cannot overflow anything.
                draw.round().clamp(0.0, 3_600_000.0) as u64
            }
        }
    }
}

/// One active partition between sides a and b.
#[derive(Debug, Clone)]
pub struct Partition {
    /// An id the world chooses, so one partition can be healed alone.
    pub id: u64,
    pub kind: PartitionKind,
    in_a: Vec<bool>,
    /// `None`: side b is every server not in a.
    in_b: Option<Vec<bool>>,
    pub loss_a_to_b: f64,
    pub loss_b_to_a: f64,
}

impl Partition {
    /// A partition between the servers `a` and `b` (`b = None`: everyone else), over
    /// `server_count` servers.
    pub fn new(
        kind: PartitionKind,
        server_count: usize,
        a: &[ServerId],
        b: Option<&[ServerId]>,
    ) -> Partition {
        let mut in_a = vec![false; server_count];
        for server in a {
            in_a[*server as usize] = true;
        }
        let in_b = b.map(|members| {
            let mut in_b = vec![false; server_count];
            for server in members {
                in_b[*server as usize] = true;
            }
            in_b
        });
        let (loss_a_to_b, loss_b_to_a) = match kind {
            PartitionKind::Symmetric => (1.0, 1.0),
            PartitionKind::OneWay => (1.0, 0.0),
            PartitionKind::Asymmetric => (1.0, 0.5),
        };
        Partition {
            id: 0,
            kind,
            in_a,
            in_b,
            loss_a_to_b,
            loss_b_to_a,
        }
    }

    /// Sets the per-direction loss of an asymmetric partition.
    pub fn with_losses(mut self, loss_a_to_b: f64, loss_b_to_a: f64) -> Partition {
        self.loss_a_to_b = loss_a_to_b;
        self.loss_b_to_a = loss_b_to_a;
        self
    }

    fn in_b(&self, server: ServerId) -> bool {
        match &self.in_b {
            Some(in_b) => in_b[server as usize],
            None => !self.in_a[server as usize],
        }
    }

    /// The probability this partition loses a message from `from` to `to`.
    pub fn loss(&self, from: ServerId, to: ServerId) -> f64 {
        if self.in_a[from as usize] && self.in_b(to) {
            self.loss_a_to_b
        } else if self.in_b(from) && self.in_a[to as usize] {
            self.loss_b_to_a
        } else {
            0.0
        }
    }
}

/// A server's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    Up,
    /// Down until restarted: connections are refused.
    Crashed,
    /// Gone for good.
    Departed,
}

/// What a domain name currently leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Served by this server (which may be up or crashed).
    Served(ServerId),
    /// Parked: nothing answers, requests time out.
    Parked,
    /// Something answers 404 on every path.
    NotFound,
    /// Connections are refused.
    Refused,
    /// Something answers this HTTP status.
    Status(u16),
}

impl DomainState {
    /// The state a decommissioned domain takes for a scenario `mode`.
    pub fn dead(mode: DeadMode, status: u16) -> DomainState {
        match mode {
            DeadMode::NoAnswer => DomainState::Parked,
            DeadMode::NotFound => DomainState::NotFound,
            DeadMode::Refused => DomainState::Refused,
            DeadMode::Status => DomainState::Status(status),
        }
    }
}

/// Where a request to a domain goes, decided when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Delivered to this server after `latency_ms`.
    Deliver { server: ServerId, latency_ms: u64 },
    /// Answered by whatever holds the name (404 or another status) after a round trip.
    Answer {
        outcome_status: Option<u16>,
        round_trip_ms: u64,
    },
    /// Refused after a round trip.
    Refuse { round_trip_ms: u64 },
    /// Never answered: the sender times out.
    Lost,
}

/// The network: latency, loss, partitions, server and domain lifecycles.
pub struct Network {
    latency: LatencyDistribution,
    inter_region_latency: Option<LatencyDistribution>,
    loss: f64,
    region_of: Vec<u32>,
    partitions: Vec<Partition>,
    status_of: Vec<ServerStatus>,
    domains: Vec<DomainState>,
    rng_of: Vec<SimRng>,
    /// Where each name answers from, for the round trip of 404s and refusals: the region of
    /// the last server that held the name.
    domain_region: Vec<u32>,
}

impl Network {
    /// A network over `region_of.len()` servers (all up) and `domains` names.
    pub fn new(
        run_seed: u64,
        latency: LatencyDistribution,
        inter_region_latency: Option<LatencyDistribution>,
        loss: f64,
        region_of: Vec<u32>,
        domains: Vec<DomainState>,
    ) -> Network {
        let server_count = region_of.len();
        let domain_region = domains
            .iter()
            .map(|state| match state {
                DomainState::Served(server) => region_of[*server as usize],
                _ => 0,
            })
            .collect();
        Network {
            latency,
            inter_region_latency,
            loss,
            partitions: Vec::new(),
            status_of: vec![ServerStatus::Up; server_count],
            domains,
            rng_of: (0..server_count as u64)
                .map(|server| SimRng::stream(run_seed, "network", server))
                .collect(),
            region_of,
            domain_region,
        }
    }

    /// Number of servers.
    pub fn server_count(&self) -> usize {
        self.region_of.len()
    }

    /// One-way latency of a message from `from` to a server in `to_region`.
    fn latency_ms(&mut self, from: ServerId, to_region: u32) -> u64 {
        let rng = &mut self.rng_of[from as usize];
        let mut latency_ms = self.latency.sample_ms(rng);
        if self.region_of[from as usize] != to_region
            && let Some(extra) = self.inter_region_latency
        {
            latency_ms += extra.sample_ms(rng);
        }
        latency_ms.max(1)
    }

    /// Whether a message from `from` to `to` gets through (loss and partitions), drawing from
    /// the sender's stream.
    pub fn passes(&mut self, from: ServerId, to: ServerId) -> bool {
        // Combined exactly as before `partition_loss` existed (bit for bit, so no draw moves).
        let mut loss = self.loss;
        for partition in &self.partitions {
            loss = 1.0 - (1.0 - loss) * (1.0 - partition.loss(from, to));
        }
        !self.rng_of[from as usize].chance(loss)
    }

    /// The share of messages from `from` to `to` the active partitions lose (0.0 with none;
    /// 1.0 for a symmetric cut), without the base loss and without a draw.
    pub fn partition_loss(&self, from: ServerId, to: ServerId) -> f64 {
        let mut pass = 1.0;
        for partition in &self.partitions {
            // Independent losses combine: pass only if every one passes.
            pass *= 1.0 - partition.loss(from, to);
        }
        1.0 - pass
    }

    /// The server serving `domain`, if one does.
    pub fn server_of(&self, domain: DomainId) -> Option<ServerId> {
        match self.domains[domain as usize] {
            DomainState::Served(server) => Some(server),
            _ => None,
        }
    }

    /// Routes a request from `from` to `domain`, decided at send time.
    pub fn route_request(&mut self, from: ServerId, domain: DomainId) -> Route {
        let state = self.domains[domain as usize];
        let region = self.domain_region[domain as usize];
        match state {
            DomainState::Served(server) => match self.status_of[server as usize] {
                ServerStatus::Up => {
                    if !self.passes(from, server) {
                        return Route::Lost;
                    }
                    let latency_ms = self.latency_ms(from, self.region_of[server as usize]);
                    Route::Deliver { server, latency_ms }
                }
                ServerStatus::Crashed => {
                    if !self.passes(from, server) {
                        return Route::Lost;
                    }
                    let round_trip_ms = 2 * self.latency_ms(from, region);
                    Route::Refuse { round_trip_ms }
                }
                ServerStatus::Departed => Route::Lost,
            },
            DomainState::Parked => Route::Lost,
            DomainState::NotFound | DomainState::Status(_) | DomainState::Refused => {
                if self.rng_of[from as usize].chance(self.loss) {
                    return Route::Lost;
                }
                let round_trip_ms = 2 * self.latency_ms(from, region);
                match state {
                    DomainState::NotFound => Route::Answer {
                        outcome_status: None,
                        round_trip_ms,
                    },
                    DomainState::Status(status) => Route::Answer {
                        outcome_status: Some(status),
                        round_trip_ms,
                    },
                    _ => Route::Refuse { round_trip_ms },
                }
            }
        }
    }

    /// Sends a response from `from` back to `to`: its latency, or `None` if it is lost.
    pub fn route_response(&mut self, from: ServerId, to: ServerId) -> Option<u64> {
        if !self.passes(from, to) {
            return None;
        }
        Some(self.latency_ms(from, self.region_of[to as usize]))
    }

    /// Adds a partition.
    pub fn partition(&mut self, partition: Partition) {
        assert_eq!(partition.in_a.len(), self.server_count());
        self.partitions.push(partition);
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// Removes the partitions with this id (random partitions end this way).
    pub fn heal_id(&mut self, id: u64) {
        self.partitions.retain(|partition| partition.id != id);
    }

    /// Active partitions.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// A server's region.
    pub fn region_of(&self, server: ServerId) -> u32 {
        self.region_of[server as usize]
    }

    /// A server's lifecycle state.
    pub fn server_status(&self, server: ServerId) -> ServerStatus {
        self.status_of[server as usize]
    }

    /// Sets a server's lifecycle state.
    pub fn set_server_status(&mut self, server: ServerId, status: ServerStatus) {
        self.status_of[server as usize] = status;
    }

    /// What a domain leads to.
    pub fn domain_state(&self, domain: DomainId) -> DomainState {
        self.domains[domain as usize]
    }

    /// Points a domain somewhere else (decommission, re-registration).
    pub fn set_domain_state(&mut self, domain: DomainId, state: DomainState) {
        if let DomainState::Served(server) = state {
            self.domain_region[domain as usize] = self.region_of[server as usize];
        }
        self.domains[domain as usize] = state;
    }

    /// Adds a server (a new owner's server) and returns its id.
    pub fn add_server(&mut self, run_seed: u64, region: u32) -> ServerId {
        let server = self.region_of.len() as ServerId;
        self.region_of.push(region);
        self.status_of.push(ServerStatus::Up);
        self.rng_of
            .push(SimRng::stream(run_seed, "network", u64::from(server)));
        for partition in &mut self.partitions {
            partition.in_a.push(false);
            if let Some(in_b) = partition.in_b.as_mut() {
                in_b.push(false);
            }
        }
        server
    }

    /// Whether a domain is "dead": not served by a server that is up.
    pub fn domain_is_dead(&self, domain: DomainId) -> bool {
        match self.domains[domain as usize] {
            DomainState::Served(server) => self.status_of[server as usize] != ServerStatus::Up,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(servers: u32) -> Network {
        Network::new(
            1,
            LatencyDistribution::Constant(40),
            None,
            0.0,
            vec![0; servers as usize],
            (0..servers).map(DomainState::Served).collect(),
        )
    }

    #[test]
    fn a_served_domain_delivers_after_the_latency() {
        let mut net = network(2);
        assert_eq!(
            net.route_request(0, 1),
            Route::Deliver {
                server: 1,
                latency_ms: 40
            }
        );
        assert_eq!(net.route_response(1, 0), Some(40));
    }

    #[test]
    fn symmetric_partitions_cut_both_directions() {
        let mut net = network(3);
        net.partition(Partition::new(
            PartitionKind::Symmetric,
            3,
            &[0],
            Some(&[1]),
        ));
        assert_eq!(net.route_request(0, 1), Route::Lost);
        assert_eq!(net.route_request(1, 0), Route::Lost);
        // Server 2 is on neither side.
        assert!(matches!(net.route_request(0, 2), Route::Deliver { .. }));
        net.heal();
        assert!(matches!(net.route_request(0, 1), Route::Deliver { .. }));
    }

    #[test]
    fn one_way_partitions_cut_only_a_to_b() {
        let mut net = network(2);
        net.partition(Partition::new(PartitionKind::OneWay, 2, &[0], None));
        assert_eq!(net.route_request(0, 1), Route::Lost);
        // b's request reaches a, but a's response to b is lost: b sees a timeout while a sees
        // the load.
        assert!(matches!(net.route_request(1, 0), Route::Deliver { .. }));
        assert_eq!(net.route_response(0, 1), None);
        assert_eq!(net.route_response(1, 0), Some(40));
    }

    #[test]
    fn asymmetric_partitions_lose_each_direction_at_its_rate() {
        let mut net = network(2);
        net.partition(
            Partition::new(PartitionKind::Asymmetric, 2, &[0], Some(&[1])).with_losses(1.0, 0.25),
        );
        assert_eq!(net.route_request(0, 1), Route::Lost);
        let trials = 4_000;
        let passed = (0..trials).filter(|_| net.passes(1, 0)).count();
        let rate = passed as f64 / trials as f64;
        assert!((rate - 0.75).abs() < 0.03, "b to a passed {rate}");
    }

    #[test]
    fn each_domain_state_gives_its_route() {
        let mut net = network(3);
        net.set_domain_state(1, DomainState::Parked);
        assert_eq!(net.route_request(0, 1), Route::Lost);
        net.set_domain_state(1, DomainState::NotFound);
        assert_eq!(
            net.route_request(0, 1),
            Route::Answer {
                outcome_status: None,
                round_trip_ms: 80
            }
        );
        net.set_domain_state(1, DomainState::Status(503));
        assert_eq!(
            net.route_request(0, 1),
            Route::Answer {
                outcome_status: Some(503),
                round_trip_ms: 80
            }
        );
        net.set_domain_state(1, DomainState::Refused);
        assert_eq!(net.route_request(0, 1), Route::Refuse { round_trip_ms: 80 });
        // A crashed server refuses; a departed one never answers.
        net.set_server_status(2, ServerStatus::Crashed);
        assert_eq!(net.route_request(0, 2), Route::Refuse { round_trip_ms: 80 });
        assert!(net.domain_is_dead(2));
        net.set_server_status(2, ServerStatus::Departed);
        assert_eq!(net.route_request(0, 2), Route::Lost);
        // Re-registered: the name now leads to a new server.
        let new_server = net.add_server(1, 0);
        net.set_domain_state(1, DomainState::Served(new_server));
        assert_eq!(
            net.route_request(0, 1),
            Route::Deliver {
                server: new_server,
                latency_ms: 40
            }
        );
    }

    #[test]
    fn loss_loses_about_its_fraction() {
        let mut net = Network::new(
            3,
            LatencyDistribution::Uniform {
                min_ms: 10,
                max_ms: 20,
            },
            None,
            0.1,
            vec![0, 0],
            vec![DomainState::Served(0), DomainState::Served(1)],
        );
        let trials = 10_000;
        let lost = (0..trials)
            .filter(|_| net.route_request(0, 1) == Route::Lost)
            .count();
        assert!((lost as f64 / trials as f64 - 0.1).abs() < 0.015);
    }

    #[test]
    fn log_normal_latency_has_its_median() {
        let distribution = LatencyDistribution::LogNormal {
            median_ms: 100.0,
            sigma: 0.5,
        };
        let mut rng = SimRng::stream(1, "latency-test", 0);
        let mut draws: Vec<u64> = (0..5_001)
            .map(|_| distribution.sample_ms(&mut rng))
            .collect();
        draws.sort_unstable();
        let median = draws[2_500];
        assert!((90..=110).contains(&median), "median {median}");
    }
}
