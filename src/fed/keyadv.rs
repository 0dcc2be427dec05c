//! Key-layer adversaries and accidents in the room world (issue 5 item 6), built on the key
//! layer's own machinery (`server::publisher::KeyPublisher`, `server::key_cache::KeyCache`)
//! rather than re-implemented:
//!
//! - **lying server** (RQ10): `KeyPublisher::start_split_view`; `/key/v2/server` answers with
//!   `response_for(now, in_audience)`, so servers outside the audience cache a second key under
//!   the same key ID, which co-signed nothing: their links to the liar's members turn unverified
//!   (MSC4430) or its events fail their signature check (v12);
//! - **key flapping** (RQ8): `KeyPublisher::start_flapping`: every re-check may see the key
//!   moved to `old_verify_keys` (links unverified, re-queried) or back (re-verified);
//! - **clock skew**: `KeyCache::set_clock_offset` for the server's validity decisions, and the
//!   offset in the `origin_server_ts` of the events it sends (the link layer's "now" stays the
//!   true time);
//! - **key loss**: `KeyPublisher::lose_key` (a new key under the same ID, no old keys), then the
//!   server re-signs its users' member events as after a rotation (it still has its database);
//! - **database loss**: `KeyCache::forget_all` (every domain's keys fetched again) and the
//!   re-signed member events are gone; the rooms themselves are kept (simplification);
//! - **domain expiry** (RQ11): the server stops and its name answers as the scenario's `mode`
//!   says (default 404 from a parking page; `net::DomainState::dead`);
//! - **re-registration** (RQ11): a new owner runs a fresh server under the name: a new
//!   publisher (own random stream, so a new key under the same key ID), an empty key cache,
//!   no rooms and no events; requests reach it again.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::engine::SimRng;
use crate::metrics::rounded;
use crate::net::{DomainState, ServerId, ServerStatus};
use crate::room::links::LinkStatus;
use crate::scenario::{DeadMode, RoomAction, RoomActionKind};
use crate::server::absolute_ms;
use crate::server::publisher::KeyPublisher;

use super::FedWorld;

/// What the key adversaries did (by server), for the metrics.
#[derive(Debug, Default)]
pub struct KeyAdversaries {
    /// Lying servers -> the servers shown the real key.
    pub lying_audience: BTreeMap<ServerId, Vec<ServerId>>,
    /// Domains that expired -> when (sim ms).
    pub expired_at: BTreeMap<ServerId, u64>,
    /// Domains re-registered by a new owner -> when (sim ms).
    pub reregistered_at: BTreeMap<ServerId, u64>,
}

impl FedWorld {
    /// The `/_matrix/key/v2/server` answer of `to` to `from` (a lying server shows its real key
    /// only to its audience).
    pub(super) fn key_response(&mut self, to: ServerId, from: ServerId) -> std::sync::Arc<str> {
        let now_abs_ms = absolute_ms(self.now_ms());
        let in_audience = self
            .key_adv
            .lying_audience
            .get(&to)
            .is_none_or(|audience| audience.contains(&from));
        self.servers[to as usize]
            .publisher
            .response_for(now_abs_ms, in_audience)
    }

    /// Runs a key-layer adversary action on `targets`.
    pub(super) fn key_adversary(&mut self, action: &RoomAction, targets: &[ServerId]) {
        let now_ms = self.now_ms();
        let now_abs_ms = absolute_ms(now_ms);
        for &server in targets {
            match action.kind {
                RoomActionKind::LyingServer => {
                    let count = self.servers.len() as u32;
                    let audience = action
                        .audience
                        .iter()
                        .filter_map(|reference| reference.index(count))
                        .collect();
                    self.servers[server as usize].publisher.start_split_view();
                    self.key_adv.lying_audience.insert(server, audience);
                }
                RoomActionKind::KeyFlapping => {
                    let period_ms = action.period.map_or(3_600_000, |period| period.ms());
                    self.servers[server as usize]
                        .publisher
                        .start_flapping(now_abs_ms, period_ms);
                }
                RoomActionKind::ClockSkew => {
                    let offset_ms = action.offset_ms.unwrap_or(0);
                    self.servers[server as usize]
                        .cache
                        .set_clock_offset(offset_ms);
                }
                RoomActionKind::LoseKey => {
                    self.servers[server as usize].publisher.lose_key();
                    self.resign_and_notify(server, true);
                }
                RoomActionKind::LoseDatabase => {
                    let mut out = std::mem::take(&mut self.key_outputs);
                    self.servers[server as usize]
                        .cache
                        .forget_all(now_ms, &mut out);
                    self.apply_key_outputs(server, &mut out, None);
                    self.key_outputs = out;
                    self.servers[server as usize].resigned.clear();
                }
                RoomActionKind::ExpireDomain => {
                    let mode = action.mode.unwrap_or(DeadMode::NotFound);
                    self.go_down(server, ServerStatus::Departed);
                    self.net
                        .set_domain_state(server, DomainState::dead(mode, 404));
                    self.key_adv.expired_at.entry(server).or_insert(now_ms);
                }
                RoomActionKind::Reregister => self.reregister(server),
                _ => {}
            }
        }
    }

    /// A new owner runs a fresh server under `server`'s name.
    fn reregister(&mut self, server: ServerId) {
        let now_ms = self.now_ms();
        let lifetime_ms = self.config.key_lifetime.ms();
        let name = self.servers[server as usize].name.clone();
        let publisher = KeyPublisher::new(
            name,
            lifetime_ms,
            SimRng::stream(self.seed, "key-seeds-new-owner", u64::from(server)),
        );
        let mut out = std::mem::take(&mut self.key_outputs);
        let hs = &mut self.servers[server as usize];
        hs.publisher = publisher;
        hs.own_body = std::sync::Arc::from("");
        hs.rooms.clear();
        hs.outbox.clear();
        hs.key_waiters.clear();
        hs.resigned.clear();
        // A fresh server: nothing the old one left undone, and no answer to its requests (they
        // end here, as timeouts: the new owner never learns of them).
        hs.deferred.clear();
        hs.epoch += 1;
        let mut lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, request)| request.from == server)
            .map(|(id, _)| *id)
            .collect();
        lost.sort_unstable();
        for id in lost {
            let request = self.requests.remove(&id).expect("listed");
            self.counters.requests[request.purpose as usize][super::Done::Timeout.index()] += 1;
        }
        let hs = &mut self.servers[server as usize];
        hs.cache.forget_all(now_ms, &mut out);
        self.apply_key_outputs(server, &mut out, None);
        self.key_outputs = out;
        self.refresh_own_keys(server);
        self.net
            .set_domain_state(server, DomainState::Served(server));
        self.net.set_server_status(server, ServerStatus::Up);
        self.key_adv.reregistered_at.entry(server).or_insert(now_ms);
    }

    /// RQ10/RQ11 figures: for each lying server, the share of the other servers sharing a room
    /// with it whose links to its members are all verified at the end (audience and others
    /// apart); for each expired or re-registered domain, how long after the first of those
    /// events each observer's links to it turned unverified (p50 / p100 over observers, seconds;
    /// null if some never did).
    pub(super) fn key_adversary_metrics(&self, metrics: &mut Map<String, Value>) {
        if let Some((liar, audience)) = self.key_adv.lying_audience.iter().next() {
            let mut shares = [(0u64, 0u64); 2];
            for observer in 0..self.servers.len() as ServerId {
                if observer == *liar {
                    continue;
                }
                let Some(statuses) = self.link_statuses(observer, *liar, i64::MIN) else {
                    continue;
                };
                let group = usize::from(!audience.contains(&observer));
                shares[group].1 += 1;
                if statuses
                    .iter()
                    .all(|(status, _)| *status == LinkStatus::Verified)
                {
                    shares[group].0 += 1;
                }
            }
            for (name, (verified, total)) in [
                ("lying_audience_verified_share", shares[0]),
                ("lying_others_verified_share", shares[1]),
            ] {
                let share = if total == 0 {
                    Value::Null
                } else {
                    rounded(verified as f64 / total as f64)
                };
                metrics.insert(name.into(), share);
            }
        }
        let lost: Vec<(ServerId, u64)> = self
            .key_adv
            .expired_at
            .iter()
            .chain(&self.key_adv.reregistered_at)
            .fold(BTreeMap::new(), |mut first, (server, at_ms)| {
                let entry = first.entry(*server).or_insert(*at_ms);
                *entry = (*entry).min(*at_ms);
                first
            })
            .into_iter()
            .collect();
        if let Some(&(domain, since_ms)) = lost.first() {
            let since_abs_ms = absolute_ms(since_ms);
            let mut delays: Vec<Option<f64>> = Vec::new();
            for observer in 0..self.servers.len() as ServerId {
                if observer == domain {
                    continue;
                }
                let Some(statuses) = self.link_statuses(observer, domain, since_abs_ms) else {
                    continue;
                };
                // The observer's links count as lost when all of them are not verified at the
                // end; the time is the latest of their first turns to unverified since.
                let delay = statuses
                    .iter()
                    .map(|(status, unverified_at)| match (status, unverified_at) {
                        (LinkStatus::Verified, _) | (_, None) => None,
                        (_, Some(at_ms)) => Some((at_ms - since_abs_ms).max(0) as f64 / 1000.0),
                    })
                    .try_fold(0.0f64, |latest, delay| delay.map(|delay| latest.max(delay)));
                delays.push(delay);
            }
            let mut known: Vec<f64> = delays.iter().flatten().copied().collect();
            known.sort_by(f64::total_cmp);
            let all = !delays.is_empty() && known.len() == delays.len();
            let p50 = if all {
                rounded(known[known.len() / 2])
            } else {
                Value::Null
            };
            let p100 = if all {
                rounded(known[known.len() - 1])
            } else {
                Value::Null
            };
            metrics.insert("lost_domain_links_unverified_s_p50".into(), p50);
            metrics.insert("lost_domain_links_unverified_s_p100".into(), p100);
            metrics.insert("lost_domain_observers".into(), json!(delays.len()));
            metrics.insert(
                "lost_domain_observers_unverified".into(),
                json!(known.len()),
            );
        }
    }

    /// For `observer`: the status of every link (over its joined rooms) claiming `domain`'s
    /// name, with the time of its first turn to unverified at or after `since_abs_ms` (absolute
    /// ms); `None` if it holds no such link.
    fn link_statuses(
        &self,
        observer: ServerId,
        domain: ServerId,
        since_abs_ms: i64,
    ) -> Option<Vec<(LinkStatus, Option<i64>)>> {
        let name = &self.servers[domain as usize].name;
        let mut statuses = Vec::new();
        for state in self.servers[observer as usize].rooms.values() {
            if !state.joined {
                continue;
            }
            for link in state.links.links() {
                if link.domain.as_deref() != Some(name.as_str()) {
                    continue;
                }
                let unverified_at = link
                    .transitions
                    .iter()
                    .find(|transition| {
                        transition.to == LinkStatus::Unverified && transition.at_ms >= since_abs_ms
                    })
                    .map(|transition| transition.at_ms);
                statuses.push((link.status, unverified_at));
            }
        }
        (!statuses.is_empty()).then_some(statuses)
    }
}
