//! The standard GridRPC C API (GFD-R.52) over [`crate::client`]; the
//! header is `include/grpc.h`, which also defines the two variadic calls
//! on top of [`roam_rpc_call_v`].
//!
//! One client per process, made by `grpc_initialize`. Handles live in a
//! table; the caller's `grpc_function_handle_t` holds the key. OUT and
//! INOUT values are written to the caller's memory when the call
//! completes, before any wait reports it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::client::{Client, Code, Config, Handle, Hook, RpcError};
use crate::data::{self, Data};
use crate::idl::{Mode, Type};

/// The caller's handle structure (see grpc.h).
#[repr(C)]
pub struct GrpcFunctionHandle {
    id: u64,
    reserved: [*mut c_void; 3],
}

/// One variadic argument, as the header's `roam_rpc_collect` reads it.
#[repr(C)]
#[derive(Clone, Copy)]
pub union RpcArg {
    i: i64,
    d: f64,
    p: *mut c_void,
}

const ARG_INT: c_int = 0;
const ARG_LONG: c_int = 1;
const ARG_DOUBLE: c_int = 2;
const ARG_PTR: c_int = 3;

struct CState {
    client: Client,
    handles: HashMap<u64, Arc<Handle>>,
    next: u64,
    /// Codes of sessions already waited for, for grpc_get_error.
    errors: HashMap<i32, Code>,
}

static STATE: Mutex<Option<CState>> = Mutex::new(None);

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

fn state() -> std::sync::MutexGuard<'static, Option<CState>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `e` as this thread's last error and returns its code.
fn fail(e: RpcError) -> c_int {
    let msg = CString::new(e.msg.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = msg);
    e.code as c_int
}

fn code_of(r: Result<(), RpcError>) -> c_int {
    match r {
        Ok(()) => Code::NoError as c_int,
        Err(e) => fail(e),
    }
}

fn with_client<T>(f: impl FnOnce(&mut CState) -> Result<T, RpcError>) -> Result<T, RpcError> {
    let mut st = state();
    let s = st
        .as_mut()
        .ok_or_else(|| RpcError::new(Code::NotInitialized, "grpc_initialize was not called"))?;
    f(s)
}

/// The client, cloned out of the table so that waits do not hold it.
fn client() -> Result<Client, RpcError> {
    with_client(|s| Ok(s.client.clone()))
}

/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn opt_str(s: *const c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, by the caller's contract.
    Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// # Safety
/// `config_file_name` is NULL or a NUL-terminated path. NULL (or "") reads
/// the file named by `ROAM_RPC_CONFIG`.
#[no_mangle]
pub unsafe extern "C" fn grpc_initialize(config_file_name: *const c_char) -> c_int {
    // SAFETY: the caller's contract.
    let name = unsafe { opt_str(config_file_name) }
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("ROAM_RPC_CONFIG").ok());
    let mut st = state();
    if st.is_some() {
        return fail(RpcError::new(
            Code::AlreadyInitialized,
            "grpc_initialize was called twice",
        ));
    }
    let cfg = match name {
        Some(n) => Config::load(Path::new(&n)),
        None => Err(RpcError::new(
            Code::ConfigFileNotFound,
            "no configuration file (give one, or set ROAM_RPC_CONFIG)",
        )),
    };
    let r = cfg.and_then(Client::new).map(|client| {
        *st = Some(CState {
            client,
            handles: HashMap::new(),
            next: 1,
            errors: HashMap::new(),
        });
    });
    code_of(r)
}

#[no_mangle]
pub extern "C" fn grpc_finalize() -> c_int {
    let taken = state().take();
    match taken {
        Some(s) => {
            drop(s.handles);
            s.client.shutdown();
            Code::NoError as c_int
        }
        None => fail(RpcError::new(
            Code::NotInitialized,
            "grpc_initialize was not called",
        )),
    }
}

fn new_handle(
    handle: *mut GrpcFunctionHandle,
    make: impl FnOnce(&Client) -> Result<Handle, RpcError>,
) -> c_int {
    if handle.is_null() {
        return fail(RpcError::new(Code::InvalidFunctionHandle, "NULL handle"));
    }
    let Ok(c) = client() else {
        return fail(RpcError::new(
            Code::NotInitialized,
            "grpc_initialize was not called",
        ));
    };
    // Starting a bound handle's worker takes a while: not under the lock.
    let h = match make(&c) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let r = with_client(|s| {
        let id = s.next;
        s.next += 1;
        s.handles.insert(id, Arc::new(h));
        // SAFETY: checked non-null; the caller owns the structure.
        unsafe {
            (*handle).id = id;
            (*handle).reserved = [std::ptr::null_mut(); 3];
        }
        Ok(())
    });
    code_of(r)
}

/// # Safety
/// `handle` points to a writable `grpc_function_handle_t`; the names are
/// NUL-terminated (`server_name` may be NULL: a default handle).
#[no_mangle]
pub unsafe extern "C" fn grpc_function_handle_init(
    handle: *mut GrpcFunctionHandle,
    server_name: *const c_char,
    func_name: *const c_char,
) -> c_int {
    // SAFETY: the caller's contract.
    let (server, func) = unsafe { (opt_str(server_name), opt_str(func_name)) };
    let Some(func) = func else {
        return fail(RpcError::new(Code::FunctionNotFound, "NULL function name"));
    };
    new_handle(handle, |c| match server.filter(|s| !s.is_empty()) {
        Some(s) => c.handle_on(&s, &func),
        None => c.handle(&func),
    })
}

/// # Safety
/// As [`grpc_function_handle_init`].
#[no_mangle]
pub unsafe extern "C" fn grpc_function_handle_default(
    handle: *mut GrpcFunctionHandle,
    func_name: *const c_char,
) -> c_int {
    // SAFETY: the caller's contract.
    let Some(func) = (unsafe { opt_str(func_name) }) else {
        return fail(RpcError::new(Code::FunctionNotFound, "NULL function name"));
    };
    new_handle(handle, |c| c.handle(&func))
}

/// # Safety
/// `handle` is NULL or points to a handle structure.
#[no_mangle]
pub unsafe extern "C" fn grpc_function_handle_destruct(handle: *mut GrpcFunctionHandle) -> c_int {
    if handle.is_null() {
        return fail(RpcError::new(Code::InvalidFunctionHandle, "NULL handle"));
    }
    // SAFETY: non-null, the caller's structure.
    let id = unsafe { (*handle).id };
    let removed = with_client(|s| {
        s.handles
            .remove(&id)
            .ok_or_else(|| RpcError::new(Code::InvalidFunctionHandle, "unknown handle"))
    });
    match removed {
        // Dropped here, outside the lock: a bound worker gets its goodbye.
        Ok(h) => {
            drop(h);
            // SAFETY: as above.
            unsafe { (*handle).id = 0 };
            Code::NoError as c_int
        }
        Err(e) => fail(e),
    }
}

fn lookup(handle: *const GrpcFunctionHandle) -> Result<(Client, Arc<Handle>), RpcError> {
    if handle.is_null() {
        return Err(RpcError::new(Code::InvalidFunctionHandle, "NULL handle"));
    }
    // SAFETY: non-null; the caller passes its handle structure.
    let id = unsafe { (*handle).id };
    with_client(|s| {
        let h = s.handles.get(&id).cloned().ok_or_else(|| {
            RpcError::new(Code::InvalidFunctionHandle, "unknown or destructed handle")
        })?;
        Ok((s.client.clone(), h))
    })
}

/// How each argument of the handle's function is passed: fills `kinds`
/// (at most `max`) and returns the count, or -1.
///
/// # Safety
/// `kinds` has room for `max` ints.
#[no_mangle]
pub unsafe extern "C" fn roam_rpc_signature(
    handle: *const GrpcFunctionHandle,
    kinds: *mut c_int,
    max: c_int,
) -> c_int {
    let Ok((_, h)) = lookup(handle) else {
        return -1;
    };
    let params = &h.function().params;
    if kinds.is_null() || params.len() > max.max(0) as usize {
        return -1;
    }
    for (i, p) in params.iter().enumerate() {
        let k = if p.is_array() || p.mode != Mode::In || p.ty == Type::Str {
            ARG_PTR
        } else {
            match p.ty {
                Type::Long => ARG_LONG,
                Type::Float | Type::Double => ARG_DOUBLE,
                _ => ARG_INT,
            }
        };
        // SAFETY: i < params.len() <= max, the caller's array size.
        unsafe { *kinds.add(i) = k };
    }
    params.len() as c_int
}

/// A pointer that a hook may carry to another thread: the caller
/// promises (GridRPC's contract) to keep OUT memory alive and untouched
/// until the call is waited for.
#[derive(Clone, Copy)]
struct OutPtr(*mut u8);
// SAFETY: see above; the memory is the caller's, used once by the hook.
unsafe impl Send for OutPtr {}

/// Reads `n` elements of `ty` at `p`.
///
/// # Safety
/// `p` points to `n` readable elements of `ty`.
unsafe fn read_elems(ty: Type, p: *const u8, n: usize) -> Data {
    macro_rules! rd {
        ($t:ty, $v:ident) => {
            // SAFETY: the caller's contract.
            Data::$v(unsafe { std::slice::from_raw_parts(p.cast::<$t>(), n) }.to_vec())
        };
    }
    match ty {
        Type::Char => rd!(u8, Char),
        Type::Short => rd!(i16, Short),
        Type::Int => rd!(i32, Int),
        Type::Long => rd!(i64, Long),
        Type::Float => rd!(f32, Float),
        Type::Double => rd!(f64, Double),
        // SAFETY: a NUL-terminated string, by the caller's contract.
        Type::Str => Data::Str(unsafe { CStr::from_ptr(p.cast()) }.to_bytes().to_vec()),
    }
}

/// Starts (with `session_id`) or makes (NULL) a call with the arguments
/// `grpc_call` collected.
///
/// # Safety
/// `args` holds one entry per parameter, of the kinds
/// [`roam_rpc_signature`] gave; pointers point to memory of the sizes the
/// interface gives, alive until the call is waited for.
#[no_mangle]
pub unsafe extern "C" fn roam_rpc_call_v(
    handle: *mut GrpcFunctionHandle,
    args: *const RpcArg,
    session_id: *mut c_int,
) -> c_int {
    let (client, h) = match lookup(handle) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let f = h.function();
    let n = f.params.len();
    if n > 0 && args.is_null() {
        return fail(RpcError::new(Code::OtherErrorCode, "NULL arguments"));
    }
    let raw: &[RpcArg] = if n == 0 {
        &[]
    } else {
        // SAFETY: n entries, by the caller's contract.
        unsafe { std::slice::from_raw_parts(args, n) }
    };
    // Scalars first: the arrays' sizes depend on them.
    let mut values: Vec<Data> = Vec::with_capacity(n);
    for (p, a) in f.params.iter().zip(raw) {
        let by_value = !p.is_array() && p.mode == Mode::In && p.ty != Type::Str;
        // SAFETY: the union holds what the signature said for this entry.
        let v = unsafe {
            if by_value {
                match p.ty {
                    Type::Char => Data::Char(vec![a.i as u8]),
                    Type::Short => Data::Short(vec![a.i as i16]),
                    Type::Int => Data::Int(vec![a.i as i32]),
                    Type::Long => Data::Long(vec![a.i]),
                    Type::Float => Data::Float(vec![a.d as f32]),
                    _ => Data::Double(vec![a.d]),
                }
            } else if a.p.is_null() {
                return fail(RpcError::new(
                    Code::OtherErrorCode,
                    format!("{}: argument {} is NULL", f.name, p.name),
                ));
            } else if p.ty == Type::Str || (!p.is_array() && p.mode == Mode::InOut) {
                read_elems(p.ty, a.p.cast(), 1)
            } else {
                Data::zeros(p.ty, 0)
            }
        };
        values.push(v);
    }
    let counts = match data::counts(f, &values) {
        Ok(c) => c,
        Err(e) => return fail(RpcError::new(Code::OtherErrorCode, e.to_string())),
    };
    let mut outs: Vec<(OutPtr, usize)> = Vec::new();
    for (i, (p, a)) in f.params.iter().zip(raw).enumerate() {
        if p.is_array() && p.mode.sent() {
            // SAFETY: an array of counts[i] elements, by the contract.
            values[i] = unsafe { read_elems(p.ty, a.p.cast(), counts[i]) };
        }
        if p.mode.returned() {
            // SAFETY: a pointer argument (OUT/INOUT are never by value).
            outs.push((OutPtr(unsafe { a.p }.cast()), counts[i] * p.ty.size()));
        }
    }
    let hook: Hook = Box::new(move |vals: &mut Vec<Data>| {
        for ((ptr, bytes), v) in outs.iter().zip(vals.iter_mut()) {
            let len = (v.len() * v.ty().size()).min(*bytes);
            // SAFETY: the caller's OUT memory holds `bytes` bytes and is
            // kept for us until the wait (GridRPC's contract).
            unsafe { std::ptr::copy_nonoverlapping(v.as_mut_ptr(), ptr.0, len) };
        }
    });
    let id = match client.call_async(&h, values, Some(hook)) {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    if session_id.is_null() {
        return wait_one(&client, id);
    }
    // SAFETY: non-null, the caller's int.
    unsafe { *session_id = id };
    Code::NoError as c_int
}

fn record(id: i32, r: &Result<Vec<Data>, RpcError>) {
    let code = match r {
        Ok(_) => Code::NoError,
        Err(e) => e.code,
    };
    if let Some(s) = state().as_mut() {
        s.errors.insert(id, code);
    }
}

fn wait_one(client: &Client, id: i32) -> c_int {
    let r = client.wait(id);
    record(id, &r);
    code_of(r.map(|_| ()))
}

#[no_mangle]
pub extern "C" fn grpc_wait(session_id: c_int) -> c_int {
    match client() {
        Ok(c) => wait_one(&c, session_id),
        Err(e) => fail(e),
    }
}

/// # Safety
/// `ids` holds `length` session ids.
#[no_mangle]
pub unsafe extern "C" fn grpc_wait_and(ids: *const c_int, length: usize) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if ids.is_null() && length > 0 {
        return fail(RpcError::new(Code::InvalidSessionId, "NULL id array"));
    }
    let ids = if length == 0 {
        &[][..]
    } else {
        // SAFETY: `length` ids, by the caller's contract.
        unsafe { std::slice::from_raw_parts(ids, length) }
    };
    let mut first_err = Code::NoError as c_int;
    for &id in ids {
        let r = wait_one(&c, id);
        if r != 0 && first_err == 0 {
            first_err = r;
        }
    }
    first_err
}

/// # Safety
/// `ids` holds `length` session ids; `id` is writable.
#[no_mangle]
pub unsafe extern "C" fn grpc_wait_or(ids: *const c_int, length: usize, id: *mut c_int) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // SAFETY: the caller's contract.
    let list = match unsafe { id_list(ids, length) } {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    match c.wait_or(list) {
        Ok((done, r)) => {
            if !id.is_null() {
                // SAFETY: the caller's int.
                unsafe { *id = done };
            }
            record(done, &r);
            code_of(r.map(|_| ()))
        }
        Err(e) => fail(e),
    }
}

/// The caller's array of session ids, which must not be empty.
///
/// # Safety
/// `ids` is NULL or holds `length` ids that outlive the returned slice.
unsafe fn id_list<'a>(ids: *const c_int, length: usize) -> Result<&'a [c_int], RpcError> {
    if ids.is_null() || length == 0 {
        return Err(RpcError::new(Code::InvalidSessionId, "no session ids"));
    }
    // SAFETY: non-null, `length` ids, by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ids, length) })
}

#[no_mangle]
pub extern "C" fn grpc_wait_all() -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut first_err = Code::NoError as c_int;
    for id in c.sessions() {
        let r = wait_one(&c, id);
        if r != 0 && first_err == 0 {
            first_err = r;
        }
    }
    first_err
}

/// # Safety
/// `id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn grpc_wait_any(id: *mut c_int) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.wait_any() {
        Ok(Some((done, r))) => {
            if !id.is_null() {
                // SAFETY: the caller's int.
                unsafe { *id = done };
            }
            record(done, &r);
            code_of(r.map(|_| ()))
        }
        Ok(None) => fail(RpcError::new(Code::NoneCompleted, "no call in progress")),
        Err(e) => fail(e),
    }
}

#[no_mangle]
pub extern "C" fn grpc_probe(session_id: c_int) -> c_int {
    match client().and_then(|c| c.probe(session_id)) {
        Ok(true) => Code::NoError as c_int,
        Ok(false) => Code::NotCompleted as c_int,
        Err(e) => fail(e),
    }
}

/// # Safety
/// `ids` holds `length` session ids; `id` is writable.
#[no_mangle]
pub unsafe extern "C" fn grpc_probe_or(ids: *const c_int, length: usize, id: *mut c_int) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // SAFETY: the caller's contract.
    let list = match unsafe { id_list(ids, length) } {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    for &s in list {
        match c.probe(s) {
            Ok(true) => {
                if !id.is_null() {
                    // SAFETY: the caller's int.
                    unsafe { *id = s };
                }
                return Code::NoError as c_int;
            }
            Ok(false) => {}
            Err(e) => return fail(e),
        }
    }
    Code::NoneCompleted as c_int
}

#[no_mangle]
pub extern "C" fn grpc_cancel(session_id: c_int) -> c_int {
    code_of(client().and_then(|c| c.cancel(session_id)))
}

#[no_mangle]
pub extern "C" fn grpc_cancel_all() -> c_int {
    code_of(client().and_then(|c| {
        for id in c.sessions() {
            c.cancel(id)?;
        }
        Ok(())
    }))
}

/// The error of a session: GRPC_NOT_COMPLETED while it runs, its outcome
/// once waited for.
#[no_mangle]
pub extern "C" fn grpc_get_error(session_id: c_int) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return e.code as c_int,
    };
    if let Ok(done) = c.probe(session_id) {
        return if done {
            Code::NoError
        } else {
            Code::NotCompleted
        } as c_int;
    }
    state()
        .as_ref()
        .and_then(|s| s.errors.get(&session_id).copied())
        .unwrap_or(Code::InvalidSessionId) as c_int
}

/// # Safety
/// `id` is writable.
#[no_mangle]
pub unsafe extern "C" fn grpc_get_failed_sessionid(id: *mut c_int) -> c_int {
    let c = match client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if id.is_null() {
        return fail(RpcError::new(Code::OtherErrorCode, "NULL id"));
    }
    // SAFETY: non-null, the caller's int.
    unsafe { *id = c.failed_session().unwrap_or(-1) };
    Code::NoError as c_int
}

#[no_mangle]
pub extern "C" fn grpc_error_string(error_code: c_int) -> *const c_char {
    const STRINGS: [&CStr; 17] = [
        c"no error",
        c"GridRPC is not initialized",
        c"configuration file not found",
        c"error in the configuration file",
        c"server not found",
        c"function not found",
        c"invalid function handle",
        c"invalid session id",
        c"RPC refused by the server",
        c"communication with the server failed",
        c"the call failed",
        c"the call has not completed",
        c"no call has completed",
        c"other error",
        c"unknown error code",
        c"GridRPC is already initialized",
        c"unknown error code",
    ];
    usize::try_from(error_code)
        .ok()
        .and_then(|i| STRINGS.get(i))
        .unwrap_or(&c"unknown error code")
        .as_ptr()
}

/// This thread's last error message.
#[no_mangle]
pub extern "C" fn roam_rpc_last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_strings_match_the_codes() {
        for code in [Code::NoError, Code::SessionFailed, Code::AlreadyInitialized] {
            // SAFETY: grpc_error_string returns static NUL-terminated text.
            let s = unsafe { CStr::from_ptr(grpc_error_string(code as c_int)) };
            assert_eq!(s.to_str().unwrap(), code.describe());
        }
        // SAFETY: as above.
        let s = unsafe { CStr::from_ptr(grpc_error_string(99)) };
        assert_eq!(s.to_str().unwrap(), "unknown error code");
    }

    #[test]
    fn calls_before_initialize_say_so() {
        assert_eq!(grpc_wait(1), Code::NotInitialized as c_int);
        assert_eq!(grpc_finalize(), Code::NotInitialized as c_int);
        // SAFETY: NULL is allowed.
        let r = unsafe { grpc_initialize(c"/nonexistent/roam-rpc.toml".as_ptr()) };
        assert_eq!(r, Code::ConfigFileNotFound as c_int);
    }
}
