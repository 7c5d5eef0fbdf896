//! The children being measured, tracked so that none outlives the bench or
//! hangs it: each has a deadline, past which a watchdog kills it; on a
//! termination signal all are killed. Killing is by pid, and only while
//! the child is unreaped, so never a recycled pid.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

struct Tracked {
    pid: u32,
    deadline: Instant,
    /// Killed by the watchdog.
    overdue: bool,
}

/// Children spawned and not yet reaped.
static LIVE: Mutex<Vec<Tracked>> = Mutex::new(Vec::new());
/// Set by [`stop`]: no more children.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Spawns `cmd`, to be killed if it runs longer than `limit`; tracked
/// until [`wait`].
pub fn spawn(cmd: &mut Command, limit: Duration) -> io::Result<Child> {
    let mut live = LIVE.lock().unwrap();
    if stopping() {
        return Err(io::Error::other("interrupted"));
    }
    let child = cmd.spawn()?;
    live.push(Tracked {
        pid: child.id(),
        deadline: Instant::now() + limit,
        overdue: false,
    });
    Ok(child)
}

/// Waits for `child` to end, stops tracking it and reaps it. The flag says
/// whether the watchdog killed it.
pub fn wait(child: &mut Child) -> io::Result<(ExitStatus, bool)> {
    let pid = Pid::from_raw(child.id() as i32);
    // Wait without reaping: until it is untracked, its pid stays ours.
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => break,
        }
    }
    let overdue = {
        let mut live = LIVE.lock().unwrap();
        let i = live.iter().position(|t| t.pid == child.id());
        i.is_some_and(|i| live.swap_remove(i).overdue)
    };
    Ok((child.wait()?, overdue))
}

/// Spawns no more children and kills (SIGKILL) every tracked one.
pub fn stop() {
    STOPPING.store(true, Ordering::Relaxed);
    for t in LIVE.lock().unwrap().iter() {
        let _ = kill(Pid::from_raw(t.pid as i32), Signal::SIGKILL);
    }
}

/// Whether [`stop`] was called.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// Kills, from a thread of its own, every tracked child past its deadline.
pub fn watchdog() -> io::Result<()> {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(|| loop {
            sleep(Duration::from_millis(500));
            let now = Instant::now();
            for t in LIVE.lock().unwrap().iter_mut() {
                if now > t.deadline && !t.overdue {
                    t.overdue = true;
                    let _ = kill(Pid::from_raw(t.pid as i32), Signal::SIGKILL);
                }
            }
        })?;
    Ok(())
}
