//! `roam-binfmt`: the interpreter `roam binfmt install` registers with
//! binfmt_misc for each foreign architecture the cluster runs, so that
//! executing such a program from any shell on the home node makes this
//! process its proxy, as `roam run` would: the program runs on a node that
//! runs its architecture, and the shell's pipes, job control and `$?` work
//! on the proxy.
//!
//! The kernel calls it (flags `P` and `F`) as
//! `roam-binfmt FILE ARGV0 ARGV1...`: FILE is the program as the caller
//! named it, ARGV0 the caller's argv[0]. The socket is `$ROAM_SOCKET` or
//! roamd's default, as for `roam run`.

use std::ffi::OsString;

use roam_core::proxy::{self, Outcome, RunOptions};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(file), Some(argv0)) = (args.next(), args.next()) else {
        eprintln!(
            "roam-binfmt: the kernel runs this for foreign programs (see `roam binfmt install`); usage: roam-binfmt FILE ARGV0 [ARGS]..."
        );
        proxy::finish(Outcome::Exit(2));
    };
    let argv: Vec<OsString> = std::iter::once(argv0).chain(args).collect();
    proxy::run_proxy(RunOptions {
        socket: roam_core::client::socket_path(),
        argv,
        program: Some(file),
        node: None,
        mode: None,
        reservation: None,
        rank: None,
        stdin_null: false,
        ship: false,
        confine: false,
    })
}
