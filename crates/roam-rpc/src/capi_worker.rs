//! The worker side of the C API (`include/grpc.h`): a remote executable
//! written in C registers its functions and serves its client.
//!
//! ```c
//! static int add(void **args, char *error, size_t error_len) {
//!     *(int *)args[2] = *(int *)args[0] + *(int *)args[1];
//!     return 0;
//! }
//! int main(void) {
//!     roam_rpc_worker_register("add", add);
//!     return roam_rpc_worker_serve("Define add(IN int a, IN int b, OUT int c)");
//! }
//! ```
//!
//! A function gets one pointer per parameter, in the interface's order:
//! to the scalar or the array (IN ones to read, OUT and INOUT ones to
//! write, already sized) or, for a string, to its NUL-terminated text.
//! It returns 0, or non-zero with a message written into `error`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

use crate::data::Data;
use crate::worker::{Args, Worker};

/// A C worker function.
pub type CFunction = unsafe extern "C" fn(*mut *mut c_void, *mut c_char, usize) -> c_int;

static FUNCTIONS: Mutex<Vec<(String, CFunction)>> = Mutex::new(Vec::new());

/// Registers `f` as the function `name` of the interface given to
/// [`roam_rpc_worker_serve`]. Returns 0, or -1 for a NULL argument.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `f` follows the contract above.
#[no_mangle]
pub unsafe extern "C" fn roam_rpc_worker_register(
    name: *const c_char,
    f: Option<CFunction>,
) -> c_int {
    let Some(f) = f else { return -1 };
    if name.is_null() {
        return -1;
    }
    // SAFETY: non-null and NUL-terminated, by the contract.
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    let mut fs = FUNCTIONS.lock().unwrap_or_else(|p| p.into_inner());
    fs.retain(|(n, _)| *n != name);
    fs.push((name, f));
    0
}

/// Calls `f` with pointers to `args`' values.
fn call_c(f: CFunction, args: &mut Args) -> Result<(), String> {
    // Strings get a NUL-terminated copy, alive for the call.
    let strings: Vec<Option<CString>> = args
        .values
        .iter()
        .map(|d| match d {
            Data::Str(s) => Some(CString::new(s.clone()).unwrap_or_default()),
            _ => None,
        })
        .collect();
    let mut ptrs: Vec<*mut c_void> = args
        .values
        .iter_mut()
        .zip(&strings)
        .map(|(d, s)| match s {
            Some(s) => s.as_ptr().cast_mut().cast(),
            None => d.as_mut_ptr().cast(),
        })
        .collect();
    let mut error = vec![0u8; 1024];
    // SAFETY: one valid pointer per parameter, to memory of the sizes the
    // interface gives (arrays were sized by the decoder), and an error
    // buffer of the length given; `f` is the registrant's function.
    let r = unsafe { f(ptrs.as_mut_ptr(), error.as_mut_ptr().cast(), error.len()) };
    if r == 0 {
        return Ok(());
    }
    let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
    let msg = String::from_utf8_lossy(&error[..end]).into_owned();
    Err(if msg.is_empty() {
        format!("{} returned {r}", args.func.name)
    } else {
        msg
    })
}

/// Serves the client named in the environment with the registered
/// functions of `idl` (an interface text) until it hangs up: 0 then, 1
/// (with the reason on stderr) on an error.
///
/// # Safety
/// `idl` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn roam_rpc_worker_serve(idl: *const c_char) -> c_int {
    if idl.is_null() {
        eprintln!("roam_rpc_worker_serve: NULL interface");
        return 1;
    }
    // SAFETY: non-null and NUL-terminated, by the contract.
    let idl = unsafe { CStr::from_ptr(idl) }
        .to_string_lossy()
        .into_owned();
    let run = || -> Result<(), crate::worker::WorkerError> {
        let mut w = Worker::new(&idl)?;
        let fs = FUNCTIONS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, f) in fs {
            w.register(&name, move |a: &mut Args| call_c(f, a))?;
        }
        w.serve_env()
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("roam-rpc worker: {e}");
            1
        }
    }
}
