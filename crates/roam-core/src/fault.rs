//! Fault injection, for the tests of the migration protocol: a node
//! daemon started with `ROAM_FAULT=ACTION:KIND[#N]` in its environment
//! fails, at the Nth (default first) message of kind KIND it is about to
//! send to the home (or to a peer, for `Image` and `ImageAck`), instead of
//! sending it:
//!
//! - `cut`: it drops its link to the home, as a cut network would, and
//!   joins again (after its usual back-off);
//! - `die`: it is killed (SIGKILL), as a crashed daemon would be.
//!
//! KIND is a `LinkMsg` variant's name: `Captured`, `PreCopy`, `Image`,
//! `ImageEnd`, `ImageAck`, `Spawned`... A daemon without the variable
//! checks nothing. See docs/design/faults.md.
//!
//! The home daemon takes `die` only, at the messages of a migration it
//! sends (`MigrateOut`, `Restore`, `MigrateEnd`, `PathUp`): see
//! [`init_home`] and [`home_before`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use roam_proto::link::LinkMsg;

/// The environment variable.
pub const ENV: &str = "ROAM_FAULT";

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cut,
    Die,
}

/// One fault to inject.
#[derive(Debug)]
pub struct Fault {
    action: Action,
    kind: String,
    nth: u32,
    seen: AtomicU32,
}

/// Why a `ROAM_FAULT` value is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad {ENV} '{0}': expected cut:KIND[#N] or die:KIND[#N]")]
pub struct BadFault(String);

impl Fault {
    /// The fault `ROAM_FAULT` asks for, if any.
    pub fn from_env() -> Result<Option<Fault>, BadFault> {
        match std::env::var(ENV) {
            Ok(v) if !v.is_empty() => Fault::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(s: &str) -> Result<Fault, BadFault> {
        let bad = || BadFault(s.to_owned());
        let (action, rest) = s.split_once(':').ok_or_else(bad)?;
        let action = match action {
            "cut" => Action::Cut,
            "die" => Action::Die,
            _ => return Err(bad()),
        };
        let (kind, nth) = match rest.split_once('#') {
            Some((k, n)) => (k, n.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(bad)?),
            None => (rest, 1),
        };
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(bad());
        }
        Ok(Fault {
            action,
            kind: kind.to_owned(),
            nth,
            seen: AtomicU32::new(0),
        })
    }

    /// Called before a message of `kind` goes out: the action, when this
    /// one is the fault's (once).
    pub fn before(&self, kind: &str) -> Option<Action> {
        if kind != self.kind {
            return None;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        (n == self.nth).then_some(self.action)
    }
}

/// The home daemon's fault, read once at its start.
static HOME: OnceLock<Option<Fault>> = OnceLock::new();

/// Reads the home daemon's `ROAM_FAULT` (which must be `die:...`).
pub fn init_home() -> Result<(), BadFault> {
    let f = Fault::from_env()?;
    if let Some(f) = &f {
        if f.action != Action::Die {
            return Err(BadFault(format!("{}: the home takes die only", f.kind)));
        }
    }
    let _ = HOME.set(f);
    Ok(())
}

/// Called by the home before it sends a message of kind `kind`: kills
/// the home daemon (SIGKILL) when that message is its fault's.
pub fn home_before(kind: &str) {
    if let Some(Some(f)) = HOME.get() {
        if f.before(kind).is_some() {
            tracing::warn!("injected fault: the home dies before {kind}");
            let _ = roam_sys::signal::kill(std::process::id() as i32, libc::SIGKILL);
            // SIGKILL is not caught: nothing runs after it.
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

/// The variant name of `msg`: the start of its `Debug` text, which is
/// cut off there (a message may carry megabytes).
pub fn kind_of(msg: &LinkMsg) -> String {
    struct Name(String);
    impl std::fmt::Write for Name {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if !c.is_ascii_alphanumeric() {
                    return Err(std::fmt::Error);
                }
                self.0.push(c);
            }
            Ok(())
        }
    }
    let mut name = Name(String::new());
    let _ = std::fmt::Write::write_fmt(&mut name, format_args!("{msg:?}"));
    name.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_fire_once_at_their_message() {
        let f = Fault::parse("cut:Image#3").unwrap();
        assert_eq!(f.before("ImageAck"), None);
        assert_eq!(f.before("Image"), None);
        assert_eq!(f.before("Image"), None);
        assert_eq!(f.before("Image"), Some(Action::Cut));
        assert_eq!(f.before("Image"), None);
        let f = Fault::parse("die:Spawned").unwrap();
        assert_eq!(f.before("Spawned"), Some(Action::Die));
        for bad in [
            "",
            "cut",
            "boom:Image",
            "cut:",
            "cut:Image#0",
            "cut:Im age",
            "cut:X#y",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_messages_kind_is_its_variant() {
        assert_eq!(kind_of(&LinkMsg::Ping { seq: 1 }), "Ping");
        assert_eq!(
            kind_of(&LinkMsg::ImageAck { req: 1, offset: 2 }),
            "ImageAck"
        );
    }
}
