//! The event queue: a binary heap of near events and time buckets of far ones, ordered by
//! `(at_ms, seq)`.
//!
//! Ordering guarantee: events come out in time order, and events scheduled for the same
//! millisecond come out in the order they were pushed (FIFO), because every push takes the next
//! insertion sequence number. Nothing else (payload contents, heap layout) affects the order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use super::time::SimTime;

struct Entry<E> {
    at_ms: SimTime,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest (then lowest seq) is on top.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// Events due within this many milliseconds of now when pushed go to the small `near` heap,
/// later ones to `far` buckets of [`FAR_BUCKET_MS`] by time; a bucket moves into the heap once
/// the heap's first event is not earlier than the bucket's start. Speed only: a pop takes the
/// heap's first entry by `(at_ms, seq)` only when it is earlier than every far event, so the
/// order is the one a single heap gives. A world keeps hundreds of thousands of far timers (key
/// refreshes, retries, the next message) pending while most pops are network events a few
/// milliseconds ahead: in one heap every pop walked a path through all of them.
const NEAR_HORIZON_MS: SimTime = 2_000;

/// The time span of one far bucket.
const FAR_BUCKET_MS: SimTime = 4_096;

/// Far events of one time span, with the earliest time among them.
struct FarBucket<E> {
    earliest_ms: SimTime,
    entries: Vec<Entry<E>>,
}

/// A time-ordered queue of events with FIFO ties and a clock that only moves forward.
pub struct EventQueue<E> {
    /// Events pushed at most [`NEAR_HORIZON_MS`] ahead of the clock, and far buckets moved in.
    near: BinaryHeap<Entry<E>>,
    /// The other events by bucket (`at_ms / FAR_BUCKET_MS`): every entry of bucket `b` is due
    /// in `[b × FAR_BUCKET_MS, (b + 1) × FAR_BUCKET_MS)`.
    far: BTreeMap<SimTime, FarBucket<E>>,
    /// Events in `far`.
    far_len: usize,
    next_seq: u64,
    now_ms: SimTime,
    popped_count: u64,
    len_max: usize,
    /// When on, every push time and every pop in order (see [`EventQueue::record_schedule`]).
    schedule: Option<Vec<u64>>,
}

/// A pop in a recorded schedule (push entries are event times, always below it).
pub const SCHEDULE_POP: u64 = u64::MAX;

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> EventQueue<E> {
        EventQueue {
            near: BinaryHeap::new(),
            far: BTreeMap::new(),
            far_len: 0,
            next_seq: 0,
            now_ms: 0,
            popped_count: 0,
            len_max: 0,
            schedule: None,
        }
    }

    /// Starts recording the schedule: from now on every push appends its time and every pop
    /// appends [`SCHEDULE_POP`]. Replaying these operations through an empty queue (with the
    /// pushes made so far first) reproduces the same pops in the same order, since the order
    /// depends only on times and push order; benchmarks use it to time the queue alone.
    pub fn record_schedule(&mut self) {
        let far = self.far.values().flat_map(|bucket| bucket.entries.iter());
        let pending = (self.near.iter().chain(far)).map(|entry| (entry.seq, entry.at_ms));
        let mut pending: Vec<(u64, u64)> = pending.collect();
        pending.sort_unstable();
        self.schedule = Some(pending.into_iter().map(|(_, at_ms)| at_ms).collect());
    }

    /// The schedule recorded since [`EventQueue::record_schedule`] (pending pushes first).
    pub fn take_schedule(&mut self) -> Vec<u64> {
        self.schedule.take().unwrap_or_default()
    }

    /// The time of the event most recently popped (the simulated "now").
    pub fn now_ms(&self) -> SimTime {
        self.now_ms
    }

    /// Schedules `event` at `at_ms`. Scheduling in the past is a bug in the caller.
    pub fn push(&mut self, at_ms: SimTime, event: E) {
        assert!(
            at_ms >= self.now_ms,
            "event scheduled in the past: at {at_ms} ms, now {} ms",
            self.now_ms
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(Entry { at_ms, seq, event });
        if let Some(schedule) = &mut self.schedule {
            schedule.push(at_ms);
        }
    }

    /// Files `entry` in the near heap or its far bucket.
    fn insert(&mut self, entry: Entry<E>) {
        let at_ms = entry.at_ms;
        if at_ms - self.now_ms <= NEAR_HORIZON_MS {
            self.near.push(entry);
        } else {
            let bucket = self
                .far
                .entry(at_ms / FAR_BUCKET_MS)
                .or_insert_with(|| FarBucket {
                    earliest_ms: at_ms,
                    entries: Vec::new(),
                });
            bucket.earliest_ms = bucket.earliest_ms.min(at_ms);
            bucket.entries.push(entry);
            self.far_len += 1;
        }
        self.len_max = self.len_max.max(self.len());
    }

    /// Reserves the next `count` sequence numbers and returns the first: events pushed later
    /// with [`EventQueue::push_reserved`] under these numbers come out exactly as if they had
    /// been pushed now, in the order of their numbers. (A world whose build would push very
    /// many events can keep them out of the heap until they are due.)
    pub fn reserve_seqs(&mut self, count: u64) -> u64 {
        let first = self.next_seq;
        self.next_seq += count;
        first
    }

    /// Schedules `event` at `at_ms` under `seq`, a number from [`EventQueue::reserve_seqs`]
    /// (each used once). Not recorded in a schedule (see [`EventQueue::record_schedule`]).
    pub fn push_reserved(&mut self, at_ms: SimTime, seq: u64, event: E) {
        assert!(
            at_ms >= self.now_ms,
            "event scheduled in the past: at {at_ms} ms, now {} ms",
            self.now_ms
        );
        assert!(
            seq < self.next_seq,
            "sequence number {seq} was not reserved"
        );
        assert!(
            self.schedule.is_none(),
            "a recorded schedule cannot replay reserved pushes"
        );
        self.insert(Entry { at_ms, seq, event });
    }

    /// Schedules `event` `delay_ms` after now.
    pub fn push_after(&mut self, delay_ms: u64, event: E) {
        self.push(self.now_ms.saturating_add(delay_ms), event);
    }

    /// Removes the earliest event and advances the clock to its time.
    pub fn pop(&mut self) -> Option<(SimTime, u64, E)> {
        // Move far buckets in until the heap's first entry is earlier than every far event
        // (every event of a bucket is due at or after the bucket's start).
        while let Some(entry) = self.far.first_entry() {
            let starts_ms = entry.key() * FAR_BUCKET_MS;
            if self
                .near
                .peek()
                .is_some_and(|first| first.at_ms < starts_ms)
            {
                break;
            }
            let bucket = entry.remove();
            self.far_len -= bucket.entries.len();
            self.near.extend(bucket.entries);
        }
        let entry = self.near.pop()?;
        debug_assert!(entry.at_ms >= self.now_ms);
        self.now_ms = entry.at_ms;
        self.popped_count += 1;
        if let Some(schedule) = &mut self.schedule {
            schedule.push(SCHEDULE_POP);
        }
        Some((entry.at_ms, entry.seq, entry.event))
    }

    /// The time of the earliest pending event.
    pub fn peek_time_ms(&self) -> Option<SimTime> {
        let near = self.near.peek().map(|entry| entry.at_ms);
        let far = self.far.values().next().map(|bucket| bucket.earliest_ms);
        match (near, far) {
            (Some(near), Some(far)) => Some(near.min(far)),
            (near, far) => near.or(far),
        }
    }

    /// The event the next [`EventQueue::pop`] returns, if any (without moving far buckets in:
    /// the earliest far event is found in the first bucket). For hints such as prefetching.
    pub fn peek(&self) -> Option<&E> {
        let near = self.near.peek();
        let far = self.far.values().next().and_then(|bucket| {
            bucket
                .entries
                .iter()
                .min_by_key(|entry| (entry.at_ms, entry.seq))
        });
        match (near, far) {
            (Some(near), Some(far)) if (far.at_ms, far.seq) < (near.at_ms, near.seq) => {
                Some(&far.event)
            }
            (Some(near), _) => Some(&near.event),
            (None, far) => far.map(|entry| &entry.event),
        }
    }

    /// The event the next [`EventQueue::pop`] returns when it is the near heap's first and
    /// due before every far bucket starts, else `None` (then [`EventQueue::peek`] knows). Costs
    /// two lookups, no scan of a far bucket: for hints on every pop.
    pub fn peek_near(&self) -> Option<&E> {
        let near = self.near.peek()?;
        match self.far.keys().next() {
            Some(bucket) if near.at_ms >= bucket * FAR_BUCKET_MS => None,
            _ => Some(&near.event),
        }
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.near.len() + self.far_len
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.near.is_empty() && self.far_len == 0
    }

    /// Events popped so far.
    pub fn popped_count(&self) -> u64 {
        self.popped_count
    }

    /// The largest number of pending events seen.
    pub fn len_max(&self) -> usize {
        self.len_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserved_pushes_come_out_as_if_pushed_when_reserved() {
        let mut direct = EventQueue::new();
        for (at_ms, name) in [(10, "r0"), (5, "r1"), (10, "r2"), (10, "a"), (7, "b")] {
            direct.push(at_ms, name);
        }
        let mut reserved = EventQueue::new();
        let first = reserved.reserve_seqs(3);
        reserved.push(10, "a");
        reserved.push(7, "b");
        // Pushed late and out of order; due times not yet reached.
        reserved.push_reserved(10, first + 2, "r2");
        reserved.push_reserved(5, first + 1, "r1");
        let mut popped = vec![reserved.pop().unwrap().2];
        reserved.push_reserved(10, first, "r0");
        while let Some((_, _, name)) = reserved.pop() {
            popped.push(name);
        }
        let expected: Vec<&str> = std::iter::from_fn(|| direct.pop().map(|(_, _, e)| e)).collect();
        assert_eq!(popped, expected);
        assert_eq!(popped, vec!["r1", "b", "r0", "r2", "a"]);
    }

    #[test]
    fn peek_shows_the_event_the_next_pop_returns() {
        let mut queue = EventQueue::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut label = 0u64;
        for _ in 0..200 {
            // Near and far events, same-millisecond ties included.
            queue.push(next() % 50_000, label);
            label += 1;
        }
        let mut popped = 0;
        let mut near_hits = 0;
        while let Some(peeked) = queue.peek().copied() {
            let near = queue.peek_near().copied();
            let (_, _, event) = queue.pop().expect("peek saw one");
            assert_eq!(peeked, event);
            // peek_near may abstain, but what it shows is what pop returns.
            if let Some(near) = near {
                assert_eq!(near, event);
                near_hits += 1;
            }
            popped += 1;
            if popped % 3 == 0 && label < 2_000 {
                let now_ms = queue.now_ms();
                for delay_ms in [0, 1_500, 2_500, 9_000 + next() % 20_000] {
                    queue.push(now_ms + delay_ms, label);
                    label += 1;
                }
            }
        }
        assert!(queue.pop().is_none());
        assert!(popped > 1_000);
        assert!(near_hits > popped / 2, "{near_hits} of {popped}");
    }

    #[test]
    #[should_panic(expected = "was not reserved")]
    fn a_reserved_push_needs_a_reserved_number() {
        let mut queue = EventQueue::new();
        queue.push(1, "a");
        queue.push_reserved(1, 1, "b");
    }

    #[test]
    fn equal_times_come_out_fifo() {
        let mut queue = EventQueue::new();
        queue.push(10, "b1");
        queue.push(5, "a");
        queue.push(10, "b2");
        queue.push(10, "b3");
        queue.push(7, "c");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop().map(|(_, _, event)| event)).collect();
        assert_eq!(order, ["a", "c", "b1", "b2", "b3"]);
        assert_eq!(queue.now_ms(), 10);
    }

    #[test]
    #[should_panic(expected = "scheduled in the past")]
    fn refuses_events_in_the_past() {
        let mut queue = EventQueue::new();
        queue.push(10, ());
        queue.pop();
        queue.push(9, ());
    }

    #[test]
    fn a_recorded_schedule_replays_the_same_pops() {
        let mut queue = EventQueue::new();
        queue.push(30, 0u32);
        queue.push(10, 1);
        queue.record_schedule();
        let mut popped = Vec::new();
        let mut next = 2;
        while let Some((at_ms, _, event)) = queue.pop() {
            popped.push((at_ms, event));
            if next < 40 {
                queue.push(at_ms + (next * 7 % 11) as u64, next);
                queue.push(at_ms + (next * 3 % 5) as u64, next + 1);
                next += 2;
            }
        }
        // Replay with payloads numbered in push order: the same pushes give the same pops.
        let mut replay = EventQueue::new();
        let mut pushed = 0u32;
        let mut replayed = Vec::new();
        for operation in queue.take_schedule() {
            if operation == SCHEDULE_POP {
                replayed.push(
                    replay
                        .pop()
                        .map(|(at_ms, _, event)| (at_ms, event))
                        .unwrap(),
                );
            } else {
                replay.push(operation, pushed);
                pushed += 1;
            }
        }
        assert_eq!(replayed.len(), popped.len());
        // Payloads were numbered by push order in both runs (the first two pushes: 0, 1).
        assert_eq!(replayed, popped);
    }

    proptest! {
        /// Whatever the push order, pops are sorted by time and, within a time, by push order.
        #[test]
        fn pops_are_sorted_by_time_then_push_order(times in prop::collection::vec(0u64..20, 0..200)) {
            let mut queue = EventQueue::new();
            for (index, at_ms) in times.iter().enumerate() {
                queue.push(*at_ms, index);
            }
            let mut expected: Vec<(u64, usize)> =
                times.iter().enumerate().map(|(index, at_ms)| (*at_ms, index)).collect();
            expected.sort();
            let popped: Vec<(u64, usize)> =
                std::iter::from_fn(|| queue.pop().map(|(at_ms, _, index)| (at_ms, index))).collect();
            prop_assert_eq!(popped, expected);
        }

        /// Pushes near and far from the moving clock, interleaved with pops, come out as from
        /// one ordered set of (time, push number): the near/far split changes no order.
        #[test]
        fn near_and_far_events_interleave_in_order(
            steps in prop::collection::vec((0u64..3 * FAR_BUCKET_MS, 0u8..3), 0..300)
        ) {
            let mut queue = EventQueue::new();
            let mut model = std::collections::BTreeSet::new();
            for (pushed, (delay_ms, pops)) in steps.iter().enumerate() {
                let at_ms = queue.now_ms() + delay_ms;
                queue.push(at_ms, pushed);
                model.insert((at_ms, pushed));
                prop_assert_eq!(queue.peek_time_ms(), model.first().map(|first| first.0));
                for _ in 0..*pops {
                    let popped = queue.pop().map(|(at_ms, _, index)| (at_ms, index));
                    prop_assert_eq!(popped, model.pop_first());
                }
                prop_assert_eq!(queue.len(), model.len());
            }
            let rest: Vec<(u64, usize)> =
                std::iter::from_fn(|| queue.pop().map(|(at_ms, _, index)| (at_ms, index))).collect();
            prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
        }
    }
}
