//! Commands the proxy answers itself: PING, ECHO, QUIT, AUTH, SELECT,
//! HELLO, CLIENT, INFO and RESET. Their replies follow Redis 7.0 to the letter
//! (texts and types), in the protocol the client chose, so a client library
//! cannot tell the proxy from a Redis server on connect.

use crate::command::{self, Command};
use crate::protocol::{encode, Proto, Value};
use crate::proxy::acl;
use crate::proxy::info;
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::pubsub;
use crate::proxy::session::Session;
use crate::proxy::stats::PoolStats;
use bytes::{Bytes, BytesMut};

/// Runs a proxy-answered command.
pub fn run(session: &mut Session, cmd: &'static Command, args: &[Bytes]) -> Pending {
    match cmd.name.split('|').next().unwrap_or(cmd.name) {
        "ping" => match args.get(1) {
            // PING takes one message at most (Redis checks it itself).
            Some(_) if args.len() > 2 => {
                session.error("ERR wrong number of arguments for 'ping' command")
            }
            message if session.pubsub.is_some() && session.proto == Proto::Resp2 => {
                pubsub::pong(message)
            }
            // The same bytes in RESP2 and RESP3: no encoding, no buffer.
            None => Pending::Ready(Bytes::from_static(b"+PONG\r\n")),
            Some(msg) => reply(session, &Value::Bulk(msg.clone())),
        },
        "echo" => reply(session, &Value::Bulk(args[1].clone())),
        "quit" => {
            session.closing = true;
            ok()
        }
        "auth" => auth(session, &args[1..]),
        "acl" => acl(session, cmd, args),
        "select" => select(session, &args[1]),
        "hello" => hello(session, &args[1..]),
        "client" => client(session, args),
        "info" => info::run(session, args).pending(),
        "reset" => {
            let subscriptions = session.pubsub.take();
            let proto = session.proto;
            session.reset();
            let done = Bytes::from_static(b"+RESET\r\n");
            match subscriptions {
                Some(subscriptions) => subscriptions.leave(done, proto),
                None => Pending::Ready(done),
            }
        }
        _ => session.error(&unsupported_error(cmd, args)),
    }
}

/// Encodes `value` in the session's protocol.
pub fn reply(session: &Session, value: &Value) -> Pending {
    let mut out = BytesMut::new();
    encode(value, session.proto, &mut out);
    Pending::Ready(out.freeze())
}

fn ok() -> Pending {
    Pending::Ready(Bytes::from_static(b"+OK\r\n"))
}

/// Checks `AUTH [user] pass` against the pool's users; a failure is
/// counted, and closes the connection once there have been
/// [`acl::MAX_AUTH_FAILURES`] on it.
fn check_auth(session: &mut Session, args: &[Bytes]) -> Result<(), &'static str> {
    let (user, pass) = match args {
        [pass] => (None, pass),
        [user, pass] => (Some(&user[..]), pass),
        _ => return Err("ERR syntax error"),
    };
    match session.pool.users.authenticate(user, pass) {
        Ok(user) => {
            session.user = Some(user);
            session.authenticated = true;
            Ok(())
        }
        Err(e) => {
            PoolStats::bump(&session.pool.stats.auth_failures);
            session.auth_failures += 1;
            if session.auth_failures >= acl::MAX_AUTH_FAILURES {
                tracing::warn!(
                    client = session.id,
                    failures = session.auth_failures,
                    "closing a client after repeated AUTH failures"
                );
                session.closing = true;
            }
            Err(e.text())
        }
    }
}

fn auth(session: &mut Session, args: &[Bytes]) -> Pending {
    if args.len() > 2 {
        return session.error("ERR syntax error");
    }
    match check_auth(session, args) {
        Ok(()) => ok(),
        Err(e) => session.error(e),
    }
}

/// `ACL WHOAMI`, the one ACL subcommand answered: the other ones manage a
/// Redis server's users, which the proxy's are not.
fn acl(session: &mut Session, cmd: &Command, args: &[Bytes]) -> Pending {
    match (cmd.name, &session.user) {
        ("acl|whoami", Some(user)) => reply(
            session,
            &Value::Bulk(Bytes::copy_from_slice(user.name.as_bytes())),
        ),
        _ => session.error(&unsupported_error(cmd, args)),
    }
}

/// Only database 0 exists behind a proxy (the backends use `redis_db`).
fn select(session: &mut Session, db: &[u8]) -> Pending {
    // Redis's strict integer syntax: no sign on zero, no leading zeros.
    match crate::protocol::parse_int(db) {
        Some(0) => ok(),
        // Redis's words first (clients match them), then why: the index
        // may well exist on the servers.
        Some(_) => session.error(
            "ERR DB index is out of range: shardproxy serves database 0 only \
             (the pool's redis_db picks the servers' database)",
        ),
        None => session.error("ERR value is not an integer or out of range"),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(session: &mut Session, args: &[Bytes]) -> Pending {
    let mut proto = session.proto;
    if let Some(version) = args.first() {
        proto = match crate::protocol::parse_int(version) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return session.error("NOPROTO unsupported protocol version"),
            None => return session.error("ERR Protocol version is not an integer or out of range"),
        };
    }
    let mut name = None;
    let mut i = 1;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        match option.as_slice() {
            b"auth" if i + 2 < args.len() => {
                if let Err(e) = check_auth(session, &args[i + 1..i + 3]) {
                    return session.error(e);
                }
                i += 3;
            }
            b"setname" if i + 1 < args.len() => {
                if let Err(e) = check_client_name(&args[i + 1]) {
                    return session.error(e);
                }
                // Copied: a slice would keep the whole read buffer it came
                // in alive for as long as the connection lasts.
                name = Some(Bytes::copy_from_slice(&args[i + 1]));
                i += 2;
            }
            _ => {
                return session.error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                ))
            }
        }
    }
    if !session.authenticated {
        return session.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    session.proto = proto;
    if let Some(conn) = session.dedicated.as_mut() {
        // Only a transaction's connection is held between commands.
        conn.switch_proto(proto);
    }
    if name.is_some() {
        session.name = name;
    }
    let text = |s: &str| Value::Bulk(Bytes::copy_from_slice(s.as_bytes()));
    let map = Value::Map(vec![
        (text("server"), text("redis")),
        (text("version"), text(&session.pool.redis_version())),
        (
            text("proto"),
            Value::Integer(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (text("id"), Value::Integer(session.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        // Redis's seven fields and no more: clients read HELLO's reply as
        // a fixed layout (review: an eighth, `proxy`, stood out).
        (text("modules"), Value::Array(Vec::new())),
    ]);
    reply(session, &map)
}

/// Redis refuses names with spaces, newlines or other special characters.
fn check_client_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    } else {
        Ok(())
    }
}

/// The CLIENT subcommands a client library sends on connect.
fn client(session: &mut Session, args: &[Bytes]) -> Pending {
    let Some(sub) = args.get(1) else {
        return session.error(&command::arity_error("client"));
    };
    let sub_lower = sub.to_ascii_lowercase();
    match (sub_lower.as_slice(), args.len()) {
        (b"setname", 3) => match check_client_name(&args[2]) {
            Ok(()) => {
                // Copied, as HELLO's SETNAME is.
                session.name = (!args[2].is_empty()).then(|| Bytes::copy_from_slice(&args[2]));
                ok()
            }
            Err(e) => session.error(e),
        },
        (b"getname", 2) => match &session.name {
            Some(name) => reply(session, &Value::Bulk(name.clone())),
            None => reply(session, &Value::Null),
        },
        (b"setinfo", 4) => {
            let attr = args[2].to_ascii_lowercase();
            if attr != b"lib-name" && attr != b"lib-ver" {
                return session.error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[2])
                ));
            }
            ok()
        }
        (b"id", 2) => reply(session, &Value::Integer(session.id as i64)),
        (b"setname" | b"getname" | b"setinfo" | b"id", _) => session.error(&command::arity_error(
            &format!("client|{}", String::from_utf8_lossy(&sub_lower)),
        )),
        (known, _) if is_redis_client_subcommand(known) => session.error(&format!(
            "ERR unsupported command 'CLIENT {}' through shardproxy",
            String::from_utf8_lossy(sub).to_uppercase()
        )),
        _ => session.error(&command::unknown_subcommand_error("CLIENT", sub)),
    }
}

/// CLIENT subcommands Redis 7.0 knows that make no sense through a proxy.
fn is_redis_client_subcommand(sub: &[u8]) -> bool {
    const KNOWN: &[&[u8]] = &[
        b"caching",
        b"getredir",
        b"help",
        b"info",
        b"kill",
        b"list",
        b"no-evict",
        b"pause",
        b"reply",
        b"tracking",
        b"trackinginfo",
        b"unblock",
        b"unpause",
    ];
    KNOWN.contains(&sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_follow_redis_rules() {
        assert!(check_client_name(b"app-1").is_ok());
        assert!(check_client_name(b"has space").is_err());
        assert!(check_client_name(b"new\nline").is_err());
    }
}
