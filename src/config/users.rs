//! The `users:` pool key: the client users of a pool, each with a password
//! (stored as its SHA-256, as Redis ACL stores it), a mode (read or write)
//! and optional key patterns.
//!
//! Only the file format lives here; [`crate::proxy::acl`] checks passwords
//! and permissions at run time.

use serde::Deserialize;

/// What a user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMode {
    /// Only the commands Redis flags read-only (plus the connection and
    /// transaction commands every client needs).
    Read,
    /// Every command the proxy serves.
    Write,
}

/// One client user of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    /// SHA-256 of the password.
    pub password_sha256: [u8; 32],
    pub mode: UserMode,
    /// Redis glob patterns (without the `~`) the keys must match; `None`
    /// allows every key.
    pub keys: Option<Vec<String>>,
}

/// A `users` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    name: String,
    password_sha256: String,
    mode: String,
    keys: Option<Vec<String>>,
}

/// Checks the `users` entries: names unique and free of spaces, digests of
/// 64 hex digits, mode `read` or `write`, key patterns written `~pattern`.
///
/// # Errors
/// The first rejection, naming the user.
pub(super) fn validate(raw: Vec<RawUser>) -> Result<Vec<UserConfig>, String> {
    let mut users: Vec<UserConfig> = Vec::with_capacity(raw.len());
    for user in raw {
        let name = user.name;
        if name.is_empty() || name.bytes().any(|c| !(b'!'..=b'~').contains(&c)) {
            return Err(format!(
                "user name '{name}' must be non-empty, without spaces or special characters"
            ));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(format!("user '{name}' is defined twice"));
        }
        let password_sha256 = parse_digest(&user.password_sha256).ok_or_else(|| {
            format!("user '{name}': 'password_sha256' must be 64 hex digits (sha256sum of the password)")
        })?;
        let mode = match user.mode.as_str() {
            "read" => UserMode::Read,
            "write" => UserMode::Write,
            other => {
                return Err(format!(
                    "user '{name}': mode '{other}' is neither 'read' nor 'write'"
                ))
            }
        };
        let keys = match user.keys {
            None => None,
            Some(patterns) => Some(
                patterns
                    .into_iter()
                    .map(|p| match p.strip_prefix('~') {
                        Some(glob) => Ok(glob.to_string()),
                        None => Err(format!(
                            "user '{name}': key pattern '{p}' must start with '~', as in Redis ACL"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        users.push(UserConfig {
            name,
            password_sha256,
            mode,
            keys,
        });
    }
    Ok(users)
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, digest: &str, mode: &str, keys: Option<&[&str]>) -> RawUser {
        RawUser {
            name: name.into(),
            password_sha256: digest.into(),
            mode: mode.into(),
            keys: keys.map(|k| k.iter().map(|s| s.to_string()).collect()),
        }
    }

    const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    #[test]
    fn a_valid_user_parses() {
        let users = validate(vec![raw("alice", DIGEST, "read", Some(&["~cache:*"]))]).unwrap();
        assert_eq!(users[0].mode, UserMode::Read);
        assert_eq!(users[0].keys, Some(vec!["cache:*".to_string()]));
        assert_eq!(users[0].password_sha256[0], 0x5e);
        assert_eq!(users[0].password_sha256[31], 0xd8);
    }

    #[test]
    fn a_short_or_non_hex_digest_is_rejected() {
        assert!(validate(vec![raw("a", "abc", "read", None)]).is_err());
        let bad = DIGEST.replace('5', "g");
        assert!(validate(vec![raw("a", &bad, "read", None)]).is_err());
    }

    #[test]
    fn an_unknown_mode_is_rejected() {
        let e = validate(vec![raw("a", DIGEST, "admin", None)]).unwrap_err();
        assert!(e.contains("mode 'admin'"), "{e}");
    }

    #[test]
    fn a_pattern_without_tilde_is_rejected() {
        let e = validate(vec![raw("a", DIGEST, "read", Some(&["cache:*"]))]).unwrap_err();
        assert!(e.contains("must start with '~'"), "{e}");
    }

    #[test]
    fn a_duplicate_or_blank_name_is_rejected() {
        let twice = vec![
            raw("a", DIGEST, "read", None),
            raw("a", DIGEST, "write", None),
        ];
        assert!(validate(twice).unwrap_err().contains("twice"));
        assert!(validate(vec![raw("a b", DIGEST, "read", None)]).is_err());
    }
}
