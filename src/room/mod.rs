//! One homeserver's view of its rooms: the receipt pipeline on signed PDUs (PDU checks 1–6 and
//! MSC4430's link rule), the member link table, the per-room DAG with its forward extremities and
//! current state, and what clients are shown.
//!
//! Sans-IO: every function takes the time (`now_ms`) and the keys it needs as arguments and
//! returns what happened; fetching keys or missing events is the caller's job.

pub mod checks;
pub mod keys;
pub mod links;
pub mod policy;
