/*
 * regs.c - checkpoint/restore test: register state live across a blocking
 * read(2).
 *
 * Protocol (as every program in this directory): set up state, print
 * "READY\n", block in read(0), then print "PASS\n" (exit 0) or
 * "FAIL: <what differs>\n" (exit 1).  Works without a checkpoint too:
 * `echo go | ./regs`.
 *
 * State: known patterns in rbx, r8-r10, r12-r15 and xmm0-xmm15 (ymm0-ymm15
 * in full when the CPU and OS support AVX), a long double pushed on the x87
 * register stack, all loaded by inline asm which then issues the read
 * syscall itself (rax = 0), so they are live in registers across the
 * checkpoint; also rdi/rsi/rdx (the syscall arguments, which the kernel
 * preserves) and rsp.  Outside the asm: the rounding mode is upward
 * (both MXCSR and the x87 control word, as fesetround(FE_UPWARD) would set
 * them; done by hand because fesetround is in libm and these programs link
 * libc only), checked via the control registers and via divisions whose
 * result depends on it; and a _Thread_local variable (the fs base).
 *
 * Usage: regs [sse]   - "sse" forces the SSE-only variant even with AVX.
 * x86-64 only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "regs.c is x86-64 only"
#endif

static char failbuf[4096];
static size_t faillen;

static void put(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(3);
        }
        s += w;
        n -= (size_t)w;
    }
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    if (faillen + 2 >= sizeof failbuf)
        return;
    if (faillen > 0) {
        failbuf[faillen++] = ';';
        failbuf[faillen++] = ' ';
    }
    va_start(ap, fmt);
    int n = vsnprintf(failbuf + faillen, sizeof failbuf - faillen, fmt, ap);
    va_end(ap);
    if (n > 0)
        faillen += (size_t)n;
    if (faillen >= sizeof failbuf)
        faillen = sizeof failbuf - 1;
}

static int finish(void)
{
    if (faillen == 0) {
        put("PASS\n");
        return 0;
    }
    put("FAIL: ");
    put(failbuf);
    put("\n");
    return 1;
}

/* Referenced by name from the asm below (rip-relative), hence global. */
#define NGP 8 /* rbx r8 r9 r10 r12 r13 r14 r15 */
__attribute__((used)) uint64_t gp_pat[NGP];
__attribute__((used)) uint64_t gp_out[NGP];
__attribute__((used, aligned(32))) unsigned char vec_pat[16][32];
__attribute__((used, aligned(32))) unsigned char vec_out[16][32];
__attribute__((used, aligned(16))) long double x87_in;
__attribute__((used, aligned(16))) long double x87_out;
__attribute__((used)) char iobuf[64];
__attribute__((used)) int64_t sys_ret;
__attribute__((used)) uint64_t arg_out[3]; /* rdi rsi rdx after syscall */
__attribute__((used)) uint64_t sp_before, sp_after;

static const char *const GP_NAMES[NGP] = {"rbx", "r8",  "r9",  "r10",
                                          "r12", "r13", "r14", "r15"};

#define LOAD_GP                                                               \
    "mov gp_pat+0(%%rip), %%rbx\n\t"                                          \
    "mov gp_pat+8(%%rip), %%r8\n\t"                                           \
    "mov gp_pat+16(%%rip), %%r9\n\t"                                          \
    "mov gp_pat+24(%%rip), %%r10\n\t"                                         \
    "mov gp_pat+32(%%rip), %%r12\n\t"                                         \
    "mov gp_pat+40(%%rip), %%r13\n\t"                                         \
    "mov gp_pat+48(%%rip), %%r14\n\t"                                         \
    "mov gp_pat+56(%%rip), %%r15\n\t"

#define STORE_GP                                                              \
    "mov %%rbx, gp_out+0(%%rip)\n\t"                                          \
    "mov %%r8, gp_out+8(%%rip)\n\t"                                           \
    "mov %%r9, gp_out+16(%%rip)\n\t"                                          \
    "mov %%r10, gp_out+24(%%rip)\n\t"                                         \
    "mov %%r12, gp_out+32(%%rip)\n\t"                                         \
    "mov %%r13, gp_out+40(%%rip)\n\t"                                         \
    "mov %%r14, gp_out+48(%%rip)\n\t"                                         \
    "mov %%r15, gp_out+56(%%rip)\n\t"

/* The read syscall itself: fd 0, iobuf, 64 bytes. */
#define DO_READ                                                               \
    "fldt x87_in(%%rip)\n\t"                                                  \
    "mov %%rsp, sp_before(%%rip)\n\t"                                         \
    "xor %%eax, %%eax\n\t"                                                    \
    "xor %%edi, %%edi\n\t"                                                    \
    "lea iobuf(%%rip), %%rsi\n\t"                                             \
    "mov $64, %%edx\n\t"                                                      \
    "syscall\n\t"                                                             \
    "mov %%rax, sys_ret(%%rip)\n\t"                                           \
    "mov %%rsp, sp_after(%%rip)\n\t"                                          \
    "mov %%rdi, arg_out+0(%%rip)\n\t"                                         \
    "mov %%rsi, arg_out+8(%%rip)\n\t"                                         \
    "mov %%rdx, arg_out+16(%%rip)\n\t"                                        \
    "fstpt x87_out(%%rip)\n\t"

#define CLOBBERS                                                              \
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11",       \
        "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",   \
        "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",    \
        "xmm13", "xmm14", "xmm15", "memory", "cc"

#define LX(n) "movdqu vec_pat+" #n "*32(%%rip), %%xmm" #n "\n\t"
#define SX(n) "movdqu %%xmm" #n ", vec_out+" #n "*32(%%rip)\n\t"
#define LY(n) "vmovdqu vec_pat+" #n "*32(%%rip), %%ymm" #n "\n\t"
#define SY(n) "vmovdqu %%ymm" #n ", vec_out+" #n "*32(%%rip)\n\t"
#define ALL16(M)                                                              \
    M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12)       \
        M(13) M(14) M(15)

__attribute__((noinline)) static void read_sse(void)
{
    __asm__ __volatile__(LOAD_GP ALL16(LX) DO_READ STORE_GP ALL16(SX)
                         :
                         :
                         : CLOBBERS);
}

/* The AVX instructions are only in the asm text (the assembler takes them
 * whatever the compiler's target), so no target attribute is needed; this
 * is only called when __builtin_cpu_supports("avx") says the CPU and OS
 * support it.  vzeroupper at the end, as the compiler does not know the
 * upper halves are dirty. */
__attribute__((noinline)) static void read_avx(void)
{
    __asm__ __volatile__(LOAD_GP ALL16(LY) DO_READ STORE_GP ALL16(SY)
                         "vzeroupper\n\t"
                         :
                         :
                         : CLOBBERS);
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static unsigned get_mxcsr(void)
{
    unsigned v;
    __asm__ __volatile__("stmxcsr %0" : "=m"(v));
    return v;
}

static unsigned get_x87cw(void)
{
    unsigned short v;
    __asm__ __volatile__("fnstcw %0" : "=m"(v));
    return v;
}

static void set_mxcsr(unsigned v)
{
    __asm__ __volatile__("ldmxcsr %0" : : "m"(v) : "memory");
}

static void set_x87cw(unsigned v)
{
    unsigned short w = (unsigned short)v;
    __asm__ __volatile__("fldcw %0" : : "m"(w) : "memory");
}

/* Rounding control: MXCSR bits 13-14, x87 CW bits 10-11; 0 = nearest,
 * 2 = upward (as glibc's fesetround does on x86-64). */
#define MXCSR_RC_SHIFT 13
#define X87_RC_SHIFT 10
static void set_rounding(unsigned rc)
{
    set_mxcsr((get_mxcsr() & ~(3u << MXCSR_RC_SHIFT)) | rc << MXCSR_RC_SHIFT);
    set_x87cw((get_x87cw() & ~(3u << X87_RC_SHIFT)) | rc << X87_RC_SHIFT);
}

/* Bitwise equality (long double: the 10 significant bytes). */
static int same_d(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }
static int same_ld(long double a, long double b)
{
    return memcmp(&a, &b, 10) == 0;
}

static _Thread_local uint64_t tls_val;

int main(int argc, char **argv)
{
    int avx = __builtin_cpu_supports("avx") &&
              !(argc > 1 && strcmp(argv[1], "sse") == 0);
    size_t vlen = avx ? 32 : 16;

    for (int i = 0; i < NGP; i++)
        gp_pat[i] = mix(0x6700 + (uint64_t)i);
    for (int r = 0; r < 16; r++)
        for (int b = 0; b < 32; b++)
            vec_pat[r][b] = (unsigned char)(mix((uint64_t)(r * 32 + b)) >> 17);
    x87_in = 3.14159265358979323846264338327950288L / 7.0L;
    memset(vec_out, 0, sizeof vec_out);

    /* Volatile operands and results, and the "memory" clobber of the asm
     * in set_rounding, keep each division on its side of the mode change
     * (the compiler does not know MXCSR or the x87 CW affect them). */
    volatile double one = 1.0, three = 3.0;
    volatile long double lone = 1.0L, lseven = 7.0L; /* nearest rounds 1/7 down */
    volatile double q_near = one / three;
    volatile long double lq_near = lone / lseven;
    set_rounding(2);
    volatile double q_up = one / three;
    volatile long double lq_up = lone / lseven;
    if (same_d(q_up, q_near))
        fail("double 1/3 does not depend on rounding mode before checkpoint");
    if (same_ld(lq_up, lq_near))
        fail("long double 1/7 does not depend on rounding mode before "
             "checkpoint");
    unsigned mxcsr0 = get_mxcsr(), cw0 = get_x87cw();

    tls_val = 0x7715a1c0ffee1234ULL;
    uint64_t *tls_addr0 = &tls_val;
    volatile uint64_t stackpat[16];
    for (int i = 0; i < 16; i++)
        stackpat[i] = mix(0x57ac + (uint64_t)i);

    put("READY\n");
    for (;;) {
        if (avx)
            read_avx();
        else
            read_sse();
        if (sys_ret != -EINTR)
            break;
        fail("read(0) returned EINTR (no handler is installed)");
    }

    if (sys_ret < 0)
        fail("read(0) failed: %s", strerror((int)-sys_ret));
    for (int i = 0; i < NGP; i++)
        if (gp_out[i] != gp_pat[i])
            fail("%s = %#llx, expected %#llx", GP_NAMES[i],
                 (unsigned long long)gp_out[i], (unsigned long long)gp_pat[i]);
    for (int r = 0; r < 16; r++)
        for (size_t b = 0; b < vlen; b++)
            if (vec_out[r][b] != vec_pat[r][b]) {
                fail("%smm%d byte %zu = %#x, expected %#x", b >= 16 ? "y" : "x",
                     r, b, vec_out[r][b], vec_pat[r][b]);
                break;
            }
    if (memcmp(&x87_out, &x87_in, 10) != 0)
        fail("x87 st(0) differs: %.21Lg, expected %.21Lg", x87_out, x87_in);
    if (arg_out[0] != 0)
        fail("rdi = %#llx after syscall, expected 0",
             (unsigned long long)arg_out[0]);
    if (arg_out[1] != (uint64_t)(uintptr_t)iobuf)
        fail("rsi = %#llx after syscall, expected %p",
             (unsigned long long)arg_out[1], (void *)iobuf);
    if (arg_out[2] != 64)
        fail("rdx = %#llx after syscall, expected 64",
             (unsigned long long)arg_out[2]);
    if (sp_after != sp_before)
        fail("rsp = %#llx after syscall, expected %#llx",
             (unsigned long long)sp_after, (unsigned long long)sp_before);

    unsigned mxcsr1 = get_mxcsr(), cw1 = get_x87cw();
    /* Bits 0-5 are sticky exception flags; compare controls only. */
    if ((mxcsr1 & ~0x3fu) != (mxcsr0 & ~0x3fu))
        fail("MXCSR = %#x, expected %#x (flags ignored)", mxcsr1, mxcsr0);
    if (cw1 != cw0)
        fail("x87 control word = %#x, expected %#x", cw1, cw0);
    if ((mxcsr1 >> MXCSR_RC_SHIFT & 3) != 2 || (cw1 >> X87_RC_SHIFT & 3) != 2)
        fail("rounding mode not upward (MXCSR %#x, x87 CW %#x)", mxcsr1, cw1);
    volatile double q_up2 = one / three;
    volatile long double lq_up2 = lone / lseven;
    if (!same_d(q_up2, q_up))
        fail("double 1/3 = %a, expected %a (rounded upward)", q_up2, q_up);
    if (!same_ld(lq_up2, lq_up))
        fail("long double 1/7 = %La, expected %La (rounded upward)", lq_up2,
             lq_up);

    if (&tls_val != tls_addr0)
        fail("_Thread_local address %p, expected %p", (void *)&tls_val,
             (void *)tls_addr0);
    else if (tls_val != 0x7715a1c0ffee1234ULL)
        fail("_Thread_local value %#llx", (unsigned long long)tls_val);
    for (int i = 0; i < 16; i++)
        if (stackpat[i] != mix(0x57ac + (uint64_t)i)) {
            fail("stack word %d differs", i);
            break;
        }

    set_rounding(0);
    return finish();
}
