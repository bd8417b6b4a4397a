//! API keys: who may manage workers and who may send inference calls.
//!
//! Two roles. An **admin** key may do everything: worker management over
//! gRPC (`switchyard.v1.WorkerManagement`) and HTTP (`/workers`), and
//! inference. A **client** key may send inference calls only; management
//! with it is refused with `PERMISSION_DENIED` / 403. Keys come from the
//! config file (`[auth]`) or the environment (`SWITCHYARD_ADMIN_KEYS`,
//! `SWITCHYARD_CLIENT_KEYS`, comma-separated), never from the command line,
//! where any user of the machine can read them. A client sends one as
//! `authorization: Bearer KEY` (gRPC metadata or HTTP header), or as
//! `x-api-key: KEY` as Anthropic's clients do; without one, where one is
//! needed, the call is refused with `UNAUTHENTICATED` / 401.
//!
//! A role with no keys configured is open. Worker management open means
//! anyone who reaches the port can redirect all traffic, so the router
//! refuses to listen on anything but loopback addresses without admin keys
//! ([`crate::config::Config::validate`]). Health and reflection are always
//! open (load balancers and probes call them).
//!
//! A presented key is compared with every configured key, each in time
//! that depends only on the lengths (never on where the bytes differ), so
//! timing tells a caller nothing about how close a guess came; a key never
//! reaches a log. (Hashing each presented key first, to hide its length
//! too, measured at 4.9% of a one-token call's instructions; a key's length
//! is not a secret worth that.) The router's own credentials are removed from a
//! call before it goes to a worker ([`AuthConfig::strip_headers`]).

use std::fmt;

use http::header::{HeaderName, AUTHORIZATION};
use http::HeaderMap;

pub use crate::config::{AuthConfig, ADMIN_KEYS_ENV, CLIENT_KEYS_ENV, MIN_KEY_LEN};

/// What a surface requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Inference calls.
    Client,
    /// Worker management.
    Admin,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `authorization: Bearer` (or `x-api-key`) key.
    #[error(
        "this call needs an API key: send `authorization: Bearer <key>` (or `x-api-key: <key>`)"
    )]
    Missing,
    /// A key that is none of the configured ones.
    #[error("the API key is not valid")]
    Invalid,
    /// A client key where an admin key is needed.
    #[error("worker management needs an admin key; this is a client key")]
    NotAdmin,
    /// Worker management over a connection without a verified client
    /// certificate, where the listeners require one (`tls.client_ca`).
    #[error(
        "worker management needs a client certificate signed by the router's client CA \
         (tls.client_ca): connect over TLS with one"
    )]
    NoClientCert,
}

/// The configured keys and the headers to strip.
#[derive(Clone, Default)]
pub struct Keys {
    admin: Vec<Box<[u8]>>,
    client: Vec<Box<[u8]>>,
    strip: Vec<HeaderName>,
    /// Admin calls need a verified client certificate too.
    admin_cert: bool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("admin", &self.admin.len())
            .field("client", &self.client.len())
            .field("admin_cert", &self.admin_cert)
            .finish()
    }
}

/// The key a request presents: `authorization: Bearer KEY`, or
/// `x-api-key: KEY` as Anthropic's clients send it.
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_key(v.as_bytes()))
        .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()))
        .map(|k| k.trim_ascii())
        .filter(|k| !k.is_empty())
}

/// Equal, in time that depends on the lengths only, not on where the
/// bytes differ.
pub fn same(key: &[u8], presented: &[u8]) -> bool {
    if key.len() != presented.len() {
        return false;
    }
    // Eight bytes at a time (a byte at a time was most of a key check).
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or_default());
    let (key_words, words) = (key.chunks_exact(8), presented.chunks_exact(8));
    let tail = key_words
        .remainder()
        .iter()
        .zip(words.remainder())
        .fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    let diff = key_words
        .zip(words)
        .fold(tail, |acc, (x, y)| acc | (word(x) ^ word(y)));
    std::hint::black_box(diff) == 0
}

impl Keys {
    /// The keys of a validated `config`.
    pub fn new(config: &AuthConfig) -> Self {
        Keys {
            admin: config
                .admin_keys
                .iter()
                .map(|k| Box::from(k.as_bytes()))
                .collect(),
            client: config
                .client_keys
                .iter()
                .map(|k| Box::from(k.as_bytes()))
                .collect(),
            strip: config
                .strip_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            admin_cert: false,
        }
    }

    /// Requires a verified client certificate for admin calls as well.
    pub fn with_admin_cert(mut self, required: bool) -> Self {
        self.admin_cert = required;
        self
    }

    /// Whether an admin call with `headers`, over a connection that did or
    /// did not present a verified client certificate, may go ahead.
    pub fn check_admin(&self, headers: &HeaderMap, client_cert: bool) -> Result<(), Denied> {
        if self.admin_cert && !client_cert {
            return Err(Denied::NoClientCert);
        }
        self.check(headers, Role::Admin)
    }

    /// Whether `role`'s surfaces take calls without a key.
    pub fn is_open(&self, role: Role) -> bool {
        match role {
            Role::Admin => self.admin.is_empty(),
            // Admin keys alone leave inference open.
            Role::Client => self.client.is_empty(),
        }
    }

    /// Whether a call with `headers` may use a surface of `role`. The
    /// `Bearer` scheme is matched in any case (RFC 9110 §11.1).
    pub fn check(&self, headers: &HeaderMap, role: Role) -> Result<(), Denied> {
        if self.is_open(role) {
            return Ok(());
        }
        self.check_key(presented_key(headers).ok_or(Denied::Missing)?, role)
    }

    /// Whether the key `presented` may use a surface of `role` (keys are
    /// needed: see [`Keys::check`] for surfaces that may be open).
    pub fn check_key(&self, presented: &[u8], role: Role) -> Result<(), Denied> {
        // Every key is compared, whichever matches.
        let admin = self.admin.iter().fold(false, |m, k| m | same(k, presented));
        let client = self
            .client
            .iter()
            .fold(false, |m, k| m | same(k, presented));
        match (role, admin, client) {
            (_, true, _) => Ok(()),
            (Role::Client, false, true) => Ok(()),
            (Role::Admin, false, true) => Err(Denied::NotAdmin),
            _ => Err(Denied::Invalid),
        }
    }

    /// Removes the headers a worker must not see.
    pub fn strip(&self, headers: &mut HeaderMap) {
        // Looking through the request's few names costs less than a removal
        // (which hashes the name and probes), and most requests carry none
        // of these.
        for name in &self.strip {
            if headers.keys().any(|k| k == name) {
                headers.remove(name);
            }
        }
    }

    /// One line for the startup log: which surfaces need which key.
    pub fn describe(&self) -> String {
        let management = match (self.admin.is_empty(), self.admin_cert) {
            (true, false) => "OPEN (no admin keys; loopback listeners only)".to_string(),
            (true, true) => "client certificate".to_string(),
            (false, false) => format!("admin key ({} configured)", self.admin.len()),
            (false, true) => format!(
                "client certificate and admin key ({} configured)",
                self.admin.len()
            ),
        };
        let inference = match (self.client.is_empty(), self.admin.is_empty()) {
            (true, true) => "OPEN (no keys)".to_string(),
            (true, false) => "OPEN (no client keys; admin keys also accepted)".to_string(),
            (false, _) => format!("client or admin key ({} client keys)", self.client.len()),
        };
        format!(
            "worker management: {management}; inference: {inference}; health and reflection: open"
        )
    }
}

/// The key of an `authorization: Bearer KEY` value, the scheme in any case.
fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme[..6].eq_ignore_ascii_case(b"bearer") && scheme[6] == b' ').then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&AuthConfig {
            admin_keys: vec!["admin-key-0123456789".into()],
            client_keys: vec!["client-key-0123456789".into()],
            ..AuthConfig::default()
        })
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        let k = keys();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let mut h = HeaderMap::new();
            let value = format!("{scheme} admin-key-0123456789");
            h.insert(AUTHORIZATION, value.parse().unwrap());
            assert_eq!(k.check(&h, Role::Admin), Ok(()), "{scheme}");
        }
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic admin-key-0123456789".parse().unwrap());
        assert_eq!(k.check(&h, Role::Admin), Err(Denied::Missing));
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        h
    }

    #[test]
    fn roles_and_refusals() {
        let k = keys();
        assert_eq!(
            k.check(&HeaderMap::new(), Role::Admin),
            Err(Denied::Missing)
        );
        assert_eq!(
            k.check(&HeaderMap::new(), Role::Client),
            Err(Denied::Missing)
        );
        assert_eq!(
            k.check(&bearer("admin-key-0123456789"), Role::Admin),
            Ok(())
        );
        assert_eq!(
            k.check(&bearer("admin-key-0123456789"), Role::Client),
            Ok(())
        );
        assert_eq!(
            k.check(&bearer("client-key-0123456789"), Role::Client),
            Ok(())
        );
        assert_eq!(
            k.check(&bearer("client-key-0123456789"), Role::Admin),
            Err(Denied::NotAdmin)
        );
        assert_eq!(
            k.check(&bearer("admin-key-012345678"), Role::Admin),
            Err(Denied::Invalid)
        );
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, "Basic YWRtaW4=".parse().unwrap());
        assert_eq!(k.check(&basic, Role::Admin), Err(Denied::Missing));
    }

    #[test]
    fn a_key_differing_in_any_byte_is_refused() {
        let k = keys();
        let key = "client-key-0123456789";
        for at in 0..key.len() {
            let mut wrong = key.as_bytes().to_vec();
            wrong[at] ^= 1;
            let wrong = String::from_utf8(wrong).unwrap();
            assert_eq!(
                k.check(&bearer(&wrong), Role::Client),
                Err(Denied::Invalid),
                "byte {at}"
            );
        }
    }

    #[test]
    fn a_key_in_x_api_key_is_checked_like_a_bearer_key() {
        let k = keys();
        let with = |key: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", key.parse().unwrap());
            h
        };
        assert_eq!(
            k.check(&with("client-key-0123456789"), Role::Client),
            Ok(())
        );
        assert_eq!(
            k.check(&with("client-key-0123456789"), Role::Admin),
            Err(Denied::NotAdmin)
        );
        assert_eq!(k.check(&with("nope"), Role::Client), Err(Denied::Invalid));
        // A bearer key, when both are sent, is the one checked.
        let mut both = bearer("wrong-key-0123456789");
        both.insert("x-api-key", "client-key-0123456789".parse().unwrap());
        assert_eq!(k.check(&both, Role::Client), Err(Denied::Invalid));
    }

    #[test]
    fn only_the_listed_headers_are_stripped() {
        let k = keys();
        let mut h = bearer("client-key-0123456789");
        h.insert("cookie", "a=b".parse().unwrap());
        h.insert("x-api-key", "k".parse().unwrap());
        h.insert("traceparent", "t".parse().unwrap());
        k.strip(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["traceparent"]
        );
        let mut none = HeaderMap::new();
        none.insert("te", "trailers".parse().unwrap());
        k.strip(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn no_keys_is_open_and_admin_only_leaves_inference_open() {
        let open = Keys::new(&AuthConfig::default());
        assert_eq!(open.check(&HeaderMap::new(), Role::Admin), Ok(()));
        let admin_only = Keys::new(&AuthConfig {
            admin_keys: vec!["admin-key-0123456789".into()],
            ..AuthConfig::default()
        });
        assert_eq!(admin_only.check(&HeaderMap::new(), Role::Client), Ok(()));
        assert_eq!(
            admin_only.check(&HeaderMap::new(), Role::Admin),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn short_keys_are_refused_without_quoting_them() {
        let config = AuthConfig {
            admin_keys: vec!["short".into()],
            ..AuthConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("admin key #1") && !err.contains("short\""),
            "{err}"
        );
        assert!(!format!("{config:?}").contains("short"));
    }
}
