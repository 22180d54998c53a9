/*
 * linalg.h - the small dense linear algebra of the closed-form editors
 * (ROME, MEMIT, EMMET), in double precision, row-major, in-tree so that a
 * build without BLAS/LAPACK edits exactly like one with it.
 *
 * Right-hand sides are stored one per ROW (nrhs x n), because every caller
 * holds its keys as rows (one key of F floats after another).
 */
#ifndef GRAFT_LINALG_H
#define GRAFT_LINALG_H

#include "internal.h"

/* In-place Cholesky factorisation A = L L^T of a symmetric positive definite
 * n x n matrix (only the lower triangle is read). On success the lower
 * triangle holds L and the strict upper triangle is zeroed. Fails with
 * GRAFT_ERR_INVALID naming the pivot when A is not positive definite. */
graft_status graft_chol(double *a, int n);

/* Solve (L L^T) x = b for each of the nrhs rows of b (n doubles each), in place. */
void graft_chol_solve(const double *l, int n, double *b, int nrhs);

/* Solve A x = b for each of the nrhs rows of b by LU with partial pivoting.
 * A (n x n) is destroyed. Fails when A is numerically singular. */
graft_status graft_lu_solve(double *a, int n, double *b, int nrhs);

/* C[m x n] = A[m x k] B[k x n]^T-style helpers in double, deterministic (no threading-dependent order). */
/* out[i][j] = sum_p a[i][p] * b[j][p]  (a: m x k, b: n x k, out: m x n) */
void graft_dgemm_nt(const double *a, const double *b, double *out, int m, int n, int k);

#endif
