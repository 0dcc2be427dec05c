//! Server ACLs (`m.room.server_acl`, s2s "Server Access Control Lists") and MSC4430's
//! `m.federate: false`, as pure decisions the network side of a server applies before the
//! receipt pipeline.
//!
//! ACL evaluation (the port is ignored, globs are case-insensitive, `*` = any run of characters,
//! `?` = one character): no ACL event → allowed; an IP literal with `allow_ip_literals: false`
//! → denied; matching `deny` → denied; matching `allow` → allowed; otherwise denied (`allow`
//! defaults to empty, which denies everyone).
//!
//! Whom an ACL is applied to differs by room version:
//! - today: the request's origin server, and an event's sender domain;
//! - MSC4430: the origin server, and the domain of the sender's link **only if the link is
//!   verified** — an unverified claim of a trusted domain must not pass an ACL, and an
//!   unverified claim of a denied domain proves nothing.

use serde_json::Value;

use super::links::{LinkStatus, LinkTable};
use crate::matrix::RoomVersion;
use crate::matrix::event_builder::server_of_user_id;

/// Why inbound federation for an event is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server {server} is denied by the room's server ACL")]
    AclDenied { server: String },
    #[error("the room has m.federate: false, so it takes no inbound federation (MSC4430)")]
    NotFederated,
}

/// Whether `server_name` may take part in a room whose `m.room.server_acl` content is `acl`
/// (`None`: the room has no ACL).
pub fn server_acl_allows(acl: Option<&Value>, server_name: &str) -> bool {
    let Some(acl) = acl else {
        return true;
    };
    let host = host_of(server_name);
    let allow_ip_literals = acl
        .get("allow_ip_literals")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !allow_ip_literals && is_ip_literal(host) {
        return false;
    }
    let patterns = |field: &str| -> Vec<&str> {
        acl.get(field)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    if patterns("deny").iter().any(|glob| glob_matches(glob, host)) {
        return false;
    }
    patterns("allow")
        .iter()
        .any(|glob| glob_matches(glob, host))
}

/// The decision for one event arriving from `origin`: the room's ACL applied to the origin and
/// to the sender's domain (today) or the sender's verified link domain (MSC4430), and MSC4430's
/// `m.federate: false` (`federate` is the create event's `m.federate`, default true).
pub fn inbound_event_allowed(
    version: &RoomVersion,
    acl: Option<&Value>,
    federate: bool,
    links: &LinkTable,
    origin: &str,
    sender: &str,
) -> Result<(), Refusal> {
    if version.member_keys && !federate {
        return Err(Refusal::NotFederated);
    }
    let denied = |server: &str| Refusal::AclDenied {
        server: server.to_owned(),
    };
    if !server_acl_allows(acl, origin) {
        return Err(denied(origin));
    }
    let sender_domain = if version.member_keys {
        links
            .link(sender)
            .filter(|link| link.status == LinkStatus::Verified)
            .and_then(|link| link.domain.as_deref().map(str::to_owned))
    } else {
        server_of_user_id(sender).map(str::to_owned)
    };
    match sender_domain {
        Some(domain) if !server_acl_allows(acl, &domain) => Err(denied(&domain)),
        _ => Ok(()),
    }
}

/// The host part of a server name: without the port, and without the brackets of an IPv6
/// literal.
fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => server_name,
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// Case-insensitive glob matching with `*` and `?`.
fn glob_matches(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.to_lowercase().chars().collect();
    let text: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matching with backtracking to the last `*`.
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && (glob[g] == '?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if g < glob.len() && glob[g] == '*' {
            star = Some((g, t));
            g += 1;
        } else if let Some((star_g, star_t)) = star {
            g = star_g + 1;
            t = star_t + 1;
            star = Some((star_g, star_t + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::matrix::event_builder::{EventDraft, EventSigner, build_pdu};
    use crate::matrix::member_keys::{member_key_user_id, member_signing_key};
    use crate::matrix::server_keys::ServerKeys;
    use crate::matrix::signing::{KeyId, ServerSigningKey};
    use crate::room::keys::{KeyRing, KeySource};
    use crate::room::policy::InvalidationRule;
    use serde_json::json;

    #[test]
    fn acl_evaluation_follows_the_spec_order() {
        assert!(server_acl_allows(None, "anything.example"));
        let acl = json!({"allow": ["*"], "deny": ["*.evil.example", "evil.example"],
                         "allow_ip_literals": false});
        assert!(server_acl_allows(Some(&acl), "good.example"));
        assert!(server_acl_allows(Some(&acl), "good.example:8448"));
        assert!(!server_acl_allows(Some(&acl), "evil.example"));
        assert!(!server_acl_allows(Some(&acl), "sub.EVIL.example:443"));
        assert!(!server_acl_allows(Some(&acl), "1.2.3.4"));
        assert!(!server_acl_allows(Some(&acl), "[::1]:8448"));
        // No allow list: everyone is denied.
        assert!(!server_acl_allows(
            Some(&json!({"deny": []})),
            "good.example"
        ));
        let only = json!({"allow": ["a?.example"]});
        assert!(server_acl_allows(Some(&only), "ab.example"));
        assert!(!server_acl_allows(Some(&only), "abc.example"));
        // IP literals are allowed unless the ACL says otherwise.
        assert!(server_acl_allows(
            Some(&json!({"allow": ["*"]})),
            "10.0.0.1"
        ));
    }

    #[test]
    fn msc4430_applies_acls_to_verified_links_only_and_refuses_unfederated_rooms() {
        let acl = json!({"allow": ["*"], "deny": ["evil.example"]});
        let links = LinkTable::new(InvalidationRule::RevokeAll);
        let msc = RoomVersion::MSC4430;
        // A member key with no verified link: only the origin is checked.
        let member = "@l8Hft5qXKn1vfHrg3p4-W8gELQVo8N13JkluMfmn2sQ";
        assert_eq!(
            inbound_event_allowed(&msc, Some(&acl), true, &links, "good.example", member),
            Ok(())
        );
        assert_eq!(
            inbound_event_allowed(&msc, Some(&acl), true, &links, "evil.example", member),
            Err(Refusal::AclDenied {
                server: "evil.example".into()
            })
        );
        assert_eq!(
            inbound_event_allowed(&msc, Some(&acl), false, &links, "good.example", member),
            Err(Refusal::NotFederated)
        );
        // A member whose link to evil.example is verified is refused, wherever it comes from.
        let key = ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[5; 32]);
        let member_key = member_signing_key(&[6; 32]);
        let sender = member_key_user_id(&member_key.verifying_key());
        let draft = EventDraft {
            room_id: Some("!r".into()),
            sender: sender.clone(),
            event_type: "m.room.member".into(),
            state_key: Some(sender.clone()),
            content: json!({"membership": "join", "localpart": "x", "domain": "evil.example"}),
            prev_events: vec!["$p".into()],
            auth_events: vec![],
            depth: 2,
            origin_server_ts_ms: 1,
        };
        let signer = EventSigner::Member {
            member_key: &member_key,
            cosigner: Some(("evil.example", &key)),
        };
        let join = Arc::new(build_pdu(draft, &msc, signer).unwrap());
        let mut ring = KeyRing::new();
        ring.insert(ServerKeys::with_current_key("evil.example", &key, 1_000), 0);
        let mut links = links;
        assert_eq!(
            links.observe_member_event(&msc, &join, ring.held_keys("evil.example"), 2),
            LinkStatus::Verified
        );
        assert_eq!(
            inbound_event_allowed(&msc, Some(&acl), true, &links, "good.example", &sender),
            Err(Refusal::AclDenied {
                server: "evil.example".into()
            })
        );
        // Today: the sender's own domain is checked too, and m.federate is an auth rule instead.
        let v12 = RoomVersion::V12;
        assert_eq!(
            inbound_event_allowed(
                &v12,
                Some(&acl),
                true,
                &links,
                "good.example",
                "@x:evil.example"
            ),
            Err(Refusal::AclDenied {
                server: "evil.example".into()
            })
        );
        assert_eq!(
            inbound_event_allowed(&v12, None, false, &links, "good.example", "@x:evil.example"),
            Ok(())
        );
    }
}
