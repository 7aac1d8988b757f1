//! The bytes a backend connection reads, framed into replies, in buffers
//! sized so that replies pass to clients uncopied without one small reply
//! keeping a large allocation alive.

use crate::protocol::{bulk_reply_len, ProtocolError, ReplyFramer};
use bytes::{Bytes, BytesMut};

/// The read buffer grows by this much when less than a quarter of it is
/// free, so a round of replies for many clients takes few reads.
const READ_CHUNK: usize = 64 * 1024;
/// A reply this large gets a buffer of its own size, and the replies after
/// it a fresh one (see [`ReplyBuffer::make_room`]); smaller ones share
/// buffers of a few times their size, read with fewer calls.
const LARGE_REPLY: usize = 4 * READ_CHUNK;

/// A connection's read buffer and where framing got to.
pub(super) struct ReplyBuffer {
    buf: BytesMut,
    /// Where framing of the reply at the head of `buf` got to, so a large
    /// reply arriving in many reads is not rescanned from its start.
    framer: ReplyFramer,
    /// The length of the last reply of more than `READ_CHUNK / 4` bytes,
    /// while such replies keep coming (0: none lately); sizes the buffers
    /// reads start afresh in (see [`Self::make_room`]).
    large_reply: usize,
    /// Smaller replies since the last large one.
    small_replies: u32,
}

impl ReplyBuffer {
    pub fn new() -> ReplyBuffer {
        ReplyBuffer {
            buf: BytesMut::new(),
            framer: ReplyFramer::new(),
            large_reply: 0,
            small_replies: 0,
        }
    }

    /// Where the next read goes.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Room for the next read. A large bulk reply gets room for all of it
    /// at once, so that its allocation is its own size: grown by doubling,
    /// up to as much again would sit beside it, held for as long as a
    /// client that does not read holds the reply.
    ///
    /// While large replies come, a read with nothing half read starts in a
    /// fresh buffer holding a whole number of them (an allocation, no
    /// copy): one read into the end of a buffer left a reply half there,
    /// copied on to a bigger buffer (GETs of 64 KiB values: 44 KB copied
    /// per reply, 6% of the proxy's CPU).
    pub fn make_room(&mut self) {
        let buf = &mut self.buf;
        let room = buf.capacity() - buf.len();
        if buf.is_empty() && self.large_reply > 0 {
            let reply = self.large_reply;
            let fresh = reply * (READ_CHUNK / reply).max(1);
            if room < fresh {
                *buf = BytesMut::with_capacity(fresh);
            }
            return;
        }
        if room < READ_CHUNK / 4 {
            let missing = bulk_reply_len(buf)
                .filter(|&n| n > LARGE_REPLY)
                .map_or(0, |n| n.saturating_sub(buf.len()));
            buf.reserve(missing.max(READ_CHUNK));
        }
    }

    /// The next complete reply frame, split off uncopied.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        let Some(len) = self.framer.frame_len(&self.buf)? else {
            return Ok(None);
        };
        let frame = self.buf.split_to(len).freeze();
        if len > LARGE_REPLY {
            // The buffer was grown for this reply. Replies are split off
            // uncopied and keep their whole allocation alive while a client
            // holds them, so the ones after it must not be read into the
            // rest of it (a client that does not read, holding 40 replies
            // of 16 KiB, kept 500 MB alive after 8 MB GETs by others).
            let rest = std::mem::take(&mut self.buf);
            self.buf = BytesMut::with_capacity(READ_CHUNK.max(rest.len()));
            self.buf.extend_from_slice(&rest);
        }
        self.note_reply_len(len);
        Ok(Some(frame))
    }

    /// Notes a reply's length for the sizing of fresh read buffers; after
    /// many small replies in a row, large ones count as gone.
    fn note_reply_len(&mut self, len: usize) {
        // Larger ones get buffers of their own size anyway.
        if len > READ_CHUNK / 4 && len <= LARGE_REPLY {
            self.large_reply = len;
            self.small_replies = 0;
        } else if self.large_reply > 0 {
            self.small_replies += 1;
            if self.small_replies > 1024 {
                self.large_reply = 0;
            }
        }
    }
}
