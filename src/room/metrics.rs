//! Pure room metrics over what servers show their clients (issue 5 item 8; questions.md RQ2,
//! RQ4, RQ5, RQ14): timeline divergence, hidden shares, orphan replies, link containment times,
//! bitrot for a late joiner and identity collisions.
//!
//! Everything here is a function of its arguments: no clock, no randomness, ordered maps wherever
//! an order can show (hash maps only to look up and count), so a world with one [`RoomState`]
//! per server per room can call these at any time and get the same figures for the same views.
//!
//! The unit is a [`MessageView`]: what one server holds of one room's *message* events
//! (`m.room.message`; state events and other types are ignored) and how it shows each one.
//! Build it from a [`RoomState`] with [`MessageView::from_room`], or by hand with
//! [`MessageView::new`] and [`MessageView::insert`] when the caller keeps its own sets.
//!
//! Conventions (the same everywhere in this module):
//! - A message is *visible* on a server when the server holds it and its timeline entry is shown
//!   (delivered, labelled, or revealed later); *hidden* when the server holds it and does not
//!   show it (soft-failed or rejected); *not held* otherwise. Not held is not hidden: a server
//!   that never received a message did not hide it.
//! - A ratio whose denominator is zero is `0.0` (nothing to disagree about, nothing hidden), and
//!   a percentile over no observers is `None`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::links::{LinkStatus, LinkTable, LinkVerdict};
use super::room_state::{Fate, RejectedAt, RoomState, SoftFailReason, Visibility};
use crate::matrix::dag::{EventIndex, IdHasher};
use crate::matrix::{EventId, Pdu};

/// The event type the message metrics count.
pub const MESSAGE_TYPE: &str = "m.room.message";

/// Why a held message is not shown, as a stable label for tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HiddenReason {
    /// Rejected at check 4 (auth events) or 5 (state before).
    Rejected { check: u8 },
    /// Soft-failed by check 6 (the current state).
    SoftFailedCurrentState,
    /// Soft-failed by MSC4430's link rule: the sender's link was pending.
    SoftFailedLinkPending,
    /// Soft-failed by MSC4430's link rule: the sender's link was unverified.
    SoftFailedLinkUnverified,
    /// Soft-failed because the current state could not be resolved.
    SoftFailedStateUnresolvable,
}

impl HiddenReason {
    /// The reason of a hiding fate; `None` for an accepted event.
    pub fn of_fate(fate: &Fate) -> Option<HiddenReason> {
        match fate {
            Fate::Accepted { .. } => None,
            Fate::Rejected { check, .. } => Some(HiddenReason::Rejected {
                check: match check {
                    RejectedAt::AuthEvents => 4,
                    RejectedAt::StateBefore => 5,
                },
            }),
            Fate::SoftFailed(SoftFailReason::CurrentState(_)) => {
                Some(HiddenReason::SoftFailedCurrentState)
            }
            Fate::SoftFailed(SoftFailReason::Link(LinkVerdict::Unverified)) => {
                Some(HiddenReason::SoftFailedLinkUnverified)
            }
            // A link verdict other than "unverified" that soft-failed is a pending link.
            Fate::SoftFailed(SoftFailReason::Link(_)) => Some(HiddenReason::SoftFailedLinkPending),
            Fate::SoftFailed(SoftFailReason::StateUnresolvable(_)) => {
                Some(HiddenReason::SoftFailedStateUnresolvable)
            }
        }
    }

    /// A stable label: `rejected-check-4`, `rejected-check-5`, `soft-failed-current-state`,
    /// `soft-failed-link-pending`, `soft-failed-link-unverified`,
    /// `soft-failed-state-unresolvable`.
    pub fn label(self) -> String {
        match self {
            HiddenReason::Rejected { check } => format!("rejected-check-{check}"),
            HiddenReason::SoftFailedCurrentState => "soft-failed-current-state".to_owned(),
            HiddenReason::SoftFailedLinkPending => "soft-failed-link-pending".to_owned(),
            HiddenReason::SoftFailedLinkUnverified => "soft-failed-link-unverified".to_owned(),
            HiddenReason::SoftFailedStateUnresolvable => {
                "soft-failed-state-unresolvable".to_owned()
            }
        }
    }
}

/// How one server shows one held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Clients see it (`labelled`: with an "invalid handle" flag).
    Visible { labelled: bool },
    /// Clients do not see it, and why.
    Hidden(HiddenReason),
}

/// One held message as one server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub shown: Shown,
    /// `content.m.relates_to.m.in_reply_to.event_id`, if the message is a reply.
    pub reply_to: Option<EventId>,
    /// The nearest earlier messages in the server's DAG: walking `prev_events` from the message
    /// through held non-message events, the first message events met on each path (sorted,
    /// deduplicated). Empty for the room's first message.
    pub prev_messages: Vec<EventId>,
    /// `origin_server_ts` of the message (ms).
    pub origin_server_ts_ms: i64,
    /// The sender (user ID or member key).
    pub sender: String,
}

/// What one server holds of a room's messages, keyed by event ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageView {
    pub server: String,
    pub messages: BTreeMap<EventId, HeldMessage>,
}

impl MessageView {
    /// An empty view for `server` (fill it with [`MessageView::insert`]).
    pub fn new(server: &str) -> MessageView {
        MessageView {
            server: server.to_owned(),
            messages: BTreeMap::new(),
        }
    }

    /// Records a held message.
    pub fn insert(&mut self, event_id: &str, message: HeldMessage) {
        self.messages.insert(event_id.to_owned(), message);
    }

    /// The message view of `server` over its [`RoomState`]: every held `m.room.message`, how
    /// its timeline entry is shown, its reply target and its nearest earlier messages.
    pub fn from_room(server: &str, room: &RoomState) -> MessageView {
        let dag = room.dag();
        let mut messages: Vec<(EventId, HeldMessage)> = Vec::new();
        for index in room.timeline_indices() {
            let pdu = dag.event(index);
            if pdu.event_type != MESSAGE_TYPE {
                continue;
            }
            let shown = shown_at(room, index);
            // Walk back through non-message events to the nearest messages.
            let mut prev_messages = BTreeSet::new();
            let mut seen: BTreeSet<EventIndex> = BTreeSet::new();
            let mut frontier: Vec<EventIndex> = dag.prev_indices(index).to_vec();
            while let Some(ancestor) = frontier.pop() {
                if !seen.insert(ancestor) {
                    continue;
                }
                let event = dag.event(ancestor);
                if event.event_type == MESSAGE_TYPE {
                    prev_messages.insert(event.event_id.clone());
                } else {
                    frontier.extend_from_slice(dag.prev_indices(ancestor));
                }
            }
            messages.push((
                pdu.event_id.clone(),
                HeldMessage {
                    shown,
                    reply_to: reply_target(&pdu.content),
                    prev_messages: prev_messages.into_iter().collect(),
                    origin_server_ts_ms: pdu.origin_server_ts,
                    sender: pdu.sender.clone(),
                },
            ));
        }
        // Event IDs are unique in a DAG, so bulk-building the map loses nothing.
        MessageView {
            server: server.to_owned(),
            messages: messages.into_iter().collect(),
        }
    }

    /// The messages clients of this server see.
    pub fn visible(&self) -> BTreeSet<EventId> {
        self.messages
            .iter()
            .filter(|(_, message)| matches!(message.shown, Shown::Visible { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The held messages clients of this server do not see.
    pub fn hidden(&self) -> BTreeSet<EventId> {
        self.messages
            .iter()
            .filter(|(_, message)| matches!(message.shown, Shown::Hidden(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether clients of this server see `event_id`.
    pub fn is_visible(&self, event_id: &str) -> bool {
        matches!(
            self.messages.get(event_id).map(|message| message.shown),
            Some(Shown::Visible { .. })
        )
    }

    /// Whether this server holds `event_id` and hides it.
    pub fn is_hidden(&self, event_id: &str) -> bool {
        matches!(
            self.messages.get(event_id).map(|message| message.shown),
            Some(Shown::Hidden(_))
        )
    }
}

/// How `room` shows its held event at `index` to clients, as a message.
fn shown_at(room: &RoomState, index: EventIndex) -> Shown {
    match room.visibility(index) {
        Visibility::Delivered { labelled } => Shown::Visible { labelled },
        Visibility::Revealed { .. } => Shown::Visible { labelled: false },
        Visibility::Hidden(fate) => match HiddenReason::of_fate(&fate) {
            Some(reason) => Shown::Hidden(reason),
            None => Shown::Visible { labelled: false },
        },
    }
}

/// `content.m.relates_to.m.in_reply_to.event_id`, if a string.
pub fn reply_target(content: &Value) -> Option<EventId> {
    reply_target_str(content).map(str::to_owned)
}

/// [`reply_target`], borrowed.
pub fn reply_target_str(content: &Value) -> Option<&str> {
    content
        .get("m.relates_to")?
        .get("m.in_reply_to")?
        .get("event_id")?
        .as_str()
}

/// `numerator / denominator`, or 0 when the denominator is 0.
fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Divergence of two client-visible message sets: |A Δ B| / |A ∪ B|, in [0, 1]. Two empty sets
/// do not diverge (0).
pub fn divergence(a: &BTreeSet<EventId>, b: &BTreeSet<EventId>) -> f64 {
    let union = a.union(b).count();
    let difference = a.symmetric_difference(b).count();
    ratio(difference, union)
}

/// Pairwise divergence over several servers.
#[derive(Debug, Clone, PartialEq)]
pub struct DivergenceMatrix {
    /// Server names, in the order given.
    pub servers: Vec<String>,
    /// `matrix[i][j]` = divergence of servers i and j (symmetric, 0 on the diagonal): the cells
    /// of a heat map.
    pub matrix: Vec<Vec<f64>>,
    /// Mean over the unordered pairs i < j (0 with fewer than two servers).
    pub mean: f64,
    /// Largest pairwise divergence (0 with fewer than two servers).
    pub max: f64,
}

/// The pairwise divergence of the servers' visible message sets.
pub fn divergence_matrix(views: &[MessageView]) -> DivergenceMatrix {
    // Each visible set as a bit set over the messages visible anywhere (numbered in the order
    // first met: any numbering gives the same counts), so a pair costs a few word operations
    // instead of a merge of two sets of strings. |A Δ B| and |A ∪ B| are the same integers as
    // with the sets, so every ratio is the same float.
    let mut numbers: HashMap<&str, usize, IdHasher> = HashMap::default();
    let members: Vec<Vec<usize>> = views
        .iter()
        .map(|view| {
            view.messages
                .iter()
                .filter(|(_, message)| matches!(message.shown, Shown::Visible { .. }))
                .map(|(id, _)| {
                    let next = numbers.len();
                    *numbers.entry(id.as_str()).or_insert(next)
                })
                .collect()
        })
        .collect();
    let words = numbers.len().div_ceil(64);
    let visible: Vec<Vec<u64>> = members
        .iter()
        .map(|numbers| {
            let mut bits = vec![0u64; words];
            for &number in numbers {
                bits[number / 64] |= 1 << (number % 64);
            }
            bits
        })
        .collect();
    let visible: Vec<&[u64]> = visible.iter().map(Vec::as_slice).collect();
    bit_set_divergence(
        views.iter().map(|view| view.server.clone()).collect(),
        &visible,
    )
}

/// The divergence matrix of visible sets given as bit sets of equal length (any numbering of
/// the messages: the counts are the same), with the servers' names in the same order.
fn bit_set_divergence(servers: Vec<String>, visible: &[&[u64]]) -> DivergenceMatrix {
    let count = visible.len();
    let mut matrix = vec![vec![0.0; count]; count];
    let mut sum = 0.0;
    let mut max: f64 = 0.0;
    let mut pairs = 0usize;
    for i in 0..count {
        for j in (i + 1)..count {
            let (mut union, mut difference) = (0usize, 0usize);
            for (a, b) in visible[i].iter().zip(visible[j]) {
                union += (a | b).count_ones() as usize;
                difference += (a ^ b).count_ones() as usize;
            }
            let value = ratio(difference, union);
            matrix[i][j] = value;
            matrix[j][i] = value;
            sum += value;
            max = max.max(value);
            pairs += 1;
        }
    }
    DivergenceMatrix {
        servers,
        matrix,
        mean: if pairs == 0 { 0.0 } else { sum / pairs as f64 },
        max,
    }
}

/// How many distinct messages the servers hold together (the size of [`room_messages`]).
fn room_message_count(views: &[MessageView]) -> usize {
    let mut ids: HashSet<&str, IdHasher> = HashSet::default();
    for view in views {
        ids.extend(view.messages.keys().map(String::as_str));
    }
    ids.len()
}

/// The room's messages: every message held by at least one of the servers.
pub fn room_messages(views: &[MessageView]) -> BTreeSet<EventId> {
    views
        .iter()
        .flat_map(|view| view.messages.keys().cloned())
        .collect()
}

/// How much of the room's messages one server hides.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenShare {
    pub server: String,
    /// Messages held by any of the servers compared (the denominator).
    pub room_messages: usize,
    /// Of those, held by this server.
    pub held: usize,
    /// Held and shown.
    pub visible: usize,
    /// Held and not shown.
    pub hidden: usize,
    /// `hidden` split by [`HiddenReason::label`].
    pub hidden_by_reason: BTreeMap<String, usize>,
    /// `hidden / room_messages` (0 for a room without messages).
    pub hidden_share: f64,
}

/// Per server: the share of the room's messages (held by any of `views`) that it hides.
pub fn hidden_shares(views: &[MessageView]) -> Vec<HiddenShare> {
    let room = room_message_count(views);
    views
        .iter()
        .map(|view| {
            let mut hidden_by_reason: BTreeMap<String, usize> = BTreeMap::new();
            let mut visible = 0;
            let mut hidden = 0;
            for message in view.messages.values() {
                match message.shown {
                    Shown::Visible { .. } => visible += 1,
                    Shown::Hidden(reason) => {
                        hidden += 1;
                        *hidden_by_reason.entry(reason.label()).or_default() += 1;
                    }
                }
            }
            HiddenShare {
                server: view.server.clone(),
                room_messages: room,
                held: view.messages.len(),
                visible,
                hidden,
                hidden_by_reason,
                hidden_share: ratio(hidden, room),
            }
        })
        .collect()
}

/// The share of the room's messages (held by any of `views`) that are visible on at least one
/// server and hidden (held, not shown) on at least one other. 0 for a room without messages.
pub fn visible_somewhere_hidden_elsewhere(views: &[MessageView]) -> f64 {
    // Per message held anywhere: (visible somewhere, hidden somewhere), in one pass.
    let mut seen: HashMap<&str, (bool, bool), IdHasher> = HashMap::default();
    for view in views {
        for (id, message) in &view.messages {
            let (visible, hidden) = seen.entry(id.as_str()).or_default();
            match message.shown {
                Shown::Visible { .. } => *visible = true,
                Shown::Hidden(_) => *hidden = true,
            }
        }
    }
    let split = seen
        .values()
        .filter(|(visible, hidden)| *visible && *hidden)
        .count();
    ratio(split, seen.len())
}

/// Orphans among one server's visible messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphans {
    pub server: String,
    /// Visible messages (the denominator).
    pub visible: usize,
    /// Visible messages whose reply target is a message this server does not show (hidden or
    /// not held).
    pub reply_orphans: usize,
    /// Visible messages one of whose nearest earlier messages ([`HeldMessage::prev_messages`])
    /// this server holds and hides.
    pub follow_orphans: usize,
    /// Visible messages that are either (counted once).
    pub orphans: usize,
    /// `orphans / visible` (0 when nothing is visible).
    pub orphan_ratio: f64,
}

/// The orphan ratio of one server: among the messages its clients see, the share that reply to
/// a message they do not see (`m.in_reply_to` names a message that is hidden or not held here),
/// or that directly follow a hidden one (a nearest earlier message in the DAG is held here and
/// hidden). Reply targets are looked up among the server's messages only: a reply naming
/// anything it does not show as a message (hidden, not held, or not a message at all) is an
/// orphan, since replies in Matrix target messages. A predecessor that is not held is not hidden,
/// so it makes no orphan.
pub fn orphans(view: &MessageView) -> Orphans {
    let mut visible = 0;
    let mut reply_orphans = 0;
    let mut follow_orphans = 0;
    let mut orphans = 0;
    for message in view.messages.values() {
        if !matches!(message.shown, Shown::Visible { .. }) {
            continue;
        }
        visible += 1;
        let reply_orphan = message
            .reply_to
            .as_ref()
            .is_some_and(|target| !view.is_visible(target));
        let follow_orphan = message
            .prev_messages
            .iter()
            .any(|previous| view.is_hidden(previous));
        reply_orphans += usize::from(reply_orphan);
        follow_orphans += usize::from(follow_orphan);
        orphans += usize::from(reply_orphan || follow_orphan);
    }
    Orphans {
        server: view.server.clone(),
        visible,
        reply_orphans,
        follow_orphans,
        orphans,
        orphan_ratio: ratio(orphans, visible),
    }
}

/// One server's messages in [`NumberedViews`]: the figures of its [`MessageView`] that the
/// room metrics use, counted without building the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedView<'a> {
    pub server: &'a str,
    /// Held messages (the size of the view).
    pub held: usize,
    /// Held and shown.
    pub visible: usize,
    /// Held and not shown.
    pub hidden: usize,
    /// `hidden` by reason.
    pub hidden_by_reason: BTreeMap<HiddenReason, usize>,
    /// Visible messages that are replies.
    pub visible_replies: usize,
    /// As [`Orphans`].
    pub reply_orphans: usize,
    pub follow_orphans: usize,
    pub orphans: usize,
    /// The room numbers of the visible messages, as a bit set (see [`NumberedViews`]).
    visible_bits: Vec<u64>,
    /// The room numbers of the hidden messages, as a bit set.
    hidden_bits: Vec<u64>,
    /// Per room number: the message's DAG index here, or [`NOT_IN_VIEW`].
    indices: Vec<EventIndex>,
}

/// A message of a view while numbering: its room number, its DAG index, whether it is shown.
type HeldNumber = (u32, EventIndex, bool);

/// [`NumberedView`]'s index of a message the view does not hold.
const NOT_IN_VIEW: EventIndex = EventIndex::MAX;

/// The message views of several servers of one room, reduced to what [`orphans`],
/// [`hidden_shares`], [`divergence_matrix`] and [`visible_somewhere_hidden_elsewhere`] need,
/// built straight from the servers' [`RoomState`]s: the room's messages get one number each
/// (shared by all servers), each server's shown and hidden messages are bit sets over those
/// numbers, and the walk to the nearest earlier messages is a single pass over the DAG (one
/// flag per event: "a nearest earlier message on some path is hidden"). No event ID is copied.
/// Every figure is the same integer as through [`MessageView::from_room`], so every ratio is
/// the same float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedViews<'a> {
    pub views: Vec<NumberedView<'a>>,
    /// Distinct messages held by any of the servers (the denominator of hidden shares).
    pub room_messages: usize,
    /// The room number of each message.
    numbers: HashMap<&'a str, u32, IdHasher>,
}

/// [`NumberedViews::new`]'s per-event flags: a message the view shows.
const SHOWN_HERE: u8 = 1;
/// A message the view hides, or a non-message event one of whose nearest earlier messages
/// (walking `prev_events` through non-message events) the view hides.
const HIDDEN_BEHIND: u8 = 2;

impl<'a> NumberedViews<'a> {
    /// The numbered views of `rooms` (server name, its room state), in the order given.
    pub fn new(rooms: impl IntoIterator<Item = (&'a str, &'a RoomState)>) -> NumberedViews<'a> {
        let mut numbers: HashMap<&'a str, u32, IdHasher> = HashMap::default();
        let mut flags: Vec<u8> = Vec::new();
        let mut replies: Vec<(bool, &'a str)> = Vec::new();
        // Per server: its messages' (number, DAG index) and whether each is visible, until all
        // are numbered.
        let mut numbered: Vec<(NumberedView<'a>, Vec<HeldNumber>)> = Vec::new();
        for (server, room) in rooms {
            let dag = room.dag();
            let mut view = NumberedView {
                server,
                held: 0,
                visible: 0,
                hidden: 0,
                hidden_by_reason: BTreeMap::new(),
                visible_replies: 0,
                reply_orphans: 0,
                follow_orphans: 0,
                orphans: 0,
                visible_bits: Vec::new(),
                hidden_bits: Vec::new(),
                indices: Vec::new(),
            };
            let mut held = Vec::new();
            flags.clear();
            flags.resize(dag.len(), 0);
            replies.clear();
            // Prev events come before their children in index order, so one forward pass
            // settles every flag before it is read.
            for index in 0..dag.len() as EventIndex {
                let behind = dag
                    .prev_indices(index)
                    .iter()
                    .any(|&prev| flags[prev as usize] & HIDDEN_BEHIND != 0);
                let pdu: &'a Pdu = dag.event(index);
                if pdu.event_type != MESSAGE_TYPE {
                    if behind {
                        flags[index as usize] = HIDDEN_BEHIND;
                    }
                    continue;
                }
                // A message ends every walk through it; an outlier one is not in the view, so
                // it is neither shown nor hidden.
                if dag.is_outlier(index) {
                    continue;
                }
                view.held += 1;
                let next = numbers.len() as u32;
                let number = *numbers.entry(pdu.event_id.as_str()).or_insert(next);
                match shown_at(room, index) {
                    Shown::Visible { .. } => {
                        flags[index as usize] = SHOWN_HERE;
                        view.visible += 1;
                        held.push((number, index, true));
                        view.follow_orphans += usize::from(behind);
                        match reply_target_str(&pdu.content) {
                            // Replies are settled once every message's flag is known.
                            Some(target) => replies.push((behind, target)),
                            None => view.orphans += usize::from(behind),
                        }
                    }
                    Shown::Hidden(reason) => {
                        flags[index as usize] = HIDDEN_BEHIND;
                        view.hidden += 1;
                        held.push((number, index, false));
                        *view.hidden_by_reason.entry(reason).or_default() += 1;
                    }
                }
            }
            view.visible_replies = replies.len();
            for &(behind, target) in &replies {
                let shown = dag
                    .index(target)
                    .is_some_and(|index| flags[index as usize] & SHOWN_HERE != 0);
                view.reply_orphans += usize::from(!shown);
                view.orphans += usize::from(!shown || behind);
            }
            numbered.push((view, held));
        }
        let words = numbers.len().div_ceil(64);
        NumberedViews {
            views: numbered
                .into_iter()
                .map(|(mut view, held)| {
                    view.visible_bits = vec![0; words];
                    view.hidden_bits = vec![0; words];
                    view.indices = vec![NOT_IN_VIEW; numbers.len()];
                    for (number, index, visible) in held {
                        let bits = match visible {
                            true => &mut view.visible_bits,
                            false => &mut view.hidden_bits,
                        };
                        bits[number as usize / 64] |= 1 << (number % 64);
                        view.indices[number as usize] = index;
                    }
                    view
                })
                .collect(),
            room_messages: numbers.len(),
            numbers,
        }
    }

    /// The room number of `event_id`, if it is a message in one of the views.
    pub fn number(&self, event_id: &str) -> Option<u32> {
        self.numbers.get(event_id).copied()
    }

    /// The DAG index of message `number` ([`NumberedViews::number`]) in the `view`th view, if
    /// that view holds it (outside the view, as an outlier, its DAG may still hold it).
    pub fn index_in_view(&self, view: usize, number: u32) -> Option<EventIndex> {
        let index = self.views[view].indices[number as usize];
        (index != NOT_IN_VIEW).then_some(index)
    }

    /// As [`hidden_shares`] of the views.
    pub fn hidden_shares(&self) -> Vec<HiddenShare> {
        self.views
            .iter()
            .map(|view| HiddenShare {
                server: view.server.to_owned(),
                room_messages: self.room_messages,
                held: view.held,
                visible: view.visible,
                hidden: view.hidden,
                hidden_by_reason: view
                    .hidden_by_reason
                    .iter()
                    .map(|(reason, count)| (reason.label(), *count))
                    .collect(),
                hidden_share: self.hidden_share(view),
            })
            .collect()
    }

    /// [`HiddenShare::hidden_share`] of one of the views.
    pub fn hidden_share(&self, view: &NumberedView) -> f64 {
        ratio(view.hidden, self.room_messages)
    }

    /// As [`orphans`] of each view.
    pub fn orphans(&self) -> Vec<Orphans> {
        self.views
            .iter()
            .map(|view| Orphans {
                server: view.server.to_owned(),
                visible: view.visible,
                reply_orphans: view.reply_orphans,
                follow_orphans: view.follow_orphans,
                orphans: view.orphans,
                orphan_ratio: NumberedViews::orphan_ratio(view),
            })
            .collect()
    }

    /// [`Orphans::orphan_ratio`] of one of the views.
    pub fn orphan_ratio(view: &NumberedView) -> f64 {
        ratio(view.orphans, view.visible)
    }

    /// As [`divergence_matrix`] of the views.
    pub fn divergence_matrix(&self) -> DivergenceMatrix {
        let visible: Vec<&[u64]> = self
            .views
            .iter()
            .map(|view| view.visible_bits.as_slice())
            .collect();
        bit_set_divergence(
            self.views
                .iter()
                .map(|view| view.server.to_owned())
                .collect(),
            &visible,
        )
    }

    /// As [`visible_somewhere_hidden_elsewhere`] of the views.
    pub fn visible_somewhere_hidden_elsewhere(&self) -> f64 {
        let words = self.room_messages.div_ceil(64);
        let mut visible = vec![0u64; words];
        let mut hidden = vec![0u64; words];
        for view in &self.views {
            for (all, bits) in visible.iter_mut().zip(&view.visible_bits) {
                *all |= bits;
            }
            for (all, bits) in hidden.iter_mut().zip(&view.hidden_bits) {
                *all |= bits;
            }
        }
        let split: u32 = visible
            .iter()
            .zip(&hidden)
            .map(|(visible, hidden)| (visible & hidden).count_ones())
            .sum();
        ratio(split as usize, self.room_messages)
    }
}

/// When a link's containment reached a share of observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Containment {
    /// Observers counted.
    pub observers: usize,
    /// Time (ms after the start) until 50% of observers had the link unverified; `None` = never.
    pub p50_ms: Option<i64>,
    /// Until 95%.
    pub p95_ms: Option<i64>,
    /// Until all of them.
    pub p100_ms: Option<i64>,
}

/// The nearest-rank percentile `percent` (in 1..=100) of `sorted` (ascending, `None` = never,
/// sorted last): the value at 1-based rank ⌈percent/100 × n⌉. `None` for no values.
pub fn nearest_rank(sorted: &[Option<i64>], percent: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (percent as usize * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// Containment times: given for each observer the time (ms, absolute) at which the link became
/// unverified there, or `None` if it never did, the delays after `start_ms` until 50%, 95% and
/// 100% of the observers had it unverified (nearest rank; an observer that turned before the
/// start counts as 0). `None` = that share was never reached (or there are no observers).
pub fn containment(unverified_at_ms: &[Option<i64>], start_ms: i64) -> Containment {
    let mut delays: Vec<Option<i64>> = unverified_at_ms
        .iter()
        .map(|at| at.map(|at_ms| (at_ms - start_ms).max(0)))
        .collect();
    // Some(_) ascending, then the Nones.
    delays.sort_by_key(|delay| (delay.is_none(), *delay));
    Containment {
        observers: delays.len(),
        p50_ms: nearest_rank(&delays, 50),
        p95_ms: nearest_rank(&delays, 95),
        p100_ms: nearest_rank(&delays, 100),
    }
}

/// The first time at or after `since_ms` at which `member_key`'s link in `links` is unverified
/// (from the link's recorded transitions): `since_ms` itself if it was unverified then (it
/// turned earlier: contained from the start), else the first turn after; `None` if neither.
pub fn unverified_since(links: &LinkTable, member_key: &str, since_ms: i64) -> Option<i64> {
    let transitions = &links.link(member_key)?.transitions;
    let before = transitions.partition_point(|transition| transition.at_ms < since_ms);
    if before > 0 && transitions[before - 1].to == LinkStatus::Unverified {
        return Some(since_ms);
    }
    transitions[before..]
        .iter()
        .find(|transition| transition.to == LinkStatus::Unverified)
        .map(|transition| transition.at_ms)
}

/// Bitrot figures for one bucket of event ages.
#[derive(Debug, Clone, PartialEq)]
pub struct BitrotBucket {
    /// Ages in this bucket are `>= min_age_ms` ...
    pub min_age_ms: i64,
    /// ... and `< max_age_ms` (`None` = unbounded).
    pub max_age_ms: Option<i64>,
    /// Historical member keys whose claim (their latest own member event) falls in the bucket.
    pub links: usize,
    /// Of those, verified on the joiner.
    pub links_verified: usize,
    /// Historical messages held by the joiner in the bucket.
    pub messages: usize,
    /// Of those, shown to the joiner's clients.
    pub messages_visible: usize,
}

impl BitrotBucket {
    /// `links_verified / links`, `None` for an empty bucket.
    pub fn links_verified_share(&self) -> Option<f64> {
        (self.links > 0).then(|| self.links_verified as f64 / self.links as f64)
    }

    /// `messages_visible / messages`, `None` for an empty bucket.
    pub fn messages_visible_share(&self) -> Option<f64> {
        (self.messages > 0).then(|| self.messages_visible as f64 / self.messages as f64)
    }
}

/// The bucket index of `age_ms` for ascending `edges_ms`: bucket 0 = `[0, e0)` (and negative
/// ages), bucket i = `[e(i-1), e(i))`, the last = `[e(last), ∞)`.
fn bucket_of(age_ms: i64, edges_ms: &[i64]) -> usize {
    edges_ms.partition_point(|&edge| edge <= age_ms)
}

/// Bitrot seen by a late joiner that joined at `joined_at_ms`: historical events are those with
/// `origin_server_ts < joined_at_ms`, aged `joined_at_ms - origin_server_ts`, bucketed by the
/// ascending `age_edges_ms` (n edges → n + 1 buckets). Per bucket:
/// - links: each member key with a historical own member event (`state_key == sender`), bucketed
///   by the age of its latest such event; verified = the joiner's link table has it `Verified`
///   now. In room versions without member keys there are no links to verify: every member
///   counts as verified (the user ID is the identity).
/// - messages: historical `m.room.message` events the joiner holds, and how many it shows.
pub fn bitrot(
    joiner: &RoomState,
    links: &LinkTable,
    joined_at_ms: i64,
    age_edges_ms: &[i64],
) -> Vec<BitrotBucket> {
    let mut buckets: Vec<BitrotBucket> = (0..=age_edges_ms.len())
        .map(|index| BitrotBucket {
            min_age_ms: if index == 0 {
                0
            } else {
                age_edges_ms[index - 1]
            },
            max_age_ms: age_edges_ms.get(index).copied(),
            links: 0,
            links_verified: 0,
            messages: 0,
            messages_visible: 0,
        })
        .collect();
    let member_keys = joiner.version().member_keys;
    // Latest historical own member event per sender.
    let mut latest_claim: BTreeMap<String, i64> = BTreeMap::new();
    for (pdu, _) in joiner.held_events() {
        if pdu.origin_server_ts >= joined_at_ms {
            continue;
        }
        if pdu.event_type == "m.room.member" && pdu.state_key.as_deref() == Some(&pdu.sender) {
            let latest = latest_claim.entry(pdu.sender.clone()).or_insert(i64::MIN);
            *latest = (*latest).max(pdu.origin_server_ts);
        }
    }
    for (member, claimed_at_ms) in &latest_claim {
        let bucket = &mut buckets[bucket_of(joined_at_ms - claimed_at_ms, age_edges_ms)];
        bucket.links += 1;
        if !member_keys || links.status(member) == LinkStatus::Verified {
            bucket.links_verified += 1;
        }
    }
    let view = MessageView::from_room("joiner", joiner);
    for message in view.messages.values() {
        if message.origin_server_ts_ms >= joined_at_ms {
            continue;
        }
        let bucket =
            &mut buckets[bucket_of(joined_at_ms - message.origin_server_ts_ms, age_edges_ms)];
        bucket.messages += 1;
        if matches!(message.shown, Shown::Visible { .. }) {
            bucket.messages_visible += 1;
        }
    }
    buckets
}

/// What the room's history before a newcomer's join is, as the servers of the room hold it
/// (the reference a newcomer's view is measured against; see [`newcomer_history`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomHistory {
    /// Own member events (`state_key == sender`): sender → `origin_server_ts` of each, sorted.
    pub claims: BTreeMap<String, Vec<i64>>,
    /// Messages: event ID → (sender, `origin_server_ts`).
    pub messages: BTreeMap<EventId, (String, i64)>,
}

impl RoomHistory {
    /// Adds every event `room` holds (whatever its fate: a message one server hid or dropped
    /// is still part of the room's history if another holds it).
    pub fn add(&mut self, room: &RoomState) {
        for (pdu, _) in room.held_events() {
            if pdu.event_type == MESSAGE_TYPE {
                self.messages.insert(
                    pdu.event_id.clone(),
                    (pdu.sender.clone(), pdu.origin_server_ts),
                );
            } else if pdu.event_type == "m.room.member"
                && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
            {
                let times = self.claims.entry(pdu.sender.clone()).or_default();
                if let Err(at) = times.binary_search(&pdu.origin_server_ts) {
                    times.insert(at, pdu.origin_server_ts);
                }
            }
        }
    }
}

/// RQ4: how much of a room's history a newcomer can verify and shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewcomerHistory {
    /// Members with an own member event before the join (historical links).
    pub links: usize,
    /// Of those, verifiable by the newcomer: its link table vouches for the member's latest
    /// historical claim (verified, or under P7 still vouching for that time). In room versions
    /// without member keys: the newcomer holds that claim accepted (the server signature checked).
    pub links_verifiable: usize,
    /// Messages sent before the join (by `origin_server_ts`).
    pub messages: usize,
    /// Of those, held by the newcomer (whatever the path: join state, backfill, gap fill).
    pub messages_held: usize,
    /// Held and shown to its clients (labelled or not).
    pub messages_visible: usize,
    /// Shown with the sender verified now: the sender's link vouches for the message's time
    /// (a P5 label follows the link's current status, as MSC4428's `member_info` does; no member
    /// keys: shown at all).
    pub messages_sender_verified: usize,
    /// Held and not shown (soft-failed or rejected).
    pub messages_hidden: usize,
}

impl NewcomerHistory {
    /// `part / whole` of two of the counts, `None` when `whole` is 0.
    pub fn share(part: usize, whole: usize) -> Option<f64> {
        (whole > 0).then(|| part as f64 / whole as f64)
    }
}

/// RQ4 bitrot for a newcomer that joined at `joined_at_ms` (absolute ms): the room's history
/// before that time (`history`, from every server of the room) against what the newcomer holds
/// and shows now.
pub fn newcomer_history(
    joiner: &RoomState,
    links: &LinkTable,
    joined_at_ms: i64,
    history: &RoomHistory,
) -> NewcomerHistory {
    let member_keys = joiner.version().member_keys;
    let mut result = NewcomerHistory::default();
    for (member, times) in &history.claims {
        let Some(&claimed_at_ms) = times.iter().rev().find(|at| **at < joined_at_ms) else {
            continue;
        };
        result.links += 1;
        let verifiable = if member_keys {
            links.verdict(member, claimed_at_ms) == LinkVerdict::Verified
        } else {
            joiner.held_events().any(|(pdu, held)| {
                pdu.sender == *member
                    && pdu.event_type == "m.room.member"
                    && pdu.state_key.as_deref() == Some(member.as_str())
                    && pdu.origin_server_ts == claimed_at_ms
                    && matches!(held.fate, Fate::Accepted { .. })
            })
        };
        result.links_verifiable += usize::from(verifiable);
    }
    let view = MessageView::from_room("newcomer", joiner);
    for (event_id, (sender, sent_at_ms)) in &history.messages {
        if *sent_at_ms >= joined_at_ms {
            continue;
        }
        result.messages += 1;
        let Some(held) = view.messages.get(event_id) else {
            continue;
        };
        result.messages_held += 1;
        match held.shown {
            Shown::Visible { .. } => {
                result.messages_visible += 1;
                let verified =
                    !member_keys || links.verdict(sender, *sent_at_ms) == LinkVerdict::Verified;
                result.messages_sender_verified += usize::from(verified);
            }
            Shown::Hidden(_) => result.messages_hidden += 1,
        }
    }
    result
}

/// RQ14's client-visible identity collisions in one server's `member_info` (member key → the
/// verified user ID shown, or `None`): every user ID shown for two or more member keys, with
/// those member keys (sorted).
pub fn identity_collisions(
    member_info: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_user_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (member_key, user_id) in member_info {
        if let Some(user_id) = user_id {
            by_user_id
                .entry(user_id.clone())
                .or_default()
                .push(member_key.clone());
        }
    }
    by_user_id.retain(|_, member_keys| member_keys.len() > 1);
    by_user_id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(shown: Shown, reply_to: Option<&str>, prev: &[&str]) -> HeldMessage {
        HeldMessage {
            shown,
            reply_to: reply_to.map(str::to_owned),
            prev_messages: prev.iter().map(|id| id.to_string()).collect(),
            origin_server_ts_ms: 0,
            sender: "@u:x".to_owned(),
        }
    }

    const SHOWN: Shown = Shown::Visible { labelled: false };
    const UNVERIFIED: Shown = Shown::Hidden(HiddenReason::SoftFailedLinkUnverified);

    fn set(ids: &[&str]) -> BTreeSet<EventId> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    /// Three servers by hand:
    /// - s1 shows m1 m2 m3;
    /// - s2 shows m1 m2, hides m3 (link unverified);
    /// - s3 shows m1, hides m2 (check 6) and m4 (link pending); does not hold m3.
    fn three_views() -> Vec<MessageView> {
        let mut s1 = MessageView::new("s1");
        s1.insert("m1", message(SHOWN, None, &[]));
        s1.insert("m2", message(SHOWN, None, &["m1"]));
        s1.insert("m3", message(SHOWN, Some("m2"), &["m2"]));
        let mut s2 = MessageView::new("s2");
        s2.insert("m1", message(SHOWN, None, &[]));
        s2.insert("m2", message(SHOWN, None, &["m1"]));
        s2.insert("m3", message(UNVERIFIED, Some("m2"), &["m2"]));
        let mut s3 = MessageView::new("s3");
        s3.insert("m1", message(SHOWN, None, &[]));
        s3.insert(
            "m2",
            message(
                Shown::Hidden(HiddenReason::SoftFailedCurrentState),
                None,
                &["m1"],
            ),
        );
        s3.insert(
            "m4",
            message(
                Shown::Hidden(HiddenReason::SoftFailedLinkPending),
                None,
                &["m2"],
            ),
        );
        vec![s1, s2, s3]
    }

    #[test]
    fn divergence_is_the_symmetric_difference_over_the_union() {
        assert_eq!(divergence(&set(&["a", "b"]), &set(&["b", "c"])), 2.0 / 3.0);
        assert_eq!(divergence(&set(&["a"]), &set(&["a"])), 0.0);
        assert_eq!(divergence(&set(&["a"]), &set(&[])), 1.0);
        // Empty union: no divergence.
        assert_eq!(divergence(&set(&[]), &set(&[])), 0.0);
    }

    #[test]
    fn the_divergence_matrix_is_symmetric_with_mean_and_max_over_pairs() {
        let result = divergence_matrix(&three_views());
        // Visible: s1 {m1,m2,m3}, s2 {m1,m2}, s3 {m1}.
        // s1-s2: {m3} / {m1,m2,m3} = 1/3; s1-s3: {m2,m3}/3 = 2/3; s2-s3: {m2}/{m1,m2} = 1/2.
        assert_eq!(result.servers, vec!["s1", "s2", "s3"]);
        assert_eq!(result.matrix[0][1], 1.0 / 3.0);
        assert_eq!(result.matrix[1][0], 1.0 / 3.0);
        assert_eq!(result.matrix[0][2], 2.0 / 3.0);
        assert_eq!(result.matrix[1][2], 0.5);
        assert_eq!(result.matrix[2][2], 0.0);
        assert!((result.mean - (1.0 / 3.0 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(result.max, 2.0 / 3.0);
        let single = divergence_matrix(&three_views()[..1]);
        assert_eq!((single.mean, single.max), (0.0, 0.0));
        assert_eq!(single.matrix, vec![vec![0.0]]);
    }

    #[test]
    fn the_bit_set_matrix_equals_the_set_divergence_beyond_one_word() {
        // Five servers over 150 messages (three 64-bit words), each showing, hiding or not
        // holding a message by a fixed pattern; every cell must be `divergence` of the sets.
        let views: Vec<MessageView> = (0..5u32)
            .map(|server| {
                let mut view = MessageView::new(&format!("s{server}"));
                for message in 0..150u32 {
                    match (message * 7 + server * 13) % 5 {
                        0 => {}
                        1 => view.insert(&format!("$m{message}"), message_shown(UNVERIFIED)),
                        _ => view.insert(&format!("$m{message}"), message_shown(SHOWN)),
                    }
                }
                view
            })
            .collect();
        let result = divergence_matrix(&views);
        let mut sum = 0.0;
        for i in 0..views.len() {
            for j in 0..views.len() {
                let expected = if i == j {
                    0.0
                } else {
                    divergence(&views[i].visible(), &views[j].visible())
                };
                assert_eq!(result.matrix[i][j], expected, "cell {i} {j}");
                if i < j {
                    sum += expected;
                }
            }
        }
        assert!(result.matrix[0][1] > 0.0);
        assert_eq!(result.mean, sum / 10.0);
        assert_eq!(
            visible_somewhere_hidden_elsewhere(&views),
            room_messages(&views)
                .iter()
                .filter(|id| views.iter().any(|v| v.is_visible(id))
                    && views.iter().any(|v| v.is_hidden(id)))
                .count() as f64
                / room_messages(&views).len() as f64
        );
    }

    fn message_shown(shown: Shown) -> HeldMessage {
        message(shown, None, &[])
    }

    #[test]
    fn hidden_shares_count_against_every_message_held_anywhere() {
        let shares = hidden_shares(&three_views());
        // Room messages: m1 m2 m3 m4 = 4.
        assert_eq!(shares[0].room_messages, 4);
        assert_eq!(
            (shares[0].held, shares[0].visible, shares[0].hidden),
            (3, 3, 0)
        );
        assert_eq!(shares[0].hidden_share, 0.0);
        assert_eq!(shares[1].hidden, 1);
        assert_eq!(shares[1].hidden_share, 0.25);
        assert_eq!(
            shares[1].hidden_by_reason,
            BTreeMap::from([("soft-failed-link-unverified".to_owned(), 1)])
        );
        assert_eq!(shares[2].hidden, 2);
        assert_eq!(shares[2].hidden_share, 0.5);
        assert_eq!(
            shares[2].hidden_by_reason,
            BTreeMap::from([
                ("soft-failed-current-state".to_owned(), 1),
                ("soft-failed-link-pending".to_owned(), 1)
            ])
        );
        assert_eq!(
            hidden_shares(&[MessageView::new("empty")])[0].hidden_share,
            0.0
        );
    }

    #[test]
    fn split_messages_are_visible_somewhere_and_held_hidden_elsewhere() {
        // m2 (shown on s1, s2; hidden on s3) and m3 (shown on s1, hidden on s2) are split; m1 is
        // shown everywhere; m4 is hidden on its only holder. 2 / 4.
        assert_eq!(visible_somewhere_hidden_elsewhere(&three_views()), 0.5);
        // Not holding is not hiding: m3 missing from s3 alone would not split it.
        let views = three_views();
        let only_s1_s3 = [views[0].clone(), views[2].clone()];
        // m2 split; m1 shown on both; m3 only on s1 (not held on s3); m4 hidden only. 1 / 4.
        assert_eq!(visible_somewhere_hidden_elsewhere(&only_s1_s3), 0.25);
        assert_eq!(visible_somewhere_hidden_elsewhere(&[]), 0.0);
    }

    #[test]
    fn orphans_reply_to_or_follow_what_the_server_does_not_show() {
        let views = three_views();
        // s1 shows everything: no orphans.
        assert_eq!(orphans(&views[0]).orphans, 0);
        // s2 hides m3, which nothing visible follows: no orphan.
        assert_eq!(orphans(&views[1]).orphan_ratio, 0.0);
        // A server showing m3 (a reply to m2, following m2) while hiding m2: one orphan of two
        // visible, counted once although it is both kinds.
        let mut s4 = MessageView::new("s4");
        s4.insert("m1", message(SHOWN, None, &[]));
        s4.insert("m2", message(UNVERIFIED, None, &["m1"]));
        s4.insert("m3", message(SHOWN, Some("m2"), &["m2"]));
        let result = orphans(&s4);
        assert_eq!(
            (result.visible, result.reply_orphans, result.follow_orphans),
            (2, 1, 1)
        );
        assert_eq!(result.orphans, 1);
        assert_eq!(result.orphan_ratio, 0.5);
        // A reply to a message not held at all is an orphan; a message whose predecessor is not
        // held is not (not held is not hidden).
        let mut s5 = MessageView::new("s5");
        s5.insert("r", message(SHOWN, Some("gone"), &[]));
        s5.insert("f", message(SHOWN, None, &["gone"]));
        let result = orphans(&s5);
        assert_eq!((result.reply_orphans, result.follow_orphans), (1, 0));
        assert_eq!(result.orphan_ratio, 0.5);
        assert_eq!(orphans(&MessageView::new("none")).orphan_ratio, 0.0);
    }

    /// The numbered views of the testbed's servers against their message views: every figure.
    fn assert_numbered_equal(views: &[MessageView], numbered: &NumberedViews) {
        assert_eq!(numbered.room_messages, room_messages(views).len());
        assert_eq!(numbered.hidden_shares(), hidden_shares(views));
        let orphans_each: Vec<Orphans> = views.iter().map(orphans).collect();
        assert_eq!(numbered.orphans(), orphans_each);
        assert_eq!(numbered.divergence_matrix(), divergence_matrix(views));
        assert_eq!(
            numbered.visible_somewhere_hidden_elsewhere().to_bits(),
            visible_somewhere_hidden_elsewhere(views).to_bits()
        );
    }

    #[test]
    fn numbered_views_walk_through_state_events_to_hidden_messages() {
        use crate::room::links::KeyInvalidation;
        use crate::room::policy::RoomPolicy;
        use crate::room::testbed::{User, public_room};
        use serde_json::json;
        // Under P1 a.example hides bob's m1 (bob's link unverified there); carol then changes
        // the topic on top of m1 and says m2 on top of the topic, and alice replies to an event
        // nobody holds. On a.example m2 follows a hidden message through a state event (a
        // follow orphan), and the reply is a reply orphan.
        let policy = RoomPolicy::P1;
        let version = policy.room_version;
        let carol = User::new(&version, "carol", "c.example");
        let alice = User::new(&version, "alice", "a.example");
        let bob = User::new(&version, "bob", "b.example");
        let (mut federation, _) = public_room(
            &["a.example", "b.example", "c.example"],
            &policy,
            &carol,
            &[&alice, &bob],
        );
        federation.broadcast(&carol, MESSAGE_TYPE, None, json!({"body": "hi"}), 40);
        federation.server("a.example").links.key_invalidated(
            "b.example",
            "ed25519:1",
            KeyInvalidation::Absent,
            50,
        );
        federation.broadcast(&bob, MESSAGE_TYPE, None, json!({"body": "m1"}), 60);
        let topic = json!({"topic": "t"});
        federation.broadcast(&carol, "m.room.topic", Some(""), topic, 65);
        federation.broadcast(&carol, MESSAGE_TYPE, None, json!({"body": "m2"}), 70);
        let reply = json!({"body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": "$gone"}}});
        federation.broadcast(&alice, MESSAGE_TYPE, None, reply, 80);
        let views: Vec<MessageView> = federation
            .servers
            .iter()
            .map(|server| MessageView::from_room(&server.name, &server.room))
            .collect();
        let numbered = NumberedViews::new(
            federation
                .servers
                .iter()
                .map(|server| (server.name.as_str(), &server.room)),
        );
        let on_a = orphans(&views[0]);
        assert_eq!(on_a.visible, 3, "{on_a:?}");
        assert_eq!(hidden_shares(&views)[0].hidden, 1);
        assert_eq!(
            (on_a.follow_orphans, on_a.reply_orphans),
            (1, 1),
            "{on_a:?}"
        );
        assert_eq!(numbered.views[0].follow_orphans, 1);
        assert_eq!(numbered.views[1].reply_orphans, 1);
        assert_eq!(numbered.views[2].visible_replies, 1);
        assert_numbered_equal(&views, &numbered);
        // Any subset and order of the servers.
        let reversed: Vec<MessageView> = views.iter().rev().take(2).cloned().collect();
        let numbered = NumberedViews::new(
            federation
                .servers
                .iter()
                .rev()
                .take(2)
                .map(|server| (server.name.as_str(), &server.room)),
        );
        assert_numbered_equal(&reversed, &numbered);
    }

    #[test]
    fn containment_uses_nearest_rank_with_never_last() {
        // Ten observers after a start at 1000: delays 0 (turned before the start), 100..=800,
        // and one never.
        let mut times: Vec<Option<i64>> = vec![Some(900)];
        times.extend((1..=8).map(|step| Some(1_000 + 100 * step)));
        times.push(None);
        let result = containment(&times, 1_000);
        assert_eq!(result.observers, 10);
        // 50%: rank 5 → delays sorted 0,100,...,800 → the 5th is 400.
        assert_eq!(result.p50_ms, Some(400));
        // 95%: rank ceil(9.5) = 10 → never.
        assert_eq!(result.p95_ms, None);
        assert_eq!(result.p100_ms, None);
        // Without the never: nine observers, rank ceil(8.55) = 9 → 800 for 95 and 100.
        let result = containment(&times[..9], 1_000);
        assert_eq!(result.p50_ms, Some(400));
        assert_eq!(result.p95_ms, Some(800));
        assert_eq!(result.p100_ms, Some(800));
        // One observer: every percentile is it.
        assert_eq!(containment(&[Some(1_500)], 1_000).p50_ms, Some(500));
        let empty = containment(&[], 0);
        assert_eq!(
            (empty.observers, empty.p50_ms, empty.p100_ms),
            (0, None, None)
        );
        // Order of the input does not matter.
        let mut reversed = times.clone();
        reversed.reverse();
        assert_eq!(containment(&reversed, 1_000), containment(&times, 1_000));
    }

    #[test]
    fn ages_fall_into_half_open_buckets() {
        let edges = [10, 100];
        assert_eq!(bucket_of(-5, &edges), 0);
        assert_eq!(bucket_of(0, &edges), 0);
        assert_eq!(bucket_of(9, &edges), 0);
        assert_eq!(bucket_of(10, &edges), 1);
        assert_eq!(bucket_of(99, &edges), 1);
        assert_eq!(bucket_of(100, &edges), 2);
        assert_eq!(bucket_of(5, &[]), 0);
    }

    #[test]
    fn identity_collisions_are_user_ids_shown_for_several_member_keys() {
        let info: BTreeMap<String, Option<String>> = [
            ("@k1", Some("@bob:b")),
            ("@k2", Some("@bob:b")),
            ("@k3", Some("@carol:c")),
            ("@k4", None),
            ("@k5", None),
        ]
        .into_iter()
        .map(|(key, id)| (key.to_owned(), id.map(str::to_owned)))
        .collect();
        assert_eq!(
            identity_collisions(&info),
            BTreeMap::from([(
                "@bob:b".to_owned(),
                vec!["@k1".to_owned(), "@k2".to_owned()]
            )])
        );
        assert!(identity_collisions(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn reply_targets_are_read_from_relates_to() {
        let content = serde_json::json!({
            "body": "> quote",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$target"}}
        });
        assert_eq!(reply_target(&content), Some("$target".to_owned()));
        assert_eq!(reply_target(&serde_json::json!({"body": "x"})), None);
        let wrong = serde_json::json!({"m.relates_to": {"m.in_reply_to": {"event_id": 5}}});
        assert_eq!(reply_target(&wrong), None);
    }
}
