/* A remote executable in C: serves dmmul, count and fail of a small
 * interface, with the worker side of grpc.h.
 *
 *   cc dmmul_worker.c -I../../include -L<target>/debug -lroam_rpc -o dmmul_worker
 */
#include <stdio.h>
#include <string.h>
#include "grpc.h"

static const char *IDL =
    "Module cdemo;\n"
    "Define dmmul(IN int n, IN double A[n][n], IN double B[n][n], OUT double C[n][n]);\n"
    "Define count(IN int add, OUT long total);\n"
    "Define fail(IN string why);\n";

static int dmmul(void **args, char *error, size_t error_len) {
    (void)error;
    (void)error_len;
    int n = *(int *)args[0];
    const double *a = args[1], *b = args[2];
    double *c = args[3];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
    return 0;
}

static long total;

static int count(void **args, char *error, size_t error_len) {
    (void)error;
    (void)error_len;
    total += *(int *)args[0];
    *(long *)args[1] = total;
    return 0;
}

static int fail(void **args, char *error, size_t error_len) {
    snprintf(error, error_len, "C worker says: %s", (const char *)args[0]);
    return 1;
}

int main(void) {
    roam_rpc_worker_register("dmmul", dmmul);
    roam_rpc_worker_register("count", count);
    roam_rpc_worker_register("fail", fail);
    return roam_rpc_worker_serve(IDL);
}
