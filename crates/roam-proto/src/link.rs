//! Messages between daemons: a node's `roamd` and the home's `roamd`.
//!
//! The node connects to the home over TLS (both sides present certificates
//! of the cluster CA), sends a [`LinkHello`] in a hello frame, and gets a
//! [`LinkHelloReply`]. After that both sides send [`LinkMsg`] frames.
//!
//! Stream data between a proxy and its remote process is carried by
//! [`LinkMsg::Data`], [`LinkMsg::Ack`] and [`LinkMsg::Eof`]: every byte has an
//! offset, a receiver acknowledges what it has delivered, and a sender keeps
//! unacknowledged bytes (at most a window) so that it can send them again
//! when the path is re-established after a daemon restart.

use serde::{Deserialize, Serialize};

use crate::fs::{FsNotice, FsOp, FsReply};
use crate::ProtoError;

use crate::types::{
    ArchInfo, Chan, Cred, ExitStatus, Handover, ImageSummary, KillRefusal, MigrateMode, NodeLoad,
    ProcInfo, RestoreSpec, SessionId, SessionReport, SpawnSpec, StageHash, WireError, WireSignal,
};

/// The index of [`LinkMsg::Image`] among `LinkMsg`'s variants (checked by
/// a test against the derived encoding).
const IMAGE_VARIANT: u32 = 29;

/// The frame [`crate::encode_frame`] makes of `LinkMsg::Image { req,
/// offset, data }`, made from borrowed bytes: without first copying them
/// into a message.
pub fn encode_image_frame(req: u64, offset: u64, data: &[u8]) -> Result<Vec<u8>, ProtoError> {
    struct ImageRef<'a> {
        req: u64,
        offset: u64,
        data: &'a [u8],
    }
    impl Serialize for ImageRef<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStructVariant;
            let mut v = s.serialize_struct_variant("LinkMsg", IMAGE_VARIANT, "Image", 3)?;
            v.serialize_field("req", &self.req)?;
            v.serialize_field("offset", &self.offset)?;
            v.serialize_field("data", serde_bytes::Bytes::new(self.data))?;
            v.end()
        }
    }
    crate::encode_frame("link", &ImageRef { req, offset, data })
}

/// The index of [`LinkMsg::LazyPages`] among `LinkMsg`'s variants
/// (checked by a test against the derived encoding).
const LAZY_PAGES_VARIANT: u32 = 33;

/// The frame [`crate::encode_frame`] makes of `LinkMsg::LazyPages { req,
/// addr, data }` with `len` bytes of data, all but the data: the caller
/// appends exactly `len` bytes (read from the process straight into the
/// frame, which has room for them).
pub fn lazy_pages_frame_head(req: u64, addr: u64, len: usize) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(32 + len);
    out.extend_from_slice(&[0u8; 4]);
    // The variant's index, the fields, then the byte string's length: all
    // varints.
    let mut out = postcard::to_extend(&(LAZY_PAGES_VARIANT, req, addr, len as u64), out).map_err(
        |source| ProtoError::Encode {
            what: "link",
            source,
        },
    )?;
    let body = out.len() - 4 + len;
    if body > crate::frame::MAX_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len: body,
            limit: crate::frame::MAX_FRAME,
        });
    }
    out[..4].copy_from_slice(&(body as u32).to_le_bytes());
    Ok(out)
}

/// A frame body that is a well-formed `LinkMsg::LazyPages`, read without
/// copying its data: its `req`, `addr`, and where in `body` its data
/// starts (it runs to the end); None for any other message (or a
/// malformed one).
pub fn lazy_pages_of(body: &[u8]) -> Option<(u64, u64, usize)> {
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != LAZY_PAGES_VARIANT {
        return None;
    }
    let ((req, addr), rest) = postcard::take_from_bytes::<(u64, u64)>(rest).ok()?;
    let (data, rest) = postcard::take_from_bytes::<&serde_bytes::Bytes>(rest).ok()?;
    rest.is_empty()
        .then_some((req, addr, body.len() - data.len()))
}

/// The index of [`LinkMsg::FsReply`] among `LinkMsg`'s variants, and of
/// [`FsReply::Data`] among `FsReply`'s (checked by a test against the
/// derived encoding).
const FS_REPLY_VARIANT: u32 = 21;
const FS_DATA_VARIANT: u32 = 4;

/// A frame body, in a vector of its own, decoded as a `LinkMsg` (errors
/// name it `what`) except that an `FsReply` carrying `FsReply::Data` keeps
/// its bytes where they lie in the vector: a node's reads come in without
/// a copy.
pub fn decode_link_msg(what: &'static str, body: Vec<u8>) -> Result<LinkMsg, ProtoError> {
    if let Some((req, at)) = fs_data_of(&body) {
        return Ok(LinkMsg::FsReply {
            req,
            reply: Box::new(FsReply::Data(crate::fs::FsData::in_frame(body, at))),
        });
    }
    crate::decode_body(what, &body)
}

/// A frame body that is a well-formed `LinkMsg::FsReply` with
/// `FsReply::Data`: its `req` and where in `body` its data starts (it runs
/// to the end); None for any other message.
fn fs_data_of(body: &[u8]) -> Option<(u64, usize)> {
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != FS_REPLY_VARIANT {
        return None;
    }
    let (req, rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
    let (reply, rest) = postcard::take_from_bytes::<u32>(rest).ok()?;
    if reply != FS_DATA_VARIANT {
        return None;
    }
    let (data, rest) = postcard::take_from_bytes::<&serde_bytes::Bytes>(rest).ok()?;
    rest.is_empty().then_some((req, body.len() - data.len()))
}

/// The index of [`LinkMsg::Data`] among `LinkMsg`'s variants (checked by
/// a test against the derived encoding).
const DATA_VARIANT: u32 = 5;

/// The frame [`crate::encode_frame`] makes of `LinkMsg::Data { session,
/// chan, offset, data }` where `data` is `parts[0]` then `parts[1]` (a ring
/// buffer's two halves), made without first gathering them into a message.
pub fn encode_data_frame(
    session: SessionId,
    chan: Chan,
    offset: u64,
    parts: [&[u8]; 2],
) -> Result<Vec<u8>, ProtoError> {
    struct Head {
        session: SessionId,
        chan: Chan,
        offset: u64,
    }
    impl Serialize for Head {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStructVariant;
            let mut v = s.serialize_struct_variant("LinkMsg", DATA_VARIANT, "Data", 3)?;
            v.serialize_field("session", &self.session)?;
            v.serialize_field("chan", &self.chan)?;
            v.serialize_field("offset", &self.offset)?;
            v.end()
        }
    }
    // `data` is the last field: its length (a varint) and its bytes follow
    // the head.
    let len = parts[0].len() + parts[1].len();
    let mut out = Vec::with_capacity(32 + len);
    out.extend_from_slice(&[0u8; 4]);
    let head = Head {
        session,
        chan,
        offset,
    };
    // A byte string's length is a varint, as a u64's.
    let mut out =
        postcard::to_extend(&(head, len as u64), out).map_err(|source| ProtoError::Encode {
            what: "link",
            source,
        })?;
    out.extend_from_slice(parts[0]);
    out.extend_from_slice(parts[1]);
    crate::frame::finish_frame(out)
}

/// The session of a frame body that is a well-formed `LinkMsg::Data`, read
/// without copying its data; None for any other message (or a malformed
/// one). What the home needs to relay stream data as it came.
pub fn data_session(body: &[u8]) -> Option<SessionId> {
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != DATA_VARIANT {
        return None;
    }
    let ((session, _chan, _offset), rest) =
        postcard::take_from_bytes::<(SessionId, Chan, u64)>(rest).ok()?;
    let (_data, rest) = postcard::take_from_bytes::<&serde_bytes::Bytes>(rest).ok()?;
    rest.is_empty().then_some(session)
}

/// The node's hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkHello {
    /// The node's name; must equal the name in its certificate.
    pub name: String,
    pub arch: ArchInfo,
    /// Sessions still running on the node (after a link loss or a home
    /// restart).
    pub sessions: Vec<SessionReport>,
    /// Runner problems found at start-up, reported to the operator.
    pub warnings: Vec<String>,
    /// The port of the node's peer listener (`peer_listen`), on the
    /// address its link comes from: where other nodes send it migrations
    /// directly. None: migrations to it go through the home.
    pub peer_port: Option<u16>,
}

/// Where a migration's pages go directly, node to node: the new node's
/// name (its certificate's) and its peer listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPath {
    pub node: String,
    pub addr: std::net::SocketAddr,
}

/// The hello on a peer link (node to node, TLS with the cluster's
/// certificates both ways; the sender is the node its certificate names).
/// Then `PreCopy`, `Captured`, `Image` and `ImageEnd` of migrations come
/// one way, each taken only if the home said that migration was to come
/// from that node ([`LinkMsg::Expect`]), and `ImageAck` the other. A link
/// stays open for the migrations after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// The sender's protocol use of the link (reserved; 0).
    pub flags: u32,
}

/// The home's answer to a hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinkHelloReply {
    Welcome {
        home_name: String,
        /// The node's number (join order, kept across rejoins).
        number: u32,
        heartbeat_ms: u64,
        timeout_ms: u64,
        /// Reported sessions the home knows have no proxy any more: the node
        /// kills them.
        forget: Vec<SessionId>,
        /// Which of the home's file servers answers this node's file calls
        /// (0: none). Node ids belong to one server: a node whose mount of
        /// the home's files was made with another one mounts them afresh.
        files_epoch: u64,
    },
    Refused {
        reason: String,
    },
}

/// Messages after the hello, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinkMsg {
    /// Node → home, every heartbeat interval.
    Heartbeat {
        load: NodeLoad,
    },
    /// Liveness probe; answered with `Pong`.
    Ping {
        seq: u64,
    },
    Pong {
        seq: u64,
    },

    /// Home → node: start a process.
    Spawn {
        req: u64,
        session: SessionId,
        home_pid: u32,
        cred: Cred,
        spec: Box<SpawnSpec>,
    },
    /// Node → home: the result of `Spawn`.
    Spawned {
        req: u64,
        result: Result<u32, WireError>,
    },

    /// Stream bytes starting at `offset` of `chan`.
    Data {
        session: SessionId,
        chan: Chan,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The receiver has delivered `chan` up to `offset`.
    Ack {
        session: SessionId,
        chan: Chan,
        offset: u64,
    },
    /// `chan` ends at `offset`.
    Eof {
        session: SessionId,
        chan: Chan,
        offset: u64,
    },
    /// The path between proxy and node is (re)established: the sender has
    /// delivered its inbound channels up to these offsets; the other side
    /// sends again from there.
    Resume {
        session: SessionId,
        delivered: [u64; 3],
    },

    /// Home → both ends: the path between proxy and node is up again (after
    /// a link loss or a home restart); each end answers with `Resume`.
    PathUp {
        session: SessionId,
    },

    /// Home → node: deliver a signal to the process, or to its whole process
    /// group (`group`), as a terminal would for INT, QUIT, TSTP and CONT.
    Signal {
        session: SessionId,
        signal: WireSignal,
        group: bool,
    },
    /// Home → node: the terminal was resized.
    Resize {
        session: SessionId,
        rows: u16,
        cols: u16,
    },
    /// Node → home: the process stopped (by `signal`) or continued.
    Stopped {
        session: SessionId,
        signal: WireSignal,
    },
    Continued {
        session: SessionId,
    },
    /// Node → home: the process ended; its stdout and stderr end at these
    /// offsets.
    Exited {
        session: SessionId,
        status: ExitStatus,
        stdout_end: u64,
        stderr_end: u64,
    },
    /// Home → node: the session's proxy is gone (killed, or never came back
    /// after a home restart): kill the process and forget it.
    Forget {
        session: SessionId,
    },
    /// Proxy → node (through home): the proxy has delivered everything after
    /// the exit; the node may forget the session.
    Done {
        session: SessionId,
    },

    /// Home → node: list your processes.
    ListProcs {
        req: u64,
    },
    ProcList {
        req: u64,
        procs: Vec<ProcInfo>,
    },

    /// Either side: leaving on purpose (not a failure).
    Leave {
        reason: String,
    },

    /// Node → home: a file-system call of one of the node's processes, to
    /// be performed as `cred` (see `crate::fs`).
    Fs {
        req: u64,
        cred: Cred,
        op: Box<FsOp>,
    },
    /// Home → node: the answer to `Fs`.
    FsReply {
        req: u64,
        reply: Box<FsReply>,
    },
    /// Home → node: a file the node may have cached changed.
    FsNotice(FsNotice),

    /// Node → home: a process of `session` (or one it started) sends a
    /// signal to home pid `pid` (its process group if `group`), with the
    /// sender's user id `from_uid` (trusted only if it is the session's
    /// user, or the session's user is root). `signal` 0 only checks that
    /// the target exists and may be signalled. `value` is sigqueue(3)'s
    /// value, for rt_sigqueueinfo. See docs/design/identity.md.
    Kill {
        req: u64,
        session: SessionId,
        from_uid: u32,
        pid: u32,
        group: bool,
        signal: WireSignal,
        value: Option<u64>,
    },
    /// Home → node: the result of `Kill`.
    KillReply {
        req: u64,
        result: Result<(), KillRefusal>,
    },

    /// Home → node: capture the session's process into an image, sent
    /// back as transfer `req` (`Image`... `ImageEnd`). Unless
    /// `leave_running`, the process stays stopped until `ImageSaved`, and
    /// is killed if the image was saved. Ends with `Checkpointed`. See
    /// docs/design/checkpoint.md.
    Checkpoint {
        req: u64,
        session: SessionId,
        leave_running: bool,
    },
    /// Home → node: the caller stored the image of `Checkpoint` `req`
    /// safely (`ok`), or could not (the process then runs on).
    ImageSaved {
        req: u64,
        ok: bool,
    },
    /// Node → home: `Checkpoint` `req` is over.
    Checkpointed {
        req: u64,
        result: Result<(), WireError>,
    },
    /// Home → node: rebuild a process from the image that follows as
    /// transfer `req`, as the process of a new session (answered with
    /// `Spawned`, as a spawn is).
    Restore {
        req: u64,
        session: SessionId,
        home_pid: u32,
        cred: Cred,
        spec: Box<RestoreSpec>,
    },
    /// Part of the image of transfer `req`, at `offset` (at most
    /// [`crate::MAX_DATA_CHUNK`] bytes).
    Image {
        req: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The receiver of transfer `req` holds its image up to `offset`; the
    /// sender keeps at most [`IMAGE_WINDOW`] bytes unacknowledged.
    ImageAck {
        req: u64,
        offset: u64,
    },
    /// The sender of transfer `req` is done: the image is complete, or it
    /// failed.
    ImageEnd {
        req: u64,
        result: Result<ImageSummary, WireError>,
    },

    /// Home → node: migrate the session's process away. Freeze and capture
    /// it, stop its streams (`Captured`), send the image as transfer `req`,
    /// and keep the process frozen until `MigrateEnd`. See
    /// docs/design/migration.md.
    ///
    /// With pre-copy (`mode`), first send the pages in rounds while the
    /// process runs, each round a `PreCopy` and its bytes in the same
    /// transfer; the image then names the pages sent instead of carrying
    /// them.
    ///
    /// With post-copy, the image names the pages of the process's large
    /// private anonymous mappings instead of carrying them; once the image
    /// is sent they follow as `LazyPages` over the peer link (`direct` is
    /// then required), and after a commit the frozen copy stays until the
    /// new node's `LazyDone`.
    ///
    /// With `direct`, the pre-copy rounds and the image go straight to the
    /// new node over a peer link ([`PeerHello`]); only `PreCopy`,
    /// `Captured` and `ImageEnd` are told to the home too (it counts them;
    /// it passes on an `ImageEnd` that failed, which the peer link may not
    /// have carried). The home then sends the new node its `Restore`
    /// ahead, with the `Expect`, before this message.
    MigrateOut {
        req: u64,
        session: SessionId,
        mode: MigrateMode,
        direct: Option<PeerPath>,
    },
    /// Old node → new node, over the peer link, in a post-copy migration
    /// (`MigrateMode::PostCopy`): pages of the process, `data` (at most
    /// [`crate::MAX_DATA_CHUNK`] bytes, whole pages) from address `addr` on
    /// in the frozen process. Sent after the image, in the background
    /// (at most [`LAZY_WINDOW`] bytes unacknowledged by `ImageAck`, its
    /// offset counting these bytes) and at once for a `LazyWant`.
    LazyPages {
        req: u64,
        addr: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// New node → old node: the restored process faulted on the page at
    /// `addr` (of the old process's layout), which has not come yet.
    LazyWant {
        req: u64,
        addr: u64,
    },
    /// Old node → new node: every page of the post-copy has been sent.
    LazyEnd {
        req: u64,
    },
    /// New node → old node: the post-copy is over, every page in place
    /// (or the process is gone): the frozen copy may go.
    LazyDone {
        req: u64,
        result: Result<(), WireError>,
    },
    /// Home → new node: migration `req` comes over a peer link from node
    /// `from` (see [`PeerHello`]), of the process that is `pid` there (the
    /// new node readies a stub with that pid while it is captured).
    Expect {
        req: u64,
        from: String,
        pid: u32,
    },
    /// Node → home → new node: round `round` of pre-copied pages of
    /// migration `req`, `len` bytes of page runs that follow in the
    /// transfer. The new node keeps them until the `Restore`.
    PreCopy {
        req: u64,
        round: u32,
        len: u64,
    },
    /// Node → home: the process of `MigrateOut` `req` is frozen and
    /// captured (the image of this length follows, after
    /// `handover.stdin_unread` bytes of unread input), or it could not be
    /// (it runs on, untouched). Over a peer link, to the new node too,
    /// first: it completes the `Restore` the home sent ahead.
    Captured {
        req: u64,
        result: Result<(ImageSummary, Handover), WireError>,
    },
    /// Home → node: the end of `MigrateOut` `req`. With `commit` the process
    /// runs on its new node: kill the frozen one and forget its session;
    /// without, it goes on here, as if nothing happened.
    MigrateEnd {
        req: u64,
        commit: bool,
    },

    /// Home → node: keep the file that follows as transfer `req` (`Image`
    /// ... `ImageEnd`, `len` bytes) in the node's cache of staged
    /// executables, under its SHA-256 `hash`, if its bytes have that hash.
    /// Answered with `Staged`. See docs/design/staging.md.
    Stage {
        req: u64,
        hash: StageHash,
        len: u64,
    },
    /// Node → home: `Stage` `req` is over: the file is in the cache, or
    /// not (a hash that does not match, too big, no room...).
    Staged {
        req: u64,
        result: Result<(), WireError>,
    },
}

/// Bytes of an image a sender may have in flight, unacknowledged.
pub const IMAGE_WINDOW: u64 = 32 << 20;

/// Bytes of an eager move's streamed pages that may be in flight,
/// unacknowledged: enough to keep the link busy, few enough that the
/// buffers they pass through stay warm. A 100 MiB move by hand took a
/// median of 158 ms with 32 MiB, 140 with 8 and 128 with 4 (the old
/// node's fresh frames faulted in a third of the pages' time before).
pub const STREAM_WINDOW: u64 = 4 << 20;

/// Bytes of post-copy pages pushed in the background that may be in
/// flight, unacknowledged: small, since a page a fault waits for queues
/// behind them.
pub const LAZY_WINDOW: u64 = 2 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_reply_decodes_in_place_and_everything_else_as_derived() {
        let data: Vec<u8> = (0..262_144u32).map(|i| (i * 5) as u8).collect();
        for (req, d) in [
            (0u64, Vec::new()),
            (1 << 50, data.clone()),
            (7, b"x".to_vec()),
        ] {
            let msg = LinkMsg::FsReply {
                req,
                reply: Box::new(FsReply::Data(d.clone().into())),
            };
            let frame = crate::encode_frame("link", &msg).unwrap();
            let body = frame[4..].to_vec();
            assert_eq!(
                fs_data_of(&body).map(|(r, at)| (r, body[at..].to_vec())),
                Some((req, d.clone()))
            );
            assert_eq!(decode_link_msg("link", body.clone()).unwrap(), msg);
            // Truncated, or with bytes after it: not taken in place.
            assert_eq!(fs_data_of(&body[..body.len() - 1]), None);
            let mut longer = body.clone();
            longer.push(0);
            assert_eq!(fs_data_of(&longer), None);
        }
        // Other replies and messages take the derived path.
        for msg in [
            LinkMsg::FsReply {
                req: 3,
                reply: Box::new(FsReply::Err(2)),
            },
            LinkMsg::FsReply {
                req: 3,
                reply: Box::new(FsReply::Written(4)),
            },
            LinkMsg::LazyEnd { req: 1 },
        ] {
            let frame = crate::encode_frame("link", &msg).unwrap();
            assert_eq!(fs_data_of(&frame[4..]), None);
            assert_eq!(decode_link_msg("link", frame[4..].to_vec()).unwrap(), msg);
        }
        // Garbage is an error, never a panic.
        assert!(decode_link_msg("link", vec![21, 0xff, 0xff]).is_err());
        assert!(decode_link_msg("link", Vec::new()).is_err());
    }

    #[test]
    fn a_data_frame_from_two_parts_is_the_messages_frame() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        for (session, chan, offset, split, len) in [
            (SessionId(1), Chan::Stdout, 0u64, 0usize, 0usize),
            (SessionId(u64::MAX), Chan::Stderr, 1 << 40, 1, 3),
            (SessionId(99), Chan::Stdin, 77, 127, 128),
            (SessionId(5), Chan::Stdout, 12, 100_000, 262_144),
        ] {
            let whole = data[..len].to_vec();
            let msg = LinkMsg::Data {
                session,
                chan,
                offset,
                data: whole.clone(),
            };
            let owned = crate::encode_frame("link", &msg).unwrap();
            let split = split.min(len);
            let parts = [&whole[..split], &whole[split..]];
            let made = encode_data_frame(session, chan, offset, parts).unwrap();
            assert_eq!(made, owned, "len {len} split {split}");
            assert_eq!(data_session(&owned[4..]), Some(session));
        }
    }

    #[test]
    fn only_whole_data_messages_have_a_data_session() {
        let data = crate::encode_frame(
            "link",
            &LinkMsg::Data {
                session: SessionId(3),
                chan: Chan::Stdout,
                offset: 9,
                data: vec![1, 2, 3],
            },
        )
        .unwrap();
        let body = &data[4..];
        assert_eq!(data_session(body), Some(SessionId(3)));
        // Truncated, or with bytes after it: not a message to relay.
        assert_eq!(data_session(&body[..body.len() - 1]), None);
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(data_session(&longer), None);
        let ack = crate::encode_frame(
            "link",
            &LinkMsg::Ack {
                session: SessionId(3),
                chan: Chan::Stdin,
                offset: 9,
            },
        )
        .unwrap();
        assert_eq!(data_session(&ack[4..]), None);
        assert_eq!(data_session(&[]), None);
    }

    #[test]
    fn a_lazy_pages_frame_made_in_place_is_the_messages_frame() {
        for (req, addr, data) in [
            (1u64, 0u64, Vec::new()),
            (u64::MAX, 0x7fff_ffff_f000, vec![9u8; 4096]),
            (
                42,
                1 << 40,
                (0..262_144u32).map(|i| (i * 3) as u8).collect(),
            ),
        ] {
            let owned = crate::encode_frame(
                "link",
                &LinkMsg::LazyPages {
                    req,
                    addr,
                    data: data.clone(),
                },
            )
            .unwrap();
            let mut made = lazy_pages_frame_head(req, addr, data.len()).unwrap();
            made.extend_from_slice(&data);
            assert_eq!(made, owned, "{} bytes", data.len());
            let body = &owned[4..];
            let (r, a, at) = lazy_pages_of(body).unwrap();
            assert_eq!((r, a, &body[at..]), (req, addr, &data[..]));
            // Truncated, or with bytes after it: not taken.
            assert_eq!(lazy_pages_of(&body[..body.len() - 1]), None);
            let mut longer = body.to_vec();
            longer.push(0);
            assert_eq!(lazy_pages_of(&longer), None);
        }
        assert!(lazy_pages_frame_head(1, 0, crate::frame::MAX_FRAME).is_err());
        let end = crate::encode_frame("link", &LinkMsg::LazyEnd { req: 1 }).unwrap();
        assert_eq!(lazy_pages_of(&end[4..]), None);
    }

    #[test]
    fn an_image_frame_from_borrowed_bytes_is_the_messages_frame() {
        for (req, offset, data) in [
            (1u64, 0u64, Vec::new()),
            (u64::MAX, 123_456_789, vec![7u8; 3]),
            (42, 1 << 40, (0..200_000u32).map(|i| i as u8).collect()),
        ] {
            let owned = crate::encode_frame(
                "link",
                &LinkMsg::Image {
                    req,
                    offset,
                    data: data.clone(),
                },
            )
            .unwrap();
            assert_eq!(encode_image_frame(req, offset, &data).unwrap(), owned);
            let back: LinkMsg = crate::decode_body("link", &owned[4..]).unwrap();
            assert_eq!(back, LinkMsg::Image { req, offset, data });
        }
    }
}
