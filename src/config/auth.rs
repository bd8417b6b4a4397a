//! API keys (`[auth]`): the keys of each role and the headers kept from
//! workers; `auth` checks calls against them.

use std::fmt;

use http::header::HeaderName;
use serde::{Deserialize, Serialize};

/// Environment variable with admin keys (comma-separated).
pub const ADMIN_KEYS_ENV: &str = "SWITCHYARD_ADMIN_KEYS";
/// Environment variable with client keys (comma-separated).
pub const CLIENT_KEYS_ENV: &str = "SWITCHYARD_CLIENT_KEYS";

/// The `[auth]` section.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys of the admin role (worker management and inference).
    pub admin_keys: Vec<String>,
    /// Keys of the client role (inference only).
    pub client_keys: Vec<String>,
    /// Request headers removed before a call goes to a worker: the
    /// router's own credentials and the client's cookies, which a worker
    /// has no use for. Empty passes everything on.
    pub strip_headers: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admin_keys: Vec::new(),
            client_keys: Vec::new(),
            strip_headers: [
                "authorization",
                "proxy-authorization",
                "cookie",
                "x-api-key",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Keys are never printed.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "admin_keys",
                &format_args!("[{} redacted]", self.admin_keys.len()),
            )
            .field(
                "client_keys",
                &format_args!("[{} redacted]", self.client_keys.len()),
            )
            .field("strip_headers", &self.strip_headers)
            .finish()
    }
}

/// The shortest key accepted: 16 characters (a guessable key is no key).
pub const MIN_KEY_LEN: usize = 16;

impl AuthConfig {
    /// Adds the keys in the environment to those of the file.
    pub fn add_env_keys(&mut self) {
        let split = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect()
        };
        if let Ok(keys) = std::env::var(ADMIN_KEYS_ENV) {
            self.admin_keys.extend(split(keys));
        }
        if let Ok(keys) = std::env::var(CLIENT_KEYS_ENV) {
            self.client_keys.extend(split(keys));
        }
    }

    /// What is wrong with these values, if anything (never quoting a key).
    pub fn validate(&self) -> Result<(), String> {
        for (role, keys) in [("admin", &self.admin_keys), ("client", &self.client_keys)] {
            for (i, key) in keys.iter().enumerate() {
                if key.len() < MIN_KEY_LEN {
                    return Err(format!(
                        "auth: {role} key #{} is {} characters; keys must have at least {MIN_KEY_LEN}",
                        i + 1,
                        key.len()
                    ));
                }
                if !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "auth: {role} key #{} has spaces or characters outside printable ASCII",
                        i + 1
                    ));
                }
            }
        }
        for name in &self.strip_headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("auth.strip_headers: {name:?} is not a header name"))?;
        }
        Ok(())
    }
}
