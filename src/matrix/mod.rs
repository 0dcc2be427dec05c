//! The Matrix protocol, as pure functions: no clock, no randomness, no I/O.
//!
//! Time (`now_ms`) and keys come in as arguments. Nothing here knows about the simulation engine.

pub mod auth;
pub mod dag;
pub mod pdu;
pub mod room_version;
pub mod state_res;

pub use pdu::{EventId, Pdu, StateKey, StateMap};
pub use room_version::{MSC4430_ID, RoomVersion, StateResVersion};
pub mod canonical_json;
pub mod crypto_mode;
pub mod event_builder;
pub mod hashes;
pub mod member_keys;
pub mod redaction;
pub mod server_keys;
pub mod signing;
