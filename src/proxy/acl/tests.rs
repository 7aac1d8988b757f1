//! Unit tests of users and permissions; `tests/security.rs` compares the
//! replies with a real Redis's.

use super::*;
use crate::command;
use crate::config::Config;

/// sha256("pw")
const PW: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

fn users(extra: &str) -> Users {
    let text = format!(
        "p:\n  listen: 127.0.0.1:22121\n  redis: true\n{extra}  servers:\n   - 127.0.0.1:6379:1\n"
    );
    Users::new(&Config::parse(&text).unwrap().pools[0])
}

fn alice_and_bob() -> Users {
    users(&format!(
        "  redis_auth: s3cret\n  users:\n   - {{name: alice, password_sha256: {PW}, mode: read, keys: [\"~cache:*\"]}}\n   - {{name: bob, password_sha256: {PW}, mode: write}}\n"
    ))
}

fn args(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn check_words(user: &User, words: &[&str]) -> Result<(), String> {
    let a = args(words);
    check(user, command::resolve(&a).unwrap(), &a)
}

#[test]
fn the_digest_of_a_known_password() {
    let want: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&PW[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(sha256(b"pw").to_vec(), want);
}

#[test]
fn digests_compare_equal_only_when_every_byte_is() {
    let a = sha256(b"pw");
    let mut b = a;
    assert!(digests_equal(&a, &b));
    b[31] ^= 1;
    assert!(!digests_equal(&a, &b));
}

#[test]
fn without_passwords_everyone_is_default() {
    let u = users("");
    assert_eq!(u.initial().unwrap().name, "default");
    assert_eq!(
        u.authenticate(None, b"x").unwrap_err(),
        AuthError::NoDefaultPassword
    );
    assert!(u.authenticate(Some(b"default"), b"x").is_ok());
}

#[test]
fn redis_auth_is_the_default_users_password() {
    let u = alice_and_bob();
    assert!(u.initial().is_none());
    assert_eq!(u.authenticate(None, b"s3cret").unwrap().name, "default");
    assert_eq!(
        u.authenticate(Some(b"default"), b"s3cret").unwrap().name,
        "default"
    );
    assert_eq!(
        u.authenticate(None, b"pw").unwrap_err(),
        AuthError::WrongPass
    );
}

#[test]
fn users_authenticate_with_their_own_password_only() {
    let u = alice_and_bob();
    assert_eq!(u.authenticate(Some(b"alice"), b"pw").unwrap().name, "alice");
    assert_eq!(
        u.authenticate(Some(b"alice"), b"s3cret").unwrap_err(),
        AuthError::WrongPass
    );
    assert_eq!(
        u.authenticate(Some(b"carol"), b"pw").unwrap_err(),
        AuthError::WrongPass
    );
}

#[test]
fn a_listed_default_user_replaces_redis_auth() {
    let u = users(&format!(
        "  redis_auth: s3cret\n  users:\n   - {{name: default, password_sha256: {PW}, mode: read}}\n"
    ));
    assert_eq!(
        u.authenticate(None, b"s3cret").unwrap_err(),
        AuthError::WrongPass
    );
    assert!(u.authenticate(None, b"pw").is_ok());
}

#[test]
fn users_without_redis_auth_must_authenticate() {
    let u = users(&format!(
        "  users:\n   - {{name: bob, password_sha256: {PW}, mode: write}}\n"
    ));
    assert!(u.initial().is_none());
    assert_eq!(
        u.authenticate(None, b"pw").unwrap_err(),
        AuthError::WrongPass
    );
}

#[test]
fn a_read_user_runs_reads_and_session_commands_only() {
    let u = alice_and_bob();
    let alice = u.authenticate(Some(b"alice"), b"pw").unwrap();
    assert!(check_words(&alice, &["get", "cache:1"]).is_ok());
    assert!(check_words(&alice, &["ping"]).is_ok());
    assert!(check_words(&alice, &["client", "setname", "x"]).is_ok());
    assert!(check_words(&alice, &["multi"]).is_ok());
    assert_eq!(
        check_words(&alice, &["set", "cache:1", "v"]).unwrap_err(),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    assert_eq!(
        check_words(&alice, &["config", "get", "x"]).unwrap_err(),
        "NOPERM this user has no permissions to run the 'config|get' command"
    );
}

#[test]
fn key_patterns_cover_every_key_of_a_command() {
    let u = alice_and_bob();
    let alice = u.authenticate(Some(b"alice"), b"pw").unwrap();
    assert!(check_words(&alice, &["mget", "cache:1", "cache:2"]).is_ok());
    assert_eq!(
        check_words(&alice, &["mget", "cache:1", "secret"]).unwrap_err(),
        KEY_DENIED
    );
    assert_eq!(
        check_words(&alice, &["get", "secret"]).unwrap_err(),
        KEY_DENIED
    );
}

#[test]
fn scripts_are_refused_to_users_limited_to_some_keys() {
    let u = alice_and_bob();
    let alice = u.authenticate(Some(b"alice"), b"pw").unwrap();
    assert_eq!(
        check_words(&alice, &["eval_ro", "return 1", "1", "cache:1"]).unwrap_err(),
        "NOPERM this user has no permissions to run the 'eval_ro' command"
    );
    let bob = u.authenticate(Some(b"bob"), b"pw").unwrap();
    assert!(check_words(&bob, &["eval", "return 1", "1", "k"]).is_ok());
}

#[test]
fn fleet_wide_flushes_and_code_changes_are_refused_to_users_limited_to_some_keys() {
    let u = alice_and_bob();
    let carol = users(&format!(
        "  users:\n   - {{name: carol, password_sha256: {PW}, mode: write, keys: [\"~app:*\"]}}\n"
    ))
    .authenticate(Some(b"carol"), b"pw")
    .unwrap();
    let bob = u.authenticate(Some(b"bob"), b"pw").unwrap();
    for (words, name) in [
        (&["flushall"][..], "flushall"),
        (&["flushdb", "async"], "flushdb"),
        (&["function", "load", "#!lua name=x\n"], "function|load"),
        (&["FUNCTION", "FLUSH"], "function|flush"),
        (&["function", "delete", "x"], "function|delete"),
        (&["function", "restore", "payload"], "function|restore"),
        (&["function", "kill"], "function|kill"),
        (&["script", "flush"], "script|flush"),
        (&["script", "kill"], "script|kill"),
    ] {
        assert_eq!(
            check_words(&carol, words).unwrap_err(),
            format!("NOPERM this user has no permissions to run the '{name}' command")
        );
        assert!(check_words(&bob, words).is_ok(), "{words:?}");
    }
    // What touches no one else's keys or code stays theirs.
    for words in [
        &["script", "load", "return 1"][..],
        &["script", "exists", "abc"],
        &["function", "list"],
        &["set", "app:1", "v"],
    ] {
        assert!(check_words(&carol, words).is_ok(), "{words:?}");
    }
}

#[test]
fn copy_with_a_database_is_refused_to_everyone() {
    let u = alice_and_bob();
    let default = u.authenticate(None, b"s3cret").unwrap();
    assert!(check_words(&default, &["copy", "a", "b"]).is_ok());
    assert!(check_words(&default, &["copy", "a", "b", "REPLACE"]).is_ok());
    let e = check_words(&default, &["copy", "a", "b", "db", "7"]).unwrap_err();
    assert!(e.starts_with("ERR COPY with the DB option"), "{e}");
}

#[test]
fn session_commands_are_sorted() {
    assert!(SESSION_COMMANDS.windows(2).all(|w| w[0] < w[1]));
}
