//! What the pub/sub tests share (tests/pubsub.rs, tests/zk_proxy.rs):
//! commands sent and replies read raw, and the subscribers a server counts
//! for a channel.

use super::redis::{encode_command, RawClient};

pub fn cmd(client: &mut RawClient, args: &[&str]) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.send_raw(&encode_command(&args));
}

/// Sends `args` and reads `replies` frames, concatenated.
pub fn replies(client: &mut RawClient, args: &[&str], replies: usize) -> String {
    cmd(client, args);
    read_frames(client, replies)
}

pub fn read_frames(client: &mut RawClient, n: usize) -> String {
    (0..n)
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect()
}

pub fn numsub(port: u16, channel: &str) -> String {
    RawClient::connect(port).cmd_str(&["PUBSUB", "NUMSUB", channel])
}

pub fn numsub_is(port: u16, channel: &str, n: usize) -> bool {
    numsub(port, channel) == format!("*2\r\n${}\r\n{channel}\r\n:{n}\r\n", channel.len())
}

/// The RESP2 subscribed-mode PING reply: proof that nothing else was
/// queued before it.
pub const PONG: &str = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
