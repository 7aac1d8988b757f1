//! One request sent to every shard, and the rules shared by the commands
//! that do so (the keyspace-wide ones in [`super::keyspace`], script and
//! function management in [`super::scripts`]): which backends are asked,
//! in which order, and which error wins when some of them fail.
//!
//! A backend that serves several shards of the table is asked once: it
//! holds one keyspace and one script cache, and asking it twice would list
//! its keys twice.

use crate::protocol::Proto;
use crate::protocol::{encode_error, is_error_reply, reply_frame_len};
use crate::proxy::router::{RoutingTable, Shard, ShardName};
use crate::proxy::session::Session;
use bytes::{Bytes, BytesMut};
use std::future::Future;

/// One shard's answer: its reply frame, or the error reply the proxy
/// makes when the backend gave none.
pub struct Answer {
    pub shard: ShardName,
    pub frame: Bytes,
    /// The backend gave no reply; `frame` is the proxy's error.
    pub failed: bool,
}

/// Sends `raw` to `shard` and waits for the answer. `affinity` (the
/// session's) picks the backend connection, as for the session's other
/// requests, so a pipelined `SCRIPT LOAD` then `EVALSHA` run in that order.
pub fn ask(
    shard: &Shard,
    proto: Proto,
    affinity: usize,
    raw: Bytes,
) -> impl Future<Output = Answer> + Send + 'static {
    let reply = shard.backend.send(proto, affinity, raw);
    let name = shard.name;
    async move {
        let failure = match reply.await {
            Ok(Ok(frame)) => {
                return Answer {
                    shard: name,
                    frame,
                    failed: false,
                }
            }
            Ok(Err(e)) => format!("ERR shard '{name}': {e}"),
            Err(_) => format!("ERR shard '{name}': request dropped"),
        };
        Answer {
            frame: error_frame(&failure),
            shard: name,
            failed: true,
        }
    }
}

/// Sends `raw` to every distinct backend of the table at once and waits
/// for all the answers, in table order.
pub fn ask_all(
    session: &Session,
    table: &RoutingTable,
    raw: &Bytes,
) -> impl Future<Output = Vec<Answer>> + Send + 'static {
    let asked: Vec<_> = table
        .distinct_shards()
        .into_iter()
        .map(|i| ask(table.shard(i), session.proto, session.affinity, raw.clone()))
        .collect();
    async move {
        let mut answers = Vec::with_capacity(asked.len());
        for answer in asked {
            answers.push(answer.await);
        }
        answers
    }
}

/// The reply when some shard failed, else `None`.
///
/// A backend that gave no reply wins: its error names the shard. Then, when
/// every shard refused (a script that does not compile, an unknown
/// library), the first refusal is the reply, exactly as Redis words it:
/// nothing was done anywhere, and shards may word it differently (FUNCTION
/// RESTORE of libraries every shard has names the first it meets, in an
/// order of its own; review). When only some shards refused, the first
/// refusal is the reply with its shard named, since the others did what
/// was asked.
pub fn failure(answers: &[Answer]) -> Option<Bytes> {
    if let Some(failed) = answers.iter().find(|a| a.failed) {
        return Some(failed.frame.clone());
    }
    let refused = answers.iter().find(|a| is_error_reply(&a.frame))?;
    if answers.iter().all(|a| is_error_reply(&a.frame)) {
        return Some(refused.frame.clone());
    }
    let text = error_text(&refused.frame);
    Some(error_frame(&format!(
        "{} (shard '{}')",
        String::from_utf8_lossy(&text),
        refused.shard
    )))
}

/// The text of an error frame, without its type byte and line ends.
fn error_text(frame: &[u8]) -> Vec<u8> {
    match frame.first() {
        // `!len\r\ntext\r\n`
        Some(b'!') => match frame.iter().position(|&b| b == b'\n') {
            Some(eol) => frame[eol + 1..frame.len().saturating_sub(2)].to_vec(),
            None => Vec::new(),
        },
        _ => frame
            .get(1..frame.len().saturating_sub(2))
            .unwrap_or_default()
            .to_vec(),
    }
}

/// An encoded error reply (`msg` without the leading '-').
pub fn error_frame(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode_error(msg, &mut out);
    out.freeze()
}

/// The element count of an array frame (`*n`, or RESP3 `~n` set) and the
/// bytes of its elements; `None` for any other frame.
pub fn array_parts(frame: &[u8]) -> Option<(usize, &[u8])> {
    if !matches!(frame.first(), Some(b'*' | b'~')) {
        return None;
    }
    let eol = frame.windows(2).position(|w| w == b"\r\n")?;
    let count = std::str::from_utf8(&frame[1..eol]).ok()?.parse().ok()?;
    Some((count, &frame[eol + 2..]))
}

/// The element frames of an array frame (empty for any other frame).
pub fn array_elements(frame: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    let Some((count, mut rest)) = array_parts(frame) else {
        return elements;
    };
    while elements.len() < count {
        let Ok(Some(len)) = reply_frame_len(rest) else {
            break;
        };
        elements.push(&rest[..len]);
        rest = &rest[len..];
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(shard: &'static str, frame: &'static [u8]) -> Answer {
        Answer {
            shard,
            frame: Bytes::from_static(frame),
            failed: false,
        }
    }

    #[test]
    fn no_failure_when_every_shard_answers() {
        let answers = [answer("a", b"+OK\r\n"), answer("b", b"+OK\r\n")];
        assert_eq!(failure(&answers), None);
    }

    #[test]
    fn the_same_error_everywhere_is_redis_own() {
        let answers = [
            answer("a", b"-ERR Library not found\r\n"),
            answer("b", b"-ERR Library not found\r\n"),
        ];
        assert_eq!(
            failure(&answers).unwrap(),
            &b"-ERR Library not found\r\n"[..]
        );
    }

    #[test]
    fn errors_worded_differently_on_every_shard_are_the_first_as_redis_words_it() {
        let answers = [
            answer("a", b"-ERR Library lib2 already exists\r\n"),
            answer("b", b"-ERR Library lib1 already exists\r\n"),
        ];
        assert_eq!(
            failure(&answers).unwrap(),
            &b"-ERR Library lib2 already exists\r\n"[..]
        );
    }

    #[test]
    fn an_error_on_some_shards_names_the_shard() {
        let answers = [
            answer("a", b"+OK\r\n"),
            answer("b", b"!21\r\nERR Library not found\r\n"),
        ];
        assert_eq!(
            failure(&answers).unwrap(),
            &b"-ERR Library not found (shard 'b')\r\n"[..]
        );
    }

    #[test]
    fn a_backend_failure_wins() {
        let mut down = answer("b", b"-ERR shard 'b': backend down\r\n");
        down.failed = true;
        let answers = [answer("a", b"-ERR x\r\n"), down];
        assert_eq!(
            failure(&answers).unwrap(),
            &b"-ERR shard 'b': backend down\r\n"[..]
        );
    }

    #[test]
    fn array_elements_split_an_array() {
        assert_eq!(
            array_elements(b"*2\r\n$1\r\na\r\n:1\r\n"),
            vec![&b"$1\r\na\r\n"[..], b":1\r\n"]
        );
        assert!(array_elements(b"+OK\r\n").is_empty());
        assert_eq!(array_parts(b"*0\r\n"), Some((0, &b""[..])));
    }
}
