/*
 * amx_selftest.c - prove that AMX-BF16 and AVX512-BF16 kernels work on the
 * (emulated) CPU: C[16x16 f32] += A[16x32 bf16] . B[32x16 bf16]
 * computed three ways (AMX tile, AVX512-BF16, scalar reference).
 *
 * Build: gcc -O2 -static -mamx-tile -mamx-bf16 -mavx512bf16 -mavx512f \
 *            -o amx_selftest amx_selftest.c
 * Run:   tools/emulate/sapphire-rapids.sh ./amx_selftest
 * Exit status 0 = PASS, 1 = FAIL, 2 = CPU/OS does not support the features.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

enum { M = 16, N = 16, K = 32 };

/* 64-byte tile configuration, palette 1 (see Intel SDM, LDTILECFG). */
struct tilecfg {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16]; /* bytes per row of each tile */
    uint8_t rows[16];   /* rows of each tile */
};

static uint16_t f32_to_bf16(float f) /* round-to-nearest-even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t A[M][K];         /* row major bf16 */
static uint16_t B[K][N];         /* row major bf16 (logical layout) */
static uint16_t Bv[K / 2][N * 2]; /* VNNI layout: Bv[k/2][2*j + k%2] = B[k][j] */
static float Cref[M][N], Camx[M][N], Cavx[M][N];

static void fill(int exact, uint32_t seed)
{
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            seed = seed * 1664525u + 1013904223u;
            float v = exact ? (float)((int)(seed >> 28) - 8)          /* -8..7 */
                            : ((float)(seed >> 8) / 16777216.0f - 0.5f) * 4.0f;
            A[i][k] = f32_to_bf16(v);
        }
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) {
            seed = seed * 1664525u + 1013904223u;
            float v = exact ? (float)((int)(seed >> 28) - 8)
                            : ((float)(seed >> 8) / 16777216.0f - 0.5f) * 4.0f;
            B[k][j] = f32_to_bf16(v);
            Bv[k / 2][2 * j + (k & 1)] = B[k][j];
        }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = exact ? (float)(i - j) : 0.25f * (float)(i + j);
            Cref[i][j] = Camx[i][j] = Cavx[i][j] = c;
        }
}

static void scalar_ref(void)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = Cref[i][j];
            for (int k = 0; k < K; k++)
                acc += (double)bf16_to_f32(A[i][k]) * (double)bf16_to_f32(B[k][j]);
            Cref[i][j] = (float)acc;
        }
}

static void amx_kernel(void)
{
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    cfg.rows[0] = M;     cfg.colsb[0] = N * 4;     /* tmm0: C, 16 x 16 f32  */
    cfg.rows[1] = M;     cfg.colsb[1] = K * 2;     /* tmm1: A, 16 x 32 bf16 */
    cfg.rows[2] = K / 2; cfg.colsb[2] = N * 4;     /* tmm2: B (VNNI), 16 x 16 bf16 pairs */
    _tile_loadconfig(&cfg);
    _tile_loadd(0, Camx, N * 4);
    _tile_loadd(1, A, K * 2);
    _tile_loadd(2, Bv, N * 4);
    _tile_dpbf16ps(0, 1, 2);
    _tile_stored(0, Camx, N * 4);
    _tile_release();
}

static void avx512_kernel(void)
{
    for (int i = 0; i < M; i++) {
        __m512 c = _mm512_loadu_ps(Cavx[i]);
        for (int p = 0; p < K / 2; p++) {
            uint32_t pair = (uint32_t)A[i][2 * p] | ((uint32_t)A[i][2 * p + 1] << 16);
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)pair);
            __m512bh b = (__m512bh)_mm512_loadu_si512(Bv[p]);
            c = _mm512_dpbf16_ps(c, a, b);
        }
        _mm512_storeu_ps(Cavx[i], c);
    }
}

static int compare(const char *what, float (*got)[N], int exact)
{
    int bad = 0;
    double maxerr = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double err = fabs((double)got[i][j] - (double)Cref[i][j]);
            double tol = exact ? 0.0 : 1e-4 * (1.0 + fabs((double)Cref[i][j])) * K;
            if (err > maxerr) maxerr = err;
            if (err > tol) {
                if (bad < 5)
                    printf("  %s mismatch C[%d][%d]: got %.8g want %.8g\n", what, i, j,
                           (double)got[i][j], (double)Cref[i][j]);
                bad++;
            }
        }
    printf("%-28s %s (max abs err %.3g, %d mismatches)\n", what, bad ? "FAIL" : "ok", maxerr, bad);
    return bad;
}

int main(void)
{
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    int has_avx512f = (b >> 16) & 1, has_amx_bf16 = (d >> 22) & 1, has_amx_tile = (d >> 24) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    int has_avx512_bf16 = (a >> 5) & 1;
    char brand[49] = {0};
    for (unsigned l = 0; l < 3; l++)
        __cpuid(0x80000002u + l, *(unsigned *)&brand[16 * l], *(unsigned *)&brand[16 * l + 4],
                *(unsigned *)&brand[16 * l + 8], *(unsigned *)&brand[16 * l + 12]);
    printf("cpu: %s\ncpuid: avx512f=%d avx512_bf16=%d amx_tile=%d amx_bf16=%d\n", brand,
           has_avx512f, has_avx512_bf16, has_amx_tile, has_amx_bf16);
    if (!(has_avx512f && has_avx512_bf16 && has_amx_tile && has_amx_bf16)) {
        printf("SKIP: CPU lacks required features\n");
        return 2;
    }

    /* Linux >= 5.16: AMX tile data state must be requested per process. */
    long rc = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
    unsigned long perm = 0;
    syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm);
    printf("arch_prctl(ARCH_REQ_XCOMP_PERM, 18) = %ld, xcomp perm mask = 0x%lx\n", rc, perm);
    if (rc != 0 || !(perm & (1ul << XFEATURE_XTILEDATA))) {
        printf("SKIP: kernel refused AMX tile data permission\n");
        return 2;
    }

    int bad = 0;
    for (int exact = 1; exact >= 0; exact--) {
        fill(exact, exact ? 12345u : 777u);
        scalar_ref();
        amx_kernel();
        avx512_kernel();
        printf("%s data:\n", exact ? "integer (exact)" : "random (tolerance)");
        bad += compare("  _tile_dpbf16ps (AMX)", Camx, exact);
        bad += compare("  _mm512_dpbf16_ps (AVX512)", Cavx, exact);
    }
    printf("C[0][0..3] = %g %g %g %g\n", (double)Camx[0][0], (double)Camx[0][1],
           (double)Camx[0][2], (double)Camx[0][3]);
    printf("%s\n", bad ? "FAIL" : "PASS");
    return bad ? 1 : 0;
}
