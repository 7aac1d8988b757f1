//! Bytes waiting to be written to a socket, written without blocking.
//!
//! Small pieces are copied into one staging buffer, so a round of them
//! leaves in one `write`. Larger ones are queued as the `Bytes` they arrived
//! in and leave with the staged bytes around them in one vectored write,
//! never copied. What counts as large depends on the direction
//! ([`OutBuf::for_requests`], [`OutBuf::for_replies`]). Writing never
//! waits: the caller waits for writability and keeps its timers and its
//! reads going meanwhile.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};

/// Requests of at least this size go to a backend uncopied. A request is a
/// slice of its own client's read buffer, which it keeps alive only until
/// the backend's socket takes it. (At 16 KiB, 4 KB SETs were copied, and the
/// backend batches' staging buffers grew by reallocation: 1 KiB measured
/// 10-15% less CPU per 4 KB SET.)
const REQUEST_COPY_LIMIT: usize = 1024;
/// Replies of at least this size go to a client uncopied. A reply is a
/// slice of a backend connection's read buffer, shared with the replies of
/// other clients: a small reply held uncopied for a client that does not
/// read would keep a whole 64 KiB buffer alive, so only large ones are
/// passed whole (at most 4 of them share a buffer).
const REPLY_COPY_LIMIT: usize = 16 * 1024;
/// Most pieces one vectored write takes (Linux allows 1024).
const MAX_SLICES: usize = 64;
/// A staging buffer larger than this is released once it has been written,
/// so an idle connection keeps little memory.
const KEEP_STAGING: usize = 64 * 1024;

/// What is owed to one socket, in order.
pub struct OutBuf {
    /// Pieces handed over whole, in order; the staging buffer's contents
    /// come after all of them.
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    len: usize,
    /// Pieces at least this long are queued, not copied.
    copy_limit: usize,
}

impl OutBuf {
    /// The output of a connection to a backend: requests from clients.
    pub fn for_requests() -> OutBuf {
        OutBuf::with_copy_limit(REQUEST_COPY_LIMIT)
    }

    /// The output of a client connection: replies from backends.
    pub fn for_replies() -> OutBuf {
        OutBuf::with_copy_limit(REPLY_COPY_LIMIT)
    }

    fn with_copy_limit(copy_limit: usize) -> OutBuf {
        OutBuf {
            chunks: VecDeque::new(),
            staging: BytesMut::new(),
            len: 0,
            copy_limit,
        }
    }

    /// Bytes not written yet.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `piece`, copying it only when it is small.
    pub fn push(&mut self, piece: Bytes) {
        if piece.len() < self.copy_limit {
            self.extend_from_slice(&piece);
            return;
        }
        self.seal_staging();
        self.len += piece.len();
        self.chunks.push_back(piece);
    }

    /// Appends a copy of `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.staging.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Lets `encode` append to the end of the queue (a reply the proxy
    /// builds itself).
    pub fn encode_with(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        let before = self.staging.len();
        encode(&mut self.staging);
        self.len += self.staging.len() - before;
    }

    /// Moves the staged bytes behind the queued pieces, keeping order.
    fn seal_staging(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Writes as much as the socket takes now with `write` (a
    /// non-blocking vectored write, such as `TcpStream::try_write_vectored`).
    /// `Ok(0)` only when empty; `WouldBlock` when the socket is full.
    pub fn write_now(
        &mut self,
        write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.len == 0 {
            return Ok(0);
        }
        let written = if self.chunks.is_empty() {
            // The common case: only small pieces, one plain write.
            let n = write(&[IoSlice::new(&self.staging)])?;
            self.staging.advance(n);
            n
        } else {
            self.seal_staging();
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(MAX_SLICES)
                .map(|c| IoSlice::new(c))
                .collect();
            let n = write(&slices)?;
            self.consume_chunks(n);
            n
        };
        self.len -= written;
        if self.len == 0 {
            self.release();
        }
        Ok(written)
    }

    fn consume_chunks(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Everything is written: reuse the staging buffer from its start, or
    /// give a large one back.
    fn release(&mut self) {
        if self.staging.capacity() > KEEP_STAGING {
            self.staging = BytesMut::new();
        } else {
            self.staging.clear();
        }
    }

    /// Drops what is owed (the connection is being closed).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.staging.clear();
        self.len = 0;
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn small_and_large_pieces_arrive_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = TcpStream::connect(addr).await.unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        let large = Bytes::from(vec![b'x'; 3 * REPLY_COPY_LIMIT]);
        let mut out = OutBuf::for_replies();
        out.extend_from_slice(b"a");
        out.push(large.clone());
        out.push(Bytes::from_static(b"b"));
        out.encode_with(|buf| buf.extend_from_slice(b"c"));
        let mut want = b"a".to_vec();
        want.extend_from_slice(&large);
        want.extend_from_slice(b"bc");
        assert_eq!(out.len(), want.len());
        let reading = tokio::spawn(async move {
            let mut got = vec![0; want.len()];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(got, want);
        });
        while !out.is_empty() {
            writer.writable().await.unwrap();
            match out.write_now(|slices| writer.try_write_vectored(slices)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        reading.await.unwrap();
    }
}
