//! `fedsim pdu sign` and `fedsim pdu inspect`: the protocol layer as a tool for people.
//!
//! `sign` reads one JSON object; an object with a `type` is an event and gets `hashes` and the
//! signature a server (or, in the MSC4430 version, a member key) makes in that room version; any
//! other object is signed as plain JSON. `inspect` prints one JSON object describing an event.
//! Both print canonical JSON on stdout. Bad input is one line on stderr and exit code 2.

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::{CliError, read_input};
use crate::matrix::canonical_json;
use crate::matrix::hashes::{self, ContentHashCheck};
use crate::matrix::member_keys;
use crate::matrix::redaction;
use crate::matrix::room_version::RoomVersion;
use crate::matrix::signing::{self, KeyId, ServerSigningKey};

/// `fedsim pdu ...`
#[derive(Debug, Subcommand)]
pub enum PduCommand {
    /// Sign an event (adds `hashes` and a signature) or a plain JSON object; prints canonical JSON.
    Sign(SignArgs),
    /// Print an event's ID, content-hash check, redacted form and canonical form as JSON.
    Inspect(InspectArgs),
}

/// Arguments of `fedsim pdu sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The JSON file to sign, or `-` for standard input.
    #[arg(default_value = "-")]
    pub file: String,
    /// The signing server's name (the signature entity).
    #[arg(long = "server-name", visible_alias = "server")]
    pub server_name: Option<String>,
    /// The server key's ID.
    #[arg(long, default_value = "ed25519:1")]
    pub key_id: String,
    /// The server key's 32-byte seed as 64 hex digits.
    #[arg(long, conflicts_with_all = ["seed", "key_file"])]
    pub key_seed: Option<String>,
    /// The server key's 32-byte seed as base64 (padded or not), as in the spec's test vectors.
    #[arg(long, conflicts_with = "key_file")]
    pub seed: Option<String>,
    /// A file holding the seed: 64 hex digits, base64, or Synapse's `ed25519 <version> <base64>`.
    #[arg(long)]
    pub key_file: Option<String>,
    /// The room version whose redaction and signing rules apply (`msc4430` is an alias).
    #[arg(long, default_value = "12")]
    pub room_version: String,
    /// MSC4430: the member key's seed (64 hex digits or base64). The event is signed under
    /// `"sender"`; a server key given as well co-signs `m.room.member` events.
    #[arg(long)]
    pub member_key: Option<String>,
}

/// Arguments of `fedsim pdu inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The event JSON file, or `-` for standard input.
    #[arg(default_value = "-")]
    pub file: String,
    /// The room version whose redaction rules apply (`msc4430` is an alias).
    #[arg(long, default_value = "12")]
    pub room_version: String,
}

/// Runs a `fedsim pdu` subcommand, printing its result on stdout.
pub fn run(command: &PduCommand) -> Result<(), CliError> {
    let output = match command {
        PduCommand::Sign(args) => sign(args)?,
        PduCommand::Inspect(args) => inspect(args)?,
    };
    // Not println!: it panics when stdout is a closed pipe.
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{output}")
        .map_err(|error| CliError::failure(format!("cannot write to stdout: {error}")))
}

fn input_name(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

fn room_version(id: &str) -> Result<RoomVersion, CliError> {
    RoomVersion::parse(id).map_err(|error| CliError::input(format!("--room-version: {error}")))
}

/// Reads one JSON object from `file`, strictly (every supported room version is strict).
fn read_object(file: &str) -> Result<Value, CliError> {
    let text = read_input(file)?;
    let name = input_name(file);
    let value = canonical_json::parse_strict(&text)
        .map_err(|error| CliError::input(format!("{name}: {error}")))?;
    if !value.is_object() {
        return Err(CliError::input(format!("{name}: expected one JSON object")));
    }
    Ok(value)
}

/// Decodes a seed written as 64 hex digits or as base64 of 32 bytes.
fn seed_bytes(flag: &str, text: &str) -> Result<[u8; 32], CliError> {
    let text = text.trim();
    let bad = |problem: String| CliError::input(format!("{flag}: {problem}"));
    if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        let mut seed = [0u8; 32];
        for (index, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16)
                .map_err(|error| bad(error.to_string()))?;
        }
        return Ok(seed);
    }
    let bytes = signing::decode_base64(text)
        .or_else(|_| signing::decode_url_safe_base64(text))
        .map_err(|error| {
            bad(format!(
                "not 64 hex digits and not base64 ({error}); a seed is 32 bytes"
            ))
        })?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("a seed must be 32 bytes, got {}", bytes.len())))
}

/// The server key from `--key-seed`, `--seed` or `--key-file`, if any was given.
fn server_key(args: &SignArgs) -> Result<Option<ServerSigningKey>, CliError> {
    let mut key_id_text = args.key_id.clone();
    let seed = if let Some(hex) = &args.key_seed {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(CliError::input(format!(
                "--key-seed: expected 64 hex digits (32 bytes), got {} characters",
                hex.len()
            )));
        }
        seed_bytes("--key-seed", hex)?
    } else if let Some(base64) = &args.seed {
        seed_bytes("--seed", base64)?
    } else if let Some(path) = &args.key_file {
        let text = read_input(path)?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.as_slice() {
            // Synapse's signing key file: `ed25519 <version> <unpadded base64 seed>`.
            ["ed25519", version, seed] => {
                key_id_text = format!("ed25519:{version}");
                seed_bytes(path, seed)?
            }
            [seed] => seed_bytes(path, seed)?,
            _ => {
                return Err(CliError::input(format!(
                    "{path}: expected a seed (64 hex digits or base64) or `ed25519 <version> <seed>`"
                )));
            }
        }
    } else {
        return Ok(None);
    };
    let key_id = KeyId::parse(&key_id_text)
        .map_err(|error| CliError::input(format!("--key-id: {error}")))?;
    Ok(Some(ServerSigningKey::from_seed(key_id, &seed)))
}

fn sign(args: &SignArgs) -> Result<String, CliError> {
    let version = room_version(&args.room_version)?;
    let name = input_name(&args.file);
    let server_key = server_key(args)?;
    let mut value = read_object(&args.file)?;
    let fail = |error: &dyn std::fmt::Display| CliError::input(format!("{name}: {error}"));
    let is_event = value.get("type").is_some();

    if let Some(member_seed) = &args.member_key {
        if !version.member_keys {
            return Err(CliError::input(format!(
                "--member-key: room version {version} has no member keys (use --room-version msc4430)"
            )));
        }
        if !is_event {
            return Err(fail(&"--member-key signs events; the object has no `type`"));
        }
        let member_key = member_keys::member_signing_key(&seed_bytes("--member-key", member_seed)?);
        member_keys::sign_as_member(&version, &mut value, &member_key)
            .map_err(|error| fail(&error))?;
        if let Some(key) = &server_key {
            let server_name = required_server_name(args)?;
            member_keys::cosign_member_event(&version, &mut value, server_name, key)
                .map_err(|error| fail(&error))?;
        }
    } else {
        let key = server_key.ok_or_else(|| {
            CliError::input(
                "a signing key is required: --key-seed HEX, --seed BASE64 or --key-file F",
            )
        })?;
        let server_name = required_server_name(args)?;
        if is_event {
            if version.member_keys {
                return Err(CliError::input(format!(
                    "room version {version} signs events with member keys: pass --member-key"
                )));
            }
            signing::sign_event(&version, &mut value, server_name, &key)
                .map_err(|error| fail(&error))?;
        } else {
            signing::sign_json(&mut value, server_name, &key).map_err(|error| fail(&error))?;
        }
    }
    canonical_json::to_canonical_string(&value).map_err(|error| fail(&error))
}

fn required_server_name(args: &SignArgs) -> Result<&str, CliError> {
    args.server_name
        .as_deref()
        .ok_or_else(|| CliError::input("--server-name NAME is required to sign with a server key"))
}

fn inspect(args: &InspectArgs) -> Result<String, CliError> {
    let version = room_version(&args.room_version)?;
    let name = input_name(&args.file);
    let event = read_object(&args.file)?;
    let fail = |error: &dyn std::fmt::Display| CliError::input(format!("{name}: {error}"));
    let event_id = hashes::event_id(&version, &event).map_err(|error| fail(&error))?;
    let content_hash = hashes::content_hash(&event).map_err(|error| fail(&error))?;
    let check = hashes::check_content_hash(&event).map_err(|error| fail(&error))?;
    let object = event.as_object().expect("read_object returns objects");
    let mut canonical = String::new();
    canonical_json::write_object_without(object, &["signatures", "unsigned"], &mut canonical)
        .map_err(|error| fail(&error))?;
    let mut report = Map::new();
    report.insert("room_version".into(), Value::from(version.id));
    let is_create = event.get("type").and_then(Value::as_str) == Some("m.room.create")
        && event.get("state_key").and_then(Value::as_str) == Some("");
    if is_create && version.room_id_from_create_event {
        // v12+: this create event names the room.
        report.insert(
            "room_id".into(),
            Value::from(hashes::room_id_from_create_event_id(&event_id)),
        );
    }
    report.insert("event_id".into(), Value::from(event_id));
    report.insert(
        "content_hash".into(),
        Value::from(signing::unpadded_base64(&content_hash)),
    );
    report.insert(
        "content_hash_valid".into(),
        Value::from(check == ContentHashCheck::Valid),
    );
    report.insert(
        "content_hash_check".into(),
        Value::from(format!("{check:?}").to_lowercase()),
    );
    report.insert("redacted".into(), redaction::redact(&version, &event));
    report.insert("canonical".into(), Value::from(canonical));
    if version.member_keys {
        let verdict = member_keys::verify_member_signature(&version, &event);
        report.insert(
            "member_signature_valid".into(),
            Value::Bool(verdict.is_ok()),
        );
        if let Err(error) = verdict {
            report.insert(
                "member_signature_error".into(),
                Value::from(error.to_string()),
            );
        }
    }
    canonical_json::to_canonical_string(&Value::Object(report)).map_err(|error| fail(&error))
}
