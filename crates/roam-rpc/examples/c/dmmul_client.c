/* A GridRPC client in C: matrix products on the cluster's workers, checked
 * against a local product; then the async calls and the wait family.
 *
 *   cc dmmul_client.c -I../../include -L<target>/debug -lroam_rpc -o dmmul_client
 *   ./dmmul_client client.toml NODE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "grpc.h"

#define N 64
#define JOBS 8

static void check(grpc_error_t e, const char *what) {
    if (e != GRPC_NO_ERROR) {
        fprintf(stderr, "%s: %s (%s)\n", what, grpc_error_string(e), roam_rpc_last_error());
        exit(1);
    }
}

static void local_mmul(int n, const double *a, const double *b, double *c) {
    for (int i = 0; i < n * n; i++) c[i] = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++)
            for (int j = 0; j < n; j++) c[i * n + j] += a[i * n + k] * b[k * n + j];
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG NODE\n", argv[0]);
        return 2;
    }
    static double A[N * N], B[N * N], C[N * N], R[N * N], CS[JOBS][N * N];
    for (int i = 0; i < N * N; i++) {
        A[i] = (i % 7) - 3.5;
        B[i] = (i % 11) * 0.25;
    }
    local_mmul(N, A, B, R);
    check(grpc_initialize(argv[1]), "grpc_initialize");

    /* A handle bound to a node: its worker keeps state between calls. */
    grpc_function_handle_t h, counter, where;
    check(grpc_function_handle_init(&h, argv[2], "dmmul"), "handle_init dmmul");
    check(grpc_call(&h, N, A, B, C), "grpc_call dmmul");
    for (int i = 0; i < N * N; i++)
        if (fabs(C[i] - R[i]) > 1e-9) {
            fprintf(stderr, "FAIL: C[%d] = %g, want %g\n", i, C[i], R[i]);
            return 1;
        }
    printf("dmmul %dx%d on %s: PASS\n", N, N, argv[2]);

    check(grpc_function_handle_init(&counter, argv[2], "count"), "handle_init count");
    long total = 0;
    for (int i = 1; i <= 3; i++) check(grpc_call(&counter, i, &total), "grpc_call count");
    printf("count: %ld (%s)\n", total, total == 6 ? "PASS" : "FAIL");
    if (total != 6) return 1;

    char node[64];
    check(grpc_function_handle_init(&where, argv[2], "where"), "handle_init where");
    check(grpc_call(&where, node), "grpc_call where");
    printf("where: %s (%s)\n", node, strcmp(node, argv[2]) == 0 ? "PASS" : "FAIL");
    if (strcmp(node, argv[2]) != 0) return 1;

    /* Default handle: async calls spread over the workers, then waits. */
    grpc_function_handle_t d;
    check(grpc_function_handle_default(&d, "dmmul"), "handle_default");
    grpc_sessionid_t ids[JOBS];
    for (int j = 0; j < JOBS; j++) check(grpc_call_async(&d, &ids[j], N, A, B, CS[j]), "call_async");
    /* A waited session is gone: each id is waited for once. */
    check(grpc_wait_and(ids, JOBS / 2), "grpc_wait_and");
    grpc_sessionid_t first = GRPC_SESSIONID_VOID;
    check(grpc_wait_or(ids + JOBS / 2, JOBS / 2, &first), "grpc_wait_or");
    if (first < ids[JOBS / 2]) return 1;
    check(grpc_wait_any(&first), "grpc_wait_any");
    check(grpc_wait_all(), "grpc_wait_all");
    if (grpc_wait(ids[0]) != GRPC_INVALID_SESSION_ID) return 1;
    for (int j = 0; j < JOBS; j++)
        for (int i = 0; i < N * N; i++)
            if (fabs(CS[j][i] - R[i]) > 1e-9) {
                fprintf(stderr, "FAIL: async job %d C[%d] = %g\n", j, i, CS[j][i]);
                return 1;
            }
    printf("async: %d jobs: PASS\n", JOBS);

    /* A failing call: the error, and the session it came from. */
    grpc_function_handle_t f;
    check(grpc_function_handle_default(&f, "fail"), "handle_default fail");
    grpc_sessionid_t fs;
    check(grpc_call_async(&f, &fs, "no luck"), "call_async fail");
    grpc_error_t e = grpc_wait(fs);
    grpc_sessionid_t failed = -1;
    check(grpc_get_failed_sessionid(&failed), "get_failed_sessionid");
    printf("fail: %s / %s (%s)\n", grpc_error_string(e), roam_rpc_last_error(),
           e == GRPC_SESSION_FAILED && failed == fs && strstr(roam_rpc_last_error(), "no luck")
               ? "PASS" : "FAIL");
    if (e != GRPC_SESSION_FAILED || failed != fs) return 1;
    if (grpc_get_error(fs) != GRPC_SESSION_FAILED) return 1;

    /* Cancel a long call. */
    grpc_function_handle_t nap;
    check(grpc_function_handle_default(&nap, "nap"), "handle_default nap");
    grpc_sessionid_t ns;
    int slept = 0;
    check(grpc_call_async(&nap, &ns, 60000, &slept), "call_async nap");
    if (grpc_probe(ns) != GRPC_NOT_COMPLETED) return 1;
    check(grpc_cancel(ns), "grpc_cancel");
    e = grpc_wait(ns);
    printf("cancel: %s (%s)\n", grpc_error_string(e), e == GRPC_SESSION_FAILED ? "PASS" : "FAIL");
    if (e != GRPC_SESSION_FAILED) return 1;
    /* The handle still works: a new worker. */
    check(grpc_call(&nap, 1, &slept), "grpc_call nap after cancel");
    if (slept != 1) return 1;

    check(grpc_function_handle_destruct(&h), "destruct");
    check(grpc_function_handle_destruct(&counter), "destruct");
    check(grpc_function_handle_destruct(&where), "destruct");
    check(grpc_function_handle_destruct(&d), "destruct");
    check(grpc_function_handle_destruct(&f), "destruct");
    check(grpc_function_handle_destruct(&nap), "destruct");
    check(grpc_finalize(), "grpc_finalize");
    printf("ALL PASS\n");
    return 0;
}
