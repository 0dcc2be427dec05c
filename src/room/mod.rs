//! One homeserver's view of its rooms: the receipt pipeline on signed PDUs (PDU checks 1–6 and
//! MSC4430's link rule), the member link table, the per-room DAG with its forward extremities and
//! current state, and what clients are shown.
//!
//! Sans-IO: every function takes the time (`now_ms`) and the keys it needs as arguments and
//! returns what happened; fetching keys or missing events is the caller's job.
//!
//! - [`acl`]: server ACLs and MSC4430's `m.federate: false`, decided before the pipeline.
//! - [`checks`]: PDU checks 1–3 (format, signatures, hashes).
//! - [`room_state`]: one room as one server sees it (DAG, fates, extremities, current state,
//!   timeline, member_info).
//! - [`pipeline`]: checks 1–6 in order plus the link rule, on a [`room_state::RoomState`].
//! - [`links`]: the member link table and its state machine.
//! - [`keys`]: the server keys the room layer reads.
//! - [`memo`]: checks 1–3 computed once per distinct event copy and shared across servers.
//! - [`metrics`]: divergence, hidden shares, orphans, containment and bitrot over servers' views.
//! - [`shared`]: checks 4–5, the states at each event and current states computed once per
//!   event (extremity set) and shared across servers.
//! - [`policy`]: the room-layer knobs and the P0–P9 presets.
//! - [`properties`]: always-properties over several servers' views (for scenario checks).
//! - [`testbed`]: a hand-fed federation of a few servers for tests and scripted reproductions.
//! - [`script`]: scripted reproductions over the testbed (`fedsim repro`): language, runner, outputs.

pub mod acl;
pub mod checks;
pub mod intern;
pub mod keys;
pub mod links;
pub mod memo;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod properties;
pub mod room_state;
pub mod script;
pub mod shared;
pub mod testbed;
