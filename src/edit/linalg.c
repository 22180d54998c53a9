/* linalg.c - Cholesky, LU and triangular solves in double (see linalg.h).
 *
 * The covariance of GPT-2 small's down-projection inputs is 3072 x 3072, so
 * the factorisation is ~10 GFLOP: a right-looking blocked Cholesky whose
 * trailing update (the SYRK that carries all the work) runs on 4x4 register
 * tiles over rows, OpenMP over row tiles. Every output element is computed
 * by one thread in a fixed order, so results do not depend on the thread
 * count. With OpenBLAS compiled in, the trailing update is its DSYRK instead
 * (~10x faster); the factor never enters a change record, so the two builds
 * need not agree to the last bit. */
#include "linalg.h"

#ifdef GRAFT_USE_OPENBLAS
#include <cblas.h>
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NB 64 /* panel width: the panel (n x NB doubles) stays in L2 */

/* a[i][j] -= sum_{p in [k0,k1)} a[i][p] * a[j][p] for the 4x4 tile at (i0, j0). */
static void syrk_tile4(double *a, int n, int i0, int j0, int k0, int k1) {
    const double *a0 = a + (size_t)i0 * n, *a1 = a0 + n, *a2 = a1 + n, *a3 = a2 + n;
    const double *b0 = a + (size_t)j0 * n, *b1 = b0 + n, *b2 = b1 + n, *b3 = b2 + n;
    double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    double s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)
    for (int p = k0; p < k1; p++) {
        double x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        double y0 = b0[p], y1 = b1[p], y2 = b2[p], y3 = b3[p];
        s00 += x0 * y0, s01 += x0 * y1, s02 += x0 * y2, s03 += x0 * y3;
        s10 += x1 * y0, s11 += x1 * y1, s12 += x1 * y2, s13 += x1 * y3;
        s20 += x2 * y0, s21 += x2 * y1, s22 += x2 * y2, s23 += x2 * y3;
        s30 += x3 * y0, s31 += x3 * y1, s32 += x3 * y2, s33 += x3 * y3;
    }
    double s[4][4] = {{s00, s01, s02, s03}, {s10, s11, s12, s13}, {s20, s21, s22, s23}, {s30, s31, s32, s33}};
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (j0 + c <= i0 + r) a[(size_t)(i0 + r) * n + j0 + c] -= s[r][c];
}

static void syrk_one(double *a, int n, int i, int j, int k0, int k1) {
    const double *x = a + (size_t)i * n, *y = a + (size_t)j * n;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int p = k0; p < k1; p++) s += x[p] * y[p];
    a[(size_t)i * n + j] -= s;
}

graft_status graft_chol(double *a, int n) {
    for (int k0 = 0; k0 < n; k0 += NB) {
        int k1 = k0 + NB < n ? k0 + NB : n;
        /* 1. the diagonal block, unblocked (earlier panels are already subtracted) */
        for (int j = k0; j < k1; j++) {
            double *rj = a + (size_t)j * n;
            double d = rj[j];
            for (int p = k0; p < j; p++) d -= rj[p] * rj[p];
            if (!(d > 0) || !isfinite(d))
                return graft_fail(GRAFT_ERR_INVALID, "Cholesky: the matrix is not positive definite (pivot %d of %d is %g)",
                                  j, n, d);
            d = sqrt(d);
            rj[j] = d;
            for (int i = j + 1; i < k1; i++) {
                double *ri = a + (size_t)i * n;
                double s = ri[j];
                for (int p = k0; p < j; p++) s -= ri[p] * rj[p];
                ri[j] = s / d;
            }
        }
        if (k1 == n) break;
        /* 2. the panel below it: x L_kk^T = a[i, k0:k1] for each row i */
#pragma omp parallel for schedule(static)
        for (int i = k1; i < n; i++) {
            double *ri = a + (size_t)i * n;
            for (int j = k0; j < k1; j++) {
                const double *rj = a + (size_t)j * n;
                double s = ri[j];
                for (int p = k0; p < j; p++) s -= ri[p] * rj[p];
                ri[j] = s / rj[j];
            }
        }
        /* 3. the trailing update of the lower triangle */
        int m = n - k1;
#ifdef GRAFT_USE_OPENBLAS
        cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, m, k1 - k0, -1.0, a + (size_t)k1 * n + k0, n, 1.0,
                    a + (size_t)k1 * n + k1, n);
        continue;
#endif
        int tiles = (m + 3) / 4;
#pragma omp parallel for schedule(dynamic, 4)
        for (int ti = 0; ti < tiles; ti++) {
            int i0 = k1 + 4 * ti;
            for (int j0 = k1; j0 <= i0; j0 += 4) {
                if (i0 + 4 <= n && j0 + 4 <= n)
                    syrk_tile4(a, n, i0, j0, k0, k1);
                else
                    for (int i = i0; i < i0 + 4 && i < n; i++)
                        for (int j = j0; j < j0 + 4 && j <= i; j++) syrk_one(a, n, i, j, k0, k1);
            }
        }
    }
    for (int i = 0; i < n; i++) memset(a + (size_t)i * n + i + 1, 0, (size_t)(n - i - 1) * sizeof(double));
    return GRAFT_OK;
}

void graft_chol_solve(const double *l, int n, double *b, int nrhs) {
#pragma omp parallel for schedule(static) if (nrhs > 1)
    for (int r = 0; r < nrhs; r++) {
        double *x = b + (size_t)r * n;
        /* L y = b: rows of L are contiguous */
        for (int i = 0; i < n; i++) {
            const double *li = l + (size_t)i * n;
            double s = x[i];
            for (int p = 0; p < i; p++) s -= li[p] * x[p];
            x[i] = s / li[i];
        }
        /* L^T x = y, column-oriented so that L is still read by rows */
        for (int i = n - 1; i >= 0; i--) {
            const double *li = l + (size_t)i * n;
            double xi = x[i] / li[i];
            x[i] = xi;
            for (int p = 0; p < i; p++) x[p] -= li[p] * xi;
        }
    }
}

graft_status graft_lu_solve(double *a, int n, double *b, int nrhs) {
    int *piv = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    if (!piv) return graft_fail(GRAFT_ERR_NOMEM, "LU solve: out of memory");
    double amax = 0;
    for (size_t i = 0; i < (size_t)n * n; i++) amax = fmax(amax, fabs(a[i]));
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(a[(size_t)i * n + k]) > fabs(a[(size_t)p * n + k])) p = i;
        piv[k] = p;
        if (!(fabs(a[(size_t)p * n + k]) > amax * 1e-14 * n) || !isfinite(a[(size_t)p * n + k])) {
            free(piv);
            return graft_fail(GRAFT_ERR_INVALID, "LU solve: the %dx%d matrix is singular (column %d)", n, n, k);
        }
        if (p != k)
            for (int j = 0; j < n; j++) {
                double t = a[(size_t)k * n + j];
                a[(size_t)k * n + j] = a[(size_t)p * n + j];
                a[(size_t)p * n + j] = t;
            }
        const double *rk = a + (size_t)k * n;
        for (int i = k + 1; i < n; i++) {
            double *ri = a + (size_t)i * n;
            double f = ri[k] / rk[k];
            ri[k] = f;
            for (int j = k + 1; j < n; j++) ri[j] -= f * rk[j];
        }
    }
    for (int r = 0; r < nrhs; r++) {
        double *x = b + (size_t)r * n;
        for (int k = 0; k < n; k++)
            if (piv[k] != k) {
                double t = x[k];
                x[k] = x[piv[k]];
                x[piv[k]] = t;
            }
        for (int i = 0; i < n; i++) {
            const double *ri = a + (size_t)i * n;
            double s = x[i];
            for (int p = 0; p < i; p++) s -= ri[p] * x[p];
            x[i] = s;
        }
        for (int i = n - 1; i >= 0; i--) {
            const double *ri = a + (size_t)i * n;
            double s = x[i];
            for (int p = i + 1; p < n; p++) s -= ri[p] * x[p];
            x[i] = s / ri[i];
        }
    }
    free(piv);
    return GRAFT_OK;
}

void graft_dgemm_nt(const double *a, const double *b, double *out, int m, int n, int k) {
#pragma omp parallel for schedule(static) if ((size_t)m * n * k > 1000000)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const double *x = a + (size_t)i * k, *y = b + (size_t)j * k;
            double s = 0;
            for (int p = 0; p < k; p++) s += x[p] * y[p];
            out[(size_t)i * n + j] = s;
        }
}
