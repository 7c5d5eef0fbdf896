//! `roam restore DIR --node NAME`: the image goes to the node, which
//! rebuilds its process as a new session; this process is then its proxy,
//! as `roam run`'s is (stdio, signals, job control, exit status). See
//! docs/design/checkpoint.md.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use roam_ckpt::restore::Image;
use roam_proto::link::{LinkMsg, IMAGE_WINDOW};
use roam_proto::local::LocalMsg;
use roam_proto::types::{ImageSummary, RestoreSpec};
use roam_proto::MAX_DATA_CHUNK;
use tokio::sync::mpsc;

use super::{
    finish, forward_signals, null_stdio, start_stdin_reader, Input, Outcome, Proxy, RunOptions,
    EXIT_CANNOT_EXEC, EXIT_LOST,
};
use crate::client::{Client, ClientError};
use crate::error_chain;

/// What `roam restore --node` asks for.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub socket: PathBuf,
    /// The image file.
    pub image: PathBuf,
    pub node: String,
}

/// Exit status when the image cannot be restored (bad image, refused).
const EXIT_NOT_RESTORED: i32 = 1;

/// Restores the image on its node and proxies its process; never returns.
pub fn run_restore_proxy(opts: RestoreOptions) -> ! {
    let (meta, len) = match Image::peek(&opts.image) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("roam: {}: {}", opts.image.display(), error_chain(&e));
            finish(Outcome::Exit(EXIT_NOT_RESTORED));
        }
    };
    // Signals are caught before the process exists: none is lost.
    let signals = roam_sys::signal::catch_into_pipe(&roam_sys::signal::forwardable()).ok();
    let exe = meta.exe.to_vec();
    let _ = roam_sys::title::set_cmdline(std::slice::from_ref(&exe));
    let base = exe.rsplit(|b| *b == b'/').next().unwrap_or(&exe);
    let _ = roam_sys::title::set_comm(base);
    let rt = super::runtime();
    let command = String::from_utf8_lossy(&exe).into_owned();
    let spec = RestoreSpec {
        image_len: len,
        arch: meta.arch,
        command: command.clone(),
        null: [false; 3],
        home_ppid: std::os::unix::process::parent_id(),
        home_host: roam_sys::procfs::hostname(),
        handover: None,
        postcopy: false,
        ahead: false,
    };
    finish(rt.block_on(restore_main(opts, spec, signals)))
}

async fn restore_main(
    opts: RestoreOptions,
    mut spec: RestoreSpec,
    signals: Option<std::os::fd::OwnedFd>,
) -> Outcome {
    let (sig_tx, mut sig_rx) = mpsc::unbounded_channel::<i32>();
    if let Some(fd) = signals {
        forward_signals(fd, sig_tx);
    }
    let run = RunOptions {
        socket: opts.socket.clone(),
        argv: vec![spec.command.clone().into()],
        program: None,
        node: Some(opts.node.clone()),
        mode: None,
        reservation: None,
        rank: None,
        stdin_null: false,
        ship: false,
        confine: false,
    };
    spec.null = null_stdio(&run);
    let stdin_null = spec.null[0];
    let prog = spec.command.clone();
    let fail = |e: &dyn std::error::Error| {
        eprintln!(
            "roam: restore of {}: {}",
            opts.image.display(),
            error_chain(e)
        );
    };
    let mut client = match Client::connect(&opts.socket, "roam restore").await {
        Ok(c) => c,
        Err(e) => {
            fail(&e);
            return Outcome::Exit(EXIT_LOST);
        }
    };
    let len = spec.image_len;
    let request = LocalMsg::Restore {
        spec: Box::new(spec),
        node: opts.node.clone(),
    };
    let session = match send_image(&mut client, &request, &opts.image, len).await {
        Ok(LocalMsg::Spawned { session, .. }) => session,
        Ok(other) => {
            fail(&ClientError::Unexpected(format!("{other:?}")));
            return Outcome::Exit(EXIT_LOST);
        }
        Err(SendError::Client(ClientError::Remote(e))) => {
            eprintln!("roam: restore of {}: {e}", opts.image.display());
            return Outcome::Exit(if e.code == roam_proto::types::ErrorCode::ExecFailed {
                EXIT_CANNOT_EXEC
            } else {
                EXIT_NOT_RESTORED
            });
        }
        Err(e) => {
            fail(&e);
            return Outcome::Exit(EXIT_LOST);
        }
    };
    let (stdin_tx, stdin_rx) = mpsc::channel::<Input>(4);
    if !stdin_null {
        start_stdin_reader(stdin_tx, false);
    }
    tracing::debug!("{prog} restored on {} as session {session}", opts.node);
    let mut p = Proxy::new(run, false, session, opts.node.clone(), prog);
    p.stdin_null = stdin_null;
    p.run(client, &mut sig_rx, stdin_rx).await
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot read the image")]
    Read(#[source] std::io::Error),
    #[error("the image changed while it was sent ({0} bytes read of {1})")]
    Changed(u64, u64),
    #[error("node {node} went down ({reason})")]
    NodeLost { node: String, reason: String },
}

/// Sends the request and the file at `path` as its image, at most
/// [`IMAGE_WINDOW`] ahead of the node's acknowledgements; returns the
/// home's answer after them (`Spawned` for a restore, `Ok` for a
/// staging), which may come before the whole file was sent.
pub(super) async fn send_image(
    client: &mut Client,
    request: &LocalMsg,
    path: &std::path::Path,
    len: u64,
) -> Result<LocalMsg, SendError> {
    let mut file = File::open(path).map_err(SendError::Read)?;
    client.send(request).await?;
    let mut offset = 0u64;
    let mut acked = 0u64;
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    loop {
        while offset - acked > IMAGE_WINDOW {
            match answer(client).await? {
                Answer::Acked(o) => acked = acked.max(o),
                Answer::Final(m) => return Ok(m),
            }
        }
        let n = read_full(&mut file, &mut buf).map_err(SendError::Read)?;
        if n == 0 {
            break;
        }
        let msg = LocalMsg::Transfer(LinkMsg::Image {
            req: 0,
            offset,
            data: buf[..n].to_vec(),
        });
        client.send(&msg).await?;
        offset += n as u64;
    }
    if offset != len {
        return Err(SendError::Changed(offset, len));
    }
    let end = ImageSummary {
        len,
        stored: 0,
        frozen_us: 0,
        stopped_after_us: 0,
        lazy: 0,
    };
    client
        .send(&LocalMsg::Transfer(LinkMsg::ImageEnd {
            req: 0,
            result: Ok(end),
        }))
        .await?;
    loop {
        if let Answer::Final(m) = answer(client).await? {
            return Ok(m);
        }
    }
}

enum Answer {
    Acked(u64),
    Final(LocalMsg),
}

/// The next answer of the home during a transfer.
async fn answer(client: &mut Client) -> Result<Answer, SendError> {
    match client.recv().await? {
        Some(LocalMsg::Transfer(LinkMsg::ImageAck { offset, .. })) => Ok(Answer::Acked(offset)),
        Some(m @ (LocalMsg::Spawned { .. } | LocalMsg::Ok)) => Ok(Answer::Final(m)),
        Some(LocalMsg::Error(e)) => Err(ClientError::Remote(e).into()),
        Some(LocalMsg::NodeLost { node, reason }) => Err(SendError::NodeLost { node, reason }),
        Some(other) => Err(ClientError::Unexpected(format!("{other:?}")).into()),
        None => Err(ClientError::Closed.into()),
    }
}

/// Fills `buf` unless the file ends first; the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
