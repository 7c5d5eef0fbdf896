/*
 * grpc.h: the OGF GridRPC API (GFD-R.52) of roam-rpc.
 *
 * Link with -lroam_rpc. Remote executables and their interfaces are named
 * in the configuration file given to grpc_initialize (see
 * docs/design/rpc.md). Scalar IN arguments are passed by value; OUT and
 * INOUT scalars, arrays and strings by pointer, in the interface's order.
 */
#ifndef ROAM_GRPC_H
#define ROAM_GRPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int grpc_error_t;
typedef int grpc_sessionid_t;

/* Allocated by the caller; filled in by grpc_function_handle_init. */
typedef struct {
    uint64_t id;
    void *reserved[3];
} grpc_function_handle_t;

#define GRPC_SESSIONID_VOID (-1)

#define GRPC_NO_ERROR 0
#define GRPC_NOT_INITIALIZED 1
#define GRPC_CONFIGFILE_NOT_FOUND 2
#define GRPC_CONFIGFILE_ERROR 3
#define GRPC_SERVER_NOT_FOUND 4
#define GRPC_FUNCTION_NOT_FOUND 5
#define GRPC_INVALID_FUNCTION_HANDLE 6
#define GRPC_INVALID_SESSION_ID 7
#define GRPC_RPC_REFUSED 8
#define GRPC_COMMUNICATION_FAILED 9
#define GRPC_SESSION_FAILED 10
#define GRPC_NOT_COMPLETED 11
#define GRPC_NONE_COMPLETED 12
#define GRPC_OTHER_ERROR_CODE 13
#define GRPC_UNKNOWN_ERROR_CODE 14
#define GRPC_ALREADY_INITIALIZED 15
#define GRPC_LAST_ERROR_CODE 16

grpc_error_t grpc_initialize(const char *config_file_name);
grpc_error_t grpc_finalize(void);

grpc_error_t grpc_function_handle_init(grpc_function_handle_t *handle,
                                       const char *server_name,
                                       const char *func_name);
grpc_error_t grpc_function_handle_default(grpc_function_handle_t *handle,
                                          const char *func_name);
grpc_error_t grpc_function_handle_destruct(grpc_function_handle_t *handle);

/* grpc_call and grpc_call_async are defined at the end of this header. */

grpc_error_t grpc_probe(grpc_sessionid_t session_id);
grpc_error_t grpc_probe_or(grpc_sessionid_t *ids, size_t length,
                           grpc_sessionid_t *id);
grpc_error_t grpc_cancel(grpc_sessionid_t session_id);
grpc_error_t grpc_cancel_all(void);

grpc_error_t grpc_wait(grpc_sessionid_t session_id);
grpc_error_t grpc_wait_and(grpc_sessionid_t *ids, size_t length);
grpc_error_t grpc_wait_or(grpc_sessionid_t *ids, size_t length,
                          grpc_sessionid_t *id);
grpc_error_t grpc_wait_all(void);
grpc_error_t grpc_wait_any(grpc_sessionid_t *id);

grpc_error_t grpc_get_error(grpc_sessionid_t session_id);
grpc_error_t grpc_get_failed_sessionid(grpc_sessionid_t *id);
const char *grpc_error_string(grpc_error_t error_code);

/* roam-rpc: the message of the last error of this thread ("" if none). */
const char *roam_rpc_last_error(void);

/*
 * The worker side: a remote executable written in C. A function gets one
 * pointer per parameter, in the interface's order: to the scalar or the
 * array (IN ones to read; OUT and INOUT ones to write, already sized) or,
 * for a string, to its NUL-terminated text. It returns 0, or non-zero
 * with a message in error (error_len bytes at most), which the caller
 * gets.
 */
typedef int (*roam_rpc_function)(void **args, char *error, size_t error_len);
int roam_rpc_worker_register(const char *name, roam_rpc_function f);
/* Serves the client that started this program until it hangs up: 0, or 1
 * with the reason on stderr. */
int roam_rpc_worker_serve(const char *idl);

/* Internal: used by grpc_call and grpc_call_async. */
union roam_rpc_arg {
    long long i;
    double d;
    void *p;
};
#define ROAM_RPC_ARG_INT 0    /* char, short, int: promoted to int */
#define ROAM_RPC_ARG_LONG 1   /* long */
#define ROAM_RPC_ARG_DOUBLE 2 /* float, double: promoted to double */
#define ROAM_RPC_ARG_PTR 3    /* arrays, strings, OUT and INOUT scalars */
int roam_rpc_signature(const grpc_function_handle_t *handle, int *kinds, int max);
grpc_error_t roam_rpc_call_v(grpc_function_handle_t *handle,
                             const union roam_rpc_arg *args,
                             grpc_sessionid_t *session_id);

/*
 * The variadic calls. They are defined here, in each program that includes
 * this header, because the library is written in Rust, which cannot define
 * variadic functions: they read their arguments as the handle's interface
 * says and pass them on to roam_rpc_call_v.
 */
#include <stdarg.h>
#define ROAM_RPC_MAX_ARGS 256

static grpc_error_t roam_rpc_collect(grpc_function_handle_t *handle, va_list ap,
                                     grpc_sessionid_t *session_id) {
    int kinds[ROAM_RPC_MAX_ARGS];
    union roam_rpc_arg args[ROAM_RPC_MAX_ARGS];
    int n = roam_rpc_signature(handle, kinds, ROAM_RPC_MAX_ARGS);
    if (n < 0)
        return GRPC_INVALID_FUNCTION_HANDLE;
    for (int i = 0; i < n; i++) {
        switch (kinds[i]) {
        case ROAM_RPC_ARG_INT:
            args[i].i = va_arg(ap, int);
            break;
        case ROAM_RPC_ARG_LONG:
            args[i].i = va_arg(ap, long);
            break;
        case ROAM_RPC_ARG_DOUBLE:
            args[i].d = va_arg(ap, double);
            break;
        default:
            args[i].p = va_arg(ap, void *);
            break;
        }
    }
    return roam_rpc_call_v(handle, args, session_id);
}

__attribute__((unused)) static grpc_error_t
grpc_call(grpc_function_handle_t *handle, ...) {
    va_list ap;
    va_start(ap, handle);
    grpc_error_t e = roam_rpc_collect(handle, ap, (grpc_sessionid_t *)0);
    va_end(ap);
    return e;
}

__attribute__((unused)) static grpc_error_t
grpc_call_async(grpc_function_handle_t *handle, grpc_sessionid_t *session_id, ...) {
    va_list ap;
    va_start(ap, session_id);
    grpc_error_t e = roam_rpc_collect(handle, ap, session_id);
    va_end(ap);
    return e;
}

#ifdef __cplusplus
}
#endif
#endif
