//! A minimal blocking client of roamd's local protocol: enough to ask the
//! home for its node list.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use roam_proto::local::{LocalHello, LocalHelloReply, LocalMsg};
use roam_proto::types::NodeInfo;
use roam_proto::{decode_body, decode_hello, encode_frame, encode_hello, ProtoError, MAX_FRAME};

use crate::TestbedError;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn read_frame(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Asks the roamd listening on `socket` for the cluster's nodes
/// (`LocalMsg::Nodes`).
pub fn query_nodes(socket: &Path) -> Result<Vec<NodeInfo>, TestbedError> {
    let io_err = |source: io::Error| TestbedError::LocalIo {
        socket: socket.to_path_buf(),
        source,
    };
    let proto_err = |source: ProtoError| TestbedError::LocalProto {
        socket: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(io_err)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;

    let hello = LocalHello {
        client: "testbed".into(),
    };
    s.write_all(&encode_hello("local hello", &hello).map_err(proto_err)?)
        .map_err(io_err)?;
    let body = read_frame(&mut s).map_err(io_err)?;
    match decode_hello::<LocalHelloReply>("local hello reply", &body).map_err(proto_err)? {
        LocalHelloReply::Welcome { .. } => {}
        LocalHelloReply::Refused { reason } => {
            return Err(TestbedError::LocalAnswer {
                socket: socket.to_path_buf(),
                problem: format!("refused the connection: {reason}"),
            })
        }
    }

    s.write_all(&encode_frame("local", &LocalMsg::Nodes).map_err(proto_err)?)
        .map_err(io_err)?;
    let body = read_frame(&mut s).map_err(io_err)?;
    match decode_body::<LocalMsg>("local", &body).map_err(proto_err)? {
        LocalMsg::NodeList(nodes) => Ok(nodes),
        LocalMsg::Error(e) => Err(TestbedError::LocalAnswer {
            socket: socket.to_path_buf(),
            problem: format!("error {:?}: {}", e.code, e.message),
        }),
        other => Err(TestbedError::LocalAnswer {
            socket: socket.to_path_buf(),
            problem: format!("unexpected answer to a node list request: {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_proto::types::{ArchInfo, NodeLoad, NodeState};
    use std::os::unix::net::UnixListener;

    /// A fake roamd that answers one connection as `answer` says.
    fn fake_roamd(dir: &Path, answer: LocalMsg) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(dir.join("fake.sock")).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let body = read_frame(&mut s).unwrap();
            let hello: LocalHello = decode_hello("hello", &body).unwrap();
            assert_eq!(hello.client, "testbed");
            let reply = LocalHelloReply::Welcome {
                node_name: "home".into(),
                is_home: true,
            };
            s.write_all(&encode_hello("reply", &reply).unwrap())
                .unwrap();
            let body = read_frame(&mut s).unwrap();
            let req: LocalMsg = decode_body("local", &body).unwrap();
            assert_eq!(req, LocalMsg::Nodes);
            s.write_all(&encode_frame("local", &answer).unwrap())
                .unwrap();
        })
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("roam-testbed-client-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn speaks_the_local_protocol() {
        let dir = tempdir("ok");
        let node = NodeInfo {
            number: 1,
            name: "n1".into(),
            addr: "10.77.1.11:40000".into(),
            arch: ArchInfo {
                native: "x86_64".into(),
                runners: vec![],
                emulated: false,
                broken: vec![],
            },
            state: NodeState::Up,
            load: NodeLoad::default(),
            last_heartbeat_ms: 3,
            joined_ms: 100,
        };
        let t = fake_roamd(&dir, LocalMsg::NodeList(vec![node.clone()]));
        let got = query_nodes(&dir.join("fake.sock")).unwrap();
        t.join().unwrap();
        assert_eq!(got, vec![node]);

        let t = {
            std::fs::remove_file(dir.join("fake.sock")).unwrap();
            fake_roamd(&dir, LocalMsg::Ok)
        };
        let e = query_nodes(&dir.join("fake.sock")).unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("unexpected answer"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_daemon_is_an_io_error_naming_the_socket() {
        let e = query_nodes(Path::new("/nonexistent/roam.sock")).unwrap_err();
        assert!(matches!(e, TestbedError::LocalIo { .. }));
        assert!(e.to_string().contains("/nonexistent/roam.sock"), "{e}");
    }
}
