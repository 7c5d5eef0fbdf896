//! Resumable byte streams between a proxy and its remote process.
//!
//! Each of stdin, stdout and stderr is a byte stream with offsets. The sender
//! keeps every byte it has read from its source until the receiver
//! acknowledges having *delivered* it (written it to its sink); at most
//! [`WINDOW`] bytes are unacknowledged, which is the back-pressure: when the
//! window is full the sender stops reading its source. When the path between
//! the two ends breaks (a daemon restart, a link loss) and comes back, the
//! receiver says how far it has delivered and the sender sends again from
//! there, so no byte is lost or doubled.

use std::collections::VecDeque;

use roam_proto::MAX_DATA_CHUNK;

/// Unacknowledged bytes a sender may hold per stream.
pub const WINDOW: usize = 4 << 20;

/// The sending half of a stream.
#[derive(Debug, Default)]
pub struct OutStream {
    /// Offset of `buf[0]`.
    base: u64,
    buf: VecDeque<u8>,
    /// Next offset to send.
    sent: u64,
    /// The stream ends at this offset (set once the source is at EOF).
    eof: Option<u64>,
    eof_sent: bool,
}

impl OutStream {
    /// A stream that goes on at `offset` (after a migration: every byte
    /// before was sent from the old node).
    pub fn starting_at(offset: u64) -> OutStream {
        OutStream {
            base: offset,
            sent: offset,
            ..OutStream::default()
        }
    }

    /// Bytes the source may still read before the window is full.
    pub fn room(&self) -> usize {
        WINDOW.saturating_sub(self.buf.len())
    }

    /// Whether the source has ended.
    pub fn at_eof(&self) -> bool {
        self.eof.is_some()
    }

    /// Offset just past the last byte read from the source.
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Appends bytes read from the source.
    pub fn push(&mut self, data: &[u8]) {
        debug_assert!(self.eof.is_none());
        self.buf.extend(data);
    }

    /// Marks the source as ended.
    pub fn set_eof(&mut self) {
        if self.eof.is_none() {
            self.eof = Some(self.end());
        }
    }

    /// Ends a stream the receiver knows is empty (it has no source: /dev/null,
    /// or merged into a terminal): at its end, with no end-of-stream message
    /// to send.
    pub fn close_unsent(&mut self) {
        self.set_eof();
        self.eof_sent = true;
    }

    /// The next chunk to send, if any, as its offset and its bytes in (at
    /// most) two pieces, borrowed; advances the send offset.
    pub fn next_parts(&mut self) -> Option<(u64, [&[u8]; 2])> {
        let end = self.end();
        if self.sent >= end {
            return None;
        }
        let from = (self.sent - self.base) as usize;
        let len = ((end - self.sent) as usize).min(MAX_DATA_CHUNK);
        let (a, b) = self.buf.as_slices();
        let parts = if from < a.len() {
            let take = (a.len() - from).min(len);
            [&a[from..from + take], &b[..len - take]]
        } else {
            let f = from - a.len();
            [&b[f..f + len], &b[..0]]
        };
        let off = self.sent;
        self.sent += len as u64;
        Some((off, parts))
    }

    /// The next chunk to send, if any, advancing the send offset.
    pub fn next_chunk(&mut self) -> Option<(u64, Vec<u8>)> {
        self.next_parts().map(|(off, parts)| (off, parts.concat()))
    }

    /// The end-of-stream offset, once, after all data has been sent.
    pub fn eof_to_send(&mut self) -> Option<u64> {
        match self.eof {
            Some(e) if !self.eof_sent && self.sent >= e => {
                self.eof_sent = true;
                Some(e)
            }
            _ => None,
        }
    }

    /// The receiver has delivered everything before `offset`.
    pub fn ack(&mut self, offset: u64) {
        let offset = offset.min(self.sent);
        if offset > self.base {
            let n = (offset - self.base) as usize;
            self.buf.drain(..n);
            self.base = offset;
        }
    }

    /// The path came back and the receiver has delivered up to `delivered`:
    /// send again from there (and the end of stream again).
    pub fn rewind(&mut self, delivered: u64) {
        self.ack(delivered);
        self.sent = self.base.max(delivered.min(self.end()));
        self.eof_sent = false;
    }

    /// Whether everything, end included, has been acknowledged.
    pub fn fully_acked(&self) -> bool {
        self.eof.is_some() && self.buf.is_empty()
    }
}

/// The receiving half of a stream. Received chunks are kept as they came
/// (no copy): [`InStream::take`] hands a whole chunk on to a writer.
#[derive(Debug, Default)]
pub struct InStream {
    /// Everything before this offset is written to the sink.
    delivered: u64,
    /// Bytes taken out for a writer and not yet reported written.
    in_flight: u64,
    /// Received chunks not yet taken or written; the first one from
    /// `front_at` on. They start at `delivered + in_flight`.
    pending: VecDeque<Vec<u8>>,
    front_at: usize,
    pending_len: usize,
    eof: Option<u64>,
    last_acked: u64,
}

impl InStream {
    /// A stream that goes on after a migration: everything before
    /// `delivered` was delivered on the old node, and `unread` (the bytes
    /// just before `delivered` that the process had not read yet) is to be
    /// delivered again here.
    pub fn resumed(delivered: u64, unread: Vec<u8>) -> InStream {
        let start = delivered.saturating_sub(unread.len() as u64);
        let mut s = InStream {
            delivered: start,
            last_acked: start,
            ..InStream::default()
        };
        if !unread.is_empty() {
            s.pending_len = unread.len();
            s.pending.push_back(unread);
        }
        s
    }

    /// Takes a chunk at `offset`; bytes already held are skipped, a chunk
    /// beyond what is held (a gap) is dropped: the sender will send it again.
    pub fn accept(&mut self, offset: u64, mut data: Vec<u8>) {
        let have = self.received();
        if offset > have {
            return;
        }
        let skip = (have - offset) as usize;
        if skip >= data.len() {
            return;
        }
        if skip > 0 {
            data.drain(..skip);
        }
        self.pending_len += data.len();
        self.pending.push_back(data);
    }

    /// The stream ends at `offset`.
    pub fn set_eof(&mut self, offset: u64) {
        self.eof = Some(offset);
    }

    /// Bytes waiting to be written to the sink.
    pub fn pending(&self) -> usize {
        self.pending_len
    }

    /// Offset just past the last byte received.
    pub fn received(&self) -> u64 {
        self.delivered + self.in_flight + self.pending_len as u64
    }

    /// A contiguous run of pending bytes to write next.
    pub fn front(&self) -> &[u8] {
        self.pending
            .front()
            .map_or(&[][..], |c| &c[self.front_at..])
    }

    /// `n` bytes from the front were written to the sink.
    pub fn consumed(&mut self, mut n: usize) {
        n = n.min(self.pending_len);
        self.pending_len -= n;
        self.delivered += n as u64;
        while n > 0 {
            let left = self.pending[0].len() - self.front_at;
            if n < left {
                self.front_at += n;
                return;
            }
            n -= left;
            self.pending.pop_front();
            self.front_at = 0;
        }
    }

    /// Takes the next pending chunk out (for a writer thread), at most
    /// `max` bytes of it; it counts as delivered only when
    /// [`InStream::mark_delivered`] is called.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let Some(first) = self.pending.front_mut() else {
            return Vec::new();
        };
        let left = first.len() - self.front_at;
        let chunk = if self.front_at == 0 && left <= max {
            self.pending.pop_front().expect("front exists")
        } else {
            let n = left.min(max);
            let c = first[self.front_at..self.front_at + n].to_vec();
            self.front_at += n;
            if self.front_at == first.len() {
                self.pending.pop_front();
                self.front_at = 0;
            }
            c
        };
        self.pending_len -= chunk.len();
        self.in_flight += chunk.len() as u64;
        chunk
    }

    /// `n` bytes taken earlier have been written to the sink.
    pub fn mark_delivered(&mut self, n: usize) {
        let n = (n as u64).min(self.in_flight);
        self.in_flight -= n;
        self.delivered += n;
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Whether everything up to the end of stream is delivered.
    pub fn finished(&self) -> bool {
        self.eof.is_some_and(|e| self.delivered >= e)
    }

    /// The offset to acknowledge, if an acknowledgement is due: after a
    /// quarter window, or when everything received has been delivered.
    pub fn ack_due(&mut self) -> Option<u64> {
        let unacked = self.delivered - self.last_acked;
        if unacked == 0 {
            return None;
        }
        if unacked as usize >= WINDOW / 4 || (self.pending_len == 0 && self.in_flight == 0) {
            self.last_acked = self.delivered;
            return Some(self.delivered);
        }
        None
    }

    /// After a path change, acknowledge again from scratch.
    pub fn reset_ack(&mut self) {
        self.last_acked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes everything pending and marks it written.
    fn drain(inn: &mut InStream) -> Vec<u8> {
        let mut out = Vec::new();
        while inn.pending() > 0 {
            let c = inn.take(usize::MAX);
            inn.mark_delivered(c.len());
            out.extend(c);
        }
        out
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn transfer_with_loss_and_resume() {
        let src = pattern(3 * MAX_DATA_CHUNK + 123);
        let mut out = OutStream::default();
        let mut inn = InStream::default();
        out.push(&src);
        out.set_eof();
        // First chunk arrives, second is lost, third arrives (gap: dropped).
        let c1 = out.next_chunk().unwrap();
        let _lost = out.next_chunk().unwrap();
        let c3 = out.next_chunk().unwrap();
        inn.accept(c1.0, c1.1);
        inn.accept(c3.0, c3.1);
        let mut sink = drain(&mut inn);
        // Path breaks; receiver reports what it delivered.
        out.rewind(inn.delivered());
        while let Some((off, data)) = out.next_chunk() {
            inn.accept(off, data);
        }
        inn.set_eof(out.eof_to_send().unwrap());
        sink.extend(drain(&mut inn));
        assert!(sink == src, "bytes differ");
        assert!(inn.finished());
        out.ack(inn.ack_due().unwrap());
        assert!(out.fully_acked());
    }

    #[test]
    fn streams_go_on_after_a_handover() {
        // The old node had delivered 10 bytes, 4 of them unread.
        let mut inn = InStream::resumed(10, b"6789".to_vec());
        assert_eq!(inn.received(), 10);
        assert_eq!(inn.ack_due(), None);
        // The proxy resends from its last acknowledgement: held bytes are
        // skipped, new ones kept.
        inn.accept(8, b"89ab".to_vec());
        assert_eq!(drain(&mut inn), b"6789ab");
        assert_eq!(inn.delivered(), 12);
        assert_eq!(inn.ack_due(), Some(12));

        let mut out = OutStream::starting_at(100);
        assert_eq!(out.next_chunk(), None);
        out.push(b"xy");
        assert_eq!(out.next_chunk(), Some((100, b"xy".to_vec())));
        // The proxy had received everything of the old node: nothing again.
        out.rewind(100);
        assert_eq!(out.next_chunk(), Some((100, b"xy".to_vec())));
        out.ack(102);
        assert!(out.buf.is_empty());
    }

    #[test]
    fn duplicates_are_skipped() {
        let mut inn = InStream::default();
        inn.accept(0, b"hello".to_vec());
        inn.accept(0, b"hello world".to_vec());
        inn.accept(3, b"lo wor".to_vec());
        let mut got = inn.take(100);
        got.extend(inn.take(100));
        assert_eq!(got, b"hello world");
        assert_eq!(inn.pending(), 0);
    }

    #[test]
    fn partial_writes_and_takes_across_chunks() {
        let mut inn = InStream::default();
        inn.accept(0, b"abcd".to_vec());
        inn.accept(4, b"efgh".to_vec());
        assert_eq!(inn.front(), b"abcd");
        inn.consumed(3);
        assert_eq!(inn.front(), b"d");
        assert_eq!(inn.take(2), b"d");
        assert_eq!(inn.take(2), b"ef");
        assert_eq!(inn.front(), b"gh");
        inn.consumed(2);
        assert_eq!(inn.pending(), 0);
        inn.mark_delivered(3);
        assert_eq!(inn.delivered(), 8);
        assert_eq!(inn.received(), 8);
    }

    #[test]
    fn window_limits_reading() {
        let mut out = OutStream::default();
        out.push(&vec![0; WINDOW - 10]);
        assert_eq!(out.room(), 10);
        while out.next_chunk().is_some() {}
        out.ack(1000);
        assert_eq!(out.room(), 1010);
        // Acks beyond what was sent are clamped.
        out.ack(u64::MAX);
        assert_eq!(out.room(), WINDOW);
    }

    #[test]
    fn ack_cadence() {
        let mut inn = InStream::default();
        inn.accept(0, vec![1; 100]);
        inn.consumed(50);
        assert_eq!(inn.ack_due(), None, "still pending, small");
        inn.consumed(50);
        assert_eq!(inn.ack_due(), Some(100));
        assert_eq!(inn.ack_due(), None);
    }

    #[test]
    fn bytes_with_a_writer_still_count_as_received() {
        let mut inn = InStream::default();
        inn.accept(0, b"abc".to_vec());
        let taken = inn.take(10);
        assert_eq!(taken, b"abc");
        // The next chunk follows the taken bytes: not a gap.
        inn.accept(3, b"def".to_vec());
        assert_eq!(inn.received(), 6);
        assert_eq!(inn.ack_due(), None, "nothing written yet");
        inn.mark_delivered(3);
        assert_eq!(inn.take(10), b"def");
        inn.mark_delivered(3);
        assert_eq!(inn.ack_due(), Some(6));
    }
}
