//! The identifier checks the authorization rules need: user IDs (room versions 10-12), member keys
//! (MSC4430) and the server name of a user or room ID.
//!
//! These are deliberately the *federation* grammars: historical user IDs (any localpart
//! characters except `:` and NUL) are accepted, because the auth rules must accept every event a
//! conforming server may have sent.

use crate::matrix::RoomVersion;
use crate::matrix::member_keys::decode_member_key;

/// The maximum length of a user ID, room ID or event ID in bytes (appendices §Identifier Grammar).
pub const ID_MAX_BYTES: usize = 255;

/// Whether `user` names a room member under `version`'s rules: a user ID `@localpart:server` in
/// room versions 10-12, a member key `@<base64url(ed25519 public key)>` under MSC4430.
///
/// This is the validation the spec applies to `sender`; the auth rules apply it to member
/// `state_key`s, `join_authorised_via_users_server`, `additional_creators` and power-level `users`.
pub fn is_valid_member_id(version: &RoomVersion, user: &str) -> bool {
    if version.member_keys {
        is_valid_member_key(user)
    } else {
        is_valid_user_id(user)
    }
}

/// A user ID as accepted over federation: `@`, a non-empty localpart without `:` or NUL, `:`, a
/// valid server name; at most 255 bytes.
pub fn is_valid_user_id(user: &str) -> bool {
    if user.len() > ID_MAX_BYTES {
        return false;
    }
    let Some(rest) = user.strip_prefix('@') else {
        return false;
    };
    let Some((localpart, server_name)) = rest.split_once(':') else {
        return false;
    };
    !localpart.is_empty() && !localpart.contains('\0') && is_valid_server_name(server_name)
}

/// An MSC4430 member key: `@` + URL-safe unpadded base64 of an Ed25519 public key, in its one
/// canonical spelling (see [`decode_member_key`]). A string that is no public key could never
/// sign an event, so it names no member.
pub fn is_valid_member_key(user: &str) -> bool {
    decode_member_key(user).is_ok()
}

/// The server name part of a user or room ID (`@user:server`, `!opaque:server`): everything after
/// the first `:`. `None` for IDs without a domain (member keys, v12 room IDs).
pub fn server_name_of(id: &str) -> Option<&str> {
    id.split_once(':').map(|(_, server_name)| server_name)
}

/// A server name per the appendices: a hostname (IPv4 literal, `[IPv6]` literal or DNS name of
/// ASCII letters, digits, `-` and `.`) with an optional `:port` of 1-5 digits.
pub fn is_valid_server_name(server_name: &str) -> bool {
    let port = if let Some(ipv6_and_rest) = server_name.strip_prefix('[') {
        let Some((ipv6, rest)) = ipv6_and_rest.split_once(']') else {
            return false;
        };
        if ipv6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match rest {
            "" => None,
            _ => match rest.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        }
    } else {
        let (host, port) = match server_name.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server_name, None),
        };
        let dns_or_ipv4 = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
        if !dns_or_ipv4 {
            return false;
        }
        port
    };
    match port {
        None => true,
        Some(port) => {
            (1..=5).contains(&port.len())
                && port.bytes().all(|byte| byte.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::member_keys::{member_key_user_id, member_signing_key};

    #[test]
    fn user_ids_follow_the_federation_grammar() {
        assert!(is_valid_user_id("@alice:example.org"));
        assert!(is_valid_user_id("@Alice Historical:example.org:8448"));
        assert!(is_valid_user_id("@a:[::1]:80"));
        assert!(is_valid_user_id("@a:1.2.3.4"));
        assert!(!is_valid_user_id("alice:example.org"));
        assert!(!is_valid_user_id("@alice"));
        assert!(!is_valid_user_id("@:example.org"));
        assert!(!is_valid_user_id("@a:exa_mple.org"));
        assert!(!is_valid_user_id("@a:example.org:99999"));
        assert!(!is_valid_user_id("@a:[zz]"));
        assert!(!is_valid_user_id(&format!("@a:{}", "x".repeat(260))));
    }

    #[test]
    fn member_keys_are_43_chars_of_url_safe_base64() {
        let key = member_key_user_id(&member_signing_key(&[7; 32]).verifying_key());
        assert_eq!(key.len(), 44);
        assert!(is_valid_member_key(&key));
        assert!(is_valid_member_key(
            "@l8Hft5qXKn1vfHrg3p4-W8gELQVo8N13JkluMfmn2sQ"
        ));
        assert!(!is_valid_member_key("@alice:example.org"));
        assert!(!is_valid_member_key(&key[1..]));
        // Standard-alphabet characters are not URL-safe base64.
        assert!(!is_valid_member_key(
            "@l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"
        ));
        // Non-canonical trailing bits.
        assert!(!is_valid_member_key(
            "@l8Hft5qXKn1vfHrg3p4-W8gELQVo8N13JkluMfmn2sR"
        ));
        assert!(is_valid_member_id(&RoomVersion::MSC4430, &key));
        assert!(!is_valid_member_id(&RoomVersion::V12, &key));
    }
}
