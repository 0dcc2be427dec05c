//! The event queue: a binary heap ordered by `(at_ms, seq)`.
//!
//! Ordering guarantee: events come out in time order, and events scheduled for the same
//! millisecond come out in the order they were pushed (FIFO), because every push takes the next
//! insertion sequence number. Nothing else (payload contents, heap layout) affects the order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

/// A time-ordered queue of events with FIFO ties and a clock that only moves forward.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
    now_ms: SimTime,
    popped_count: u64,
    len_max: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            now_ms: 0,
            popped_count: 0,
            len_max: 0,
        }
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
        self.heap.push(Entry { at_ms, seq, event });
        self.len_max = self.len_max.max(self.heap.len());
    }

    /// Schedules `event` `delay_ms` after now.
    pub fn push_after(&mut self, delay_ms: u64, event: E) {
        self.push(self.now_ms.saturating_add(delay_ms), event);
    }

    /// Removes the earliest event and advances the clock to its time.
    pub fn pop(&mut self) -> Option<(SimTime, u64, E)> {
        let entry = self.heap.pop()?;
        debug_assert!(entry.at_ms >= self.now_ms);
        self.now_ms = entry.at_ms;
        self.popped_count += 1;
        Some((entry.at_ms, entry.seq, entry.event))
    }

    /// The time of the earliest pending event.
    pub fn peek_time_ms(&self) -> Option<SimTime> {
        self.heap.peek().map(|entry| entry.at_ms)
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
    }
}
