/* attnlab's compiled kernels for one-step decoding (see native.py, which builds and calls them).

   At decoding shapes (one query per row, a few dozen keys, head size 32-64) PyTorch's attention kernel spends most
   of its time on overhead per (row, head), and log-softmax followed by arg-max reads and writes the whole
   (rows, vocabulary) matrix several times. These loops do the same arithmetic in float32, in one pass per head or
   two per row. Plain C99: the compiler vectorizes the loops marked `omp simd` (-fopenmp-simd, no OpenMP runtime). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp(x) for x <= 0: Cody-Waite reduction by ln 2 and a degree-6 polynomial (Cephes' expf coefficients), relative
   error about 1e-7. x is clamped at -87 (e^-87 ~ 1.6e-38, nothing beside a sum whose largest term is 1; -inf gives
   that too). Unlike a call to expf, the loops that use it vectorize. */
static inline float exp_nonpositive(float x) {
    x = x < -87.f ? -87.f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

/* softmax(q . k_t * scale) over t < L, then the weighted sum of v_t, for one (row, head). */
static inline void attend_one_head(const float *restrict q, const float *restrict k, int64_t k_st,
                                   const float *restrict v, int64_t v_st, int64_t L, int64_t Dh, float scale,
                                   float *restrict scores, float *restrict out) {
    float top = -INFINITY;
    for (int64_t t = 0; t < L; ++t) {
        const float *restrict kt = k + t * k_st;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < Dh; ++d) s += q[d] * kt[d];
        s *= scale;
        scores[t] = s;
        top = s > top ? s : top;
    }
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < L; ++t) {
        float e = exp_nonpositive(scores[t] - top);
        scores[t] = e;
        sum += e;
    }
    float inv = 1.f / sum;
    float acc[Dh];
    for (int64_t d = 0; d < Dh; ++d) acc[d] = 0.f;
    for (int64_t t = 0; t < L; ++t) {
        const float *restrict vt = v + t * v_st;
        float w = scores[t] * inv;
#pragma omp simd
        for (int64_t d = 0; d < Dh; ++d) acc[d] += w * vt[d];
    }
    for (int64_t d = 0; d < Dh; ++d) out[d] = acc[d];
}

/* attend_one_head with constant head sizes where they are common, so the compiler unrolls the inner loops. */
static void attend_head(const float *q, const float *k, int64_t k_st, const float *v, int64_t v_st, int64_t L,
                        int64_t Dh, float scale, float *scores, float *out) {
    if (Dh == 32) attend_one_head(q, k, k_st, v, v_st, L, 32, scale, scores, out);
    else if (Dh == 64) attend_one_head(q, k, k_st, v, v_st, L, 64, scale, scores, out);
    else attend_one_head(q, k, k_st, v, v_st, L, Dh, scale, scores, out);
}

/* One query per decoder row over the keys of its memory row: row n attends to memory row n / R (R beams per
   source), to its first lens[n / R] keys (all T when lens is NULL).
   q: (N, H, Dh) with strides (q_sn, q_sh, 1); k, v: (B, H, T, Dh) with strides (.._sb, .._sh, .._st, 1);
   out: (N, H * Dh) contiguous. Every row must have at least one key (the caller checks). Returns 0, or -1 when
   out of memory. */
int attnlab_one_query_attention(const float *q, int64_t q_sn, int64_t q_sh,
                                const float *k, int64_t k_sb, int64_t k_sh, int64_t k_st,
                                const float *v, int64_t v_sb, int64_t v_sh, int64_t v_st,
                                const int64_t *lens, float *out, int64_t N, int64_t R, int64_t H, int64_t T,
                                int64_t Dh, float scale) {
    float *scores = malloc((size_t)(T > 0 ? T : 1) * sizeof(float));
    if (!scores) return -1;
    for (int64_t n = 0; n < N; ++n) {
        int64_t b = n / R;
        int64_t L = lens ? lens[b] : T;
        L = L > T ? T : L;
        for (int64_t h = 0; h < H; ++h) {
            const float *qp = q + n * q_sn + h * q_sh;
            const float *kp = k + b * k_sb + h * k_sh;
            const float *vp = v + b * v_sb + h * v_sh;
            attend_head(qp, kp, k_st, vp, v_st, L, Dh, scale, scores, out + (n * H + h) * Dh);
        }
    }
    free(scores);
    return 0;
}

static inline float range_max(const float *restrict x, int64_t a, int64_t b) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = a; i < b; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

#define PICK_BLOCK 256

/* The largest x[i] over a <= i < e, skip0 and skip1 left out (vectorized when the block holds neither). */
static inline float allowed_max(const float *restrict x, int64_t a, int64_t e, int64_t skip0, int64_t skip1) {
    if ((skip0 < a || skip0 >= e) && (skip1 < a || skip1 >= e)) return range_max(x, a, e);
    float m = -INFINITY;
    for (int64_t i = a; i < e; ++i)
        if (i != skip0 && i != skip1 && x[i] > m) m = x[i];
    return m;
}

/* Greedy decoding's choice for each row of (B, V) logits (row stride ld): the arg-max over every id except skip0
   and skip1 (the first one on ties), and its log-softmax value over all V ids -- what log_softmax, setting the two
   ids to -inf and max would give, reading the row twice and writing nothing. Returns the number of rows without
   a choice (a NaN row): their best is -1. */
int64_t attnlab_greedy_pick(const float *logits, int64_t B, int64_t V, int64_t ld, int64_t skip0, int64_t skip1,
                            int64_t *best, float *best_logp) {
    int64_t failed = 0;
    for (int64_t b = 0; b < B; ++b) {
        const float *restrict x = logits + b * ld;
        /* 1. The largest allowed logit and the block where it first occurs. */
        float chosen = -INFINITY;
        int64_t first = 0;
        for (int64_t a = 0; a < V; a += PICK_BLOCK) {
            int64_t e = a + PICK_BLOCK < V ? a + PICK_BLOCK : V;
            float m = allowed_max(x, a, e, skip0, skip1);
            if (m > chosen) { chosen = m; first = a; }
        }
        /* 2. log-sum-exp over every id, the two skipped ones included. */
        float top = chosen;
        if (skip0 >= 0 && skip0 < V && x[skip0] > top) top = x[skip0];
        if (skip1 >= 0 && skip1 < V && x[skip1] > top) top = x[skip1];
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < V; ++i) sum += exp_nonpositive(x[i] - top);
        /* 3. The first allowed id holding the largest logit. */
        int64_t i = first;
        while (i < V && (x[i] != chosen || i == skip0 || i == skip1)) ++i;
        if (i == V || isnan(sum)) {
            best[b] = -1;
            best_logp[b] = NAN;
            ++failed;
            continue;
        }
        best[b] = i;
        best_logp[b] = (x[i] - top) - logf(sum);
    }
    return failed;
}

/* Greedy decoding's bookkeeping after a choice for B live rows (best, best_logp; rows[b]: row b's index among all N
   rows): token `step` of each live row is best[b] in out_tokens (N, max_len), its log-probability is added to
   scores (N,), num_steps (N,) becomes step + 1 and ended (N, bytes 0/1) is set where best is eos. Writes the live
   rows that did not end to keep (in order) and returns how many there are; -1 (nothing written) when a row index
   is outside 0..N-1. */
int64_t attnlab_greedy_record(const int64_t *best, const float *best_logp, const int64_t *rows, int64_t B, int64_t N,
                              int64_t step, int64_t eos, int64_t max_len, int64_t *out_tokens, float *scores,
                              int64_t *num_steps, uint8_t *ended, int64_t *keep) {
    for (int64_t b = 0; b < B; ++b)
        if (rows[b] < 0 || rows[b] >= N) return -1;
    int64_t n = 0;
    for (int64_t b = 0; b < B; ++b) {
        int64_t r = rows[b];
        out_tokens[r * max_len + step] = best[b];
        scores[r] += best_logp[b];
        num_steps[r] = step + 1;
        if (best[b] == eos) ended[r] = 1;
        else keep[n++] = b;
    }
    return n;
}

/* Insert (value s, index id) into vals/idx, `*count` of `n` entries sorted best first; stable: after equal values.
   The caller makes sure s belongs in the list (the list is short or s beats its last entry). */
static inline void insert_candidate(float *vals, int64_t *idx, int64_t *count, int64_t n, float s, int64_t id) {
    int64_t p = *count < n ? (*count)++ : n - 1;
    while (p > 0 && vals[p - 1] < s) {
        vals[p] = vals[p - 1];
        idx[p] = idx[p - 1];
        --p;
    }
    vals[p] = s;
    idx[p] = id;
}

/* Beam search's candidates for each of Ba sentences with K beams: the n_cand largest of
   log_softmax(logits[i * K + j])[v] + beam_scores[i * K + j] over j < K and v < V, v not skip0/skip1, as values and
   flat indices j * V + v, best first (the lower index first on ties) -- what log_softmax, setting the two ids to
   -inf, adding the beam scores and topk over (Ba, K * V) give, without writing a (Ba * K, V) matrix.
   1. Each row is read twice: its maximum by blocks of PICK_BLOCK ids (the allowed ids only) and its sum of
      exponentials. 2. The n_cand-th largest block maximum, in score terms, is a lower bound of the n_cand-th best
      candidate (each block maximum is a candidate), so 3. only blocks whose maximum reaches it are read again.
   n_cand <= K * V. Returns the number of sentences with a row whose log-sum-exp is not finite (NaN or +inf
   logits: the caller falls back), or -1 when out of memory. */
int64_t attnlab_beam_topk(const float *logits, int64_t Ba, int64_t K, int64_t V, int64_t ld,
                          const float *beam_scores, int64_t skip0, int64_t skip1, int64_t n_cand,
                          float *top_scores, int64_t *top_idx) {
    int64_t n_blocks = (V + PICK_BLOCK - 1) / PICK_BLOCK;
    float *block_max = malloc((size_t)(K * n_blocks + 2 * K + n_cand) * sizeof(float));
    int64_t *bound_idx = malloc((size_t)n_cand * sizeof(int64_t));
    if (!block_max || !bound_idx) {
        free(block_max);
        free(bound_idx);
        return -1;
    }
    float *row_top = block_max + K * n_blocks, *row_log_sum = row_top + K, *bound = row_log_sum + K;
    int64_t failed = 0;
    for (int64_t i = 0; i < Ba; ++i) {
        float *vals = top_scores + i * n_cand;
        int64_t *idx = top_idx + i * n_cand;
        int64_t count = 0, n_bound = 0;
        int ok = 1;
        /* 1. Block maxima over the allowed ids, each row's log-sum-exp over all ids; 2. the lower bound. */
        for (int64_t j = 0; j < K && ok; ++j) {
            const float *restrict x = logits + (i * K + j) * ld;
            float *bm = block_max + j * n_blocks;
            float top = -INFINITY;
            for (int64_t c = 0; c < n_blocks; ++c) {
                int64_t a = c * PICK_BLOCK, e = a + PICK_BLOCK < V ? a + PICK_BLOCK : V;
                bm[c] = allowed_max(x, a, e, skip0, skip1);
                top = bm[c] > top ? bm[c] : top;
            }
            if (skip0 < V && x[skip0] > top) top = x[skip0];
            if (skip1 < V && x[skip1] > top) top = x[skip1];
            float sum = 0.f;
#pragma omp simd reduction(+ : sum)
            for (int64_t v = 0; v < V; ++v) sum += exp_nonpositive(x[v] - top);
            float log_sum = logf(sum);  /* log-softmax = (x - top) - log_sum, as PyTorch rounds it */
            if (!isfinite(top + log_sum)) { ok = 0; break; }
            row_top[j] = top;
            row_log_sum[j] = log_sum;
            float score = beam_scores[i * K + j];
            for (int64_t c = 0; c < n_blocks; ++c) {
                float s = ((bm[c] - top) - log_sum) + score;
                if (n_bound < n_cand || s > bound[n_cand - 1]) insert_candidate(bound, bound_idx, &n_bound, n_cand, s, c);
            }
        }
        if (!ok) { ++failed; continue; }
        float lower = n_bound == n_cand ? bound[n_cand - 1] : -INFINITY;
        /* 3. Every candidate of the blocks that reach the bound, in index order (ties keep the lower index). */
        for (int64_t j = 0; j < K; ++j) {
            const float *restrict x = logits + (i * K + j) * ld;
            const float *bm = block_max + j * n_blocks;
            float top = row_top[j], log_sum = row_log_sum[j], score = beam_scores[i * K + j];
            for (int64_t c = 0; c < n_blocks; ++c) {
                if (count == n_cand && ((bm[c] - top) - log_sum) + score <= vals[n_cand - 1]) continue;
                if (lower > -INFINITY && ((bm[c] - top) - log_sum) + score < lower) continue;
                int64_t a = c * PICK_BLOCK, e = a + PICK_BLOCK < V ? a + PICK_BLOCK : V;
                for (int64_t v = a; v < e; ++v) {
                    float s = (v == skip0 || v == skip1) ? -INFINITY : ((x[v] - top) - log_sum) + score;
                    if (count == n_cand && !(s > vals[n_cand - 1])) continue;
                    insert_candidate(vals, idx, &count, n_cand, s, j * V + v);
                }
            }
        }
    }
    free(block_max);
    free(bound_idx);
    return failed;
}

/* ------------------------------------------------------------------------------------------------------------------
   One decoder layer's decoding step in one call: the layer norms, the six products, self-attention over the cache
   (this step's key and value written into it) and cross-attention over the memory's cached keys and values. At
   decoding shapes (a few dozen rows, d_model 128-512) a step of PyTorch operations costs more in dispatch, bias
   copies and views than in arithmetic. The products go to the BLAS that PyTorch links (its Fortran `sgemm_`, found
   by native.py and handed over by attnlab_set_sgemm) in the same call PyTorch's addmm makes, so they round alike. */

typedef void (*sgemm_fn)(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                         const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
                         const float *beta, float *c, const int *ldc);

static sgemm_fn blas_sgemm = NULL;

void attnlab_set_sgemm(void *fn) { blas_sgemm = (sgemm_fn)fn; }

int attnlab_has_sgemm(void) { return blas_sgemm != NULL; }

/* out (R, N) = x (R, K) W^T + bias, W (N, K) row-major (nn.Linear's layout), rows of out and x contiguous. As
   PyTorch's addmm: the bias copied into out, then out = 1 * x W^T + 1 * out. */
static void linear(const float *x, int64_t R, int64_t K, const float *W, const float *bias, int64_t N, float *out) {
    float alpha = 1.f, beta = 0.f;
    if (bias) {
        for (int64_t r = 0; r < R; ++r) memcpy(out + r * N, bias, (size_t)N * sizeof(float));
        beta = 1.f;
    }
    int m = (int)N, n = (int)R, k = (int)K;
    blas_sgemm("T", "N", &m, &n, &k, &alpha, W, &k, x, &k, &beta, out, &m);
}

/* out = LayerNorm(x) over the last D values of each of R rows (biased variance, as PyTorch). */
static void layer_norm(const float *restrict x, int64_t R, int64_t D, const float *restrict w,
                       const float *restrict b, float eps, float *restrict out) {
    for (int64_t r = 0; r < R; ++r) {
        const float *restrict xr = x + r * D;
        float *restrict o = out + r * D;
        float mean = 0.f, var = 0.f;
#pragma omp simd reduction(+ : mean)
        for (int64_t d = 0; d < D; ++d) mean += xr[d];
        mean /= (float)D;
#pragma omp simd reduction(+ : var)
        for (int64_t d = 0; d < D; ++d) var += (xr[d] - mean) * (xr[d] - mean);
        float inv = 1.f / sqrtf(var / (float)D + eps);
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] = (xr[d] - mean) * inv * (w ? w[d] : 1.f) + (b ? b[d] : 0.f);
    }
}

static void add_into(float *restrict x, const float *restrict y, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

/* erf(x) by Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7; PyTorch's vectorized erf uses the same
   formula), in a form the compiler vectorizes, unlike a call to erff. */
static inline float erf_approx(float x) {
    float a = fabsf(x);
    float t = 1.f / (1.f + 0.3275911f * a);
    float p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    float r = 1.f - p * exp_nonpositive(-a * a);
    return x < 0.f ? -r : r;
}

/* out (R, N) = alpha x (R, K) W^T + beta out, with row strides ldx, ldw, ldo: W (N, K) as nn.Linear keeps it. */
static void gemm_nt(const float *x, int64_t ldx, const float *W, int64_t ldw, float *out, int64_t ldo, int64_t R,
                    int64_t K, int64_t N, float alpha, float beta) {
    int m = (int)N, n = (int)R, k = (int)K, lda = (int)ldw, ldb = (int)ldx, ldc = (int)ldo;
    blas_sgemm("T", "N", &m, &n, &k, &alpha, W, &lda, x, &ldb, &beta, out, &ldc);
}

/* out (R, N) = P (R, K) V (K, N), row strides ldp, ldv, ldo. */
static void gemm_nn(const float *P, int64_t ldp, const float *V, int64_t ldv, float *out, int64_t ldo, int64_t R,
                    int64_t K, int64_t N) {
    int m = (int)N, n = (int)R, k = (int)K, lda = (int)ldv, ldb = (int)ldp, ldc = (int)ldo;
    float one = 1.f, zero = 0.f;
    blas_sgemm("N", "N", &m, &n, &k, &one, V, &lda, P, &ldb, &zero, out, &ldc);
}

/* softmax over the L values of each of T rows of s (row stride ld), in place. */
static void softmax_rows(float *s, int64_t T, int64_t L, int64_t ld) {
    for (int64_t t = 0; t < T; ++t) {
        float *restrict row = s + t * ld;
        float top = range_max(row, 0, L), sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < L; ++j) {
            row[j] = exp_nonpositive(row[j] - top);
            sum += row[j];
        }
        float inv = 1.f / sum;
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) row[j] *= inv;
    }
}

/* A sublayer's weights, in this order (a NULL bias or LayerNorm parameter: none): its LayerNorm's weight and bias,
   then an input projection and an output projection, weight and bias each. Attention with keys of its own: the fused
   Q/K/V projection (3D, D), cross-attention: the query projection (D, D); the feed-forward: (F, D) and (D, F). */
enum { S_NORM_W, S_NORM_B, S_IN_W, S_IN_B, S_OUT_W, S_OUT_B, SUBLAYER_WEIGHTS };

/* The sublayer's input: LayerNorm(x) into h for pre-LN layers, x itself for post-LN ones. */
static const float *sublayer_input(const float *x, int64_t R, int64_t D, const float *const *w, float eps,
                                   int norm_first, float *h) {
    if (!norm_first) return x;
    layer_norm(x, R, D, w[S_NORM_W], w[S_NORM_B], eps, h);
    return h;
}

/* Ends a sublayer: x += y, then x = LayerNorm(x) for post-LN layers (pre-LN ones normalised the input). */
static void residual(float *x, const float *y, int64_t R, int64_t D, const float *const *w, float eps, int norm_first,
                     float *h) {
    add_into(x, y, R * D);
    if (!norm_first) {
        layer_norm(x, R, D, w[S_NORM_W], w[S_NORM_B], eps, h);
        memcpy(x, h, (size_t)(R * D) * sizeof(float));
    }
}

/* The feed-forward sublayer on x (R, D), in place. h, y: R * D floats, f: R * F. activation: 0 ReLU, 1 GELU (erf). */
static void feed_forward(float *x, int64_t R, int64_t D, int64_t F, const float *const *w, float eps, int norm_first,
                         int activation, float *h, float *f, float *y) {
    linear(sublayer_input(x, R, D, w, eps, norm_first, h), R, D, w[S_IN_W], w[S_IN_B], F, f);
    if (activation == 0) {
#pragma omp simd
        for (int64_t i = 0; i < R * F; ++i) f[i] = f[i] < 0.f ? 0.f : f[i];  /* NaN stays NaN, as F.relu */
    } else {
#pragma omp simd
        for (int64_t i = 0; i < R * F; ++i) f[i] = 0.5f * f[i] * (1.f + erf_approx(f[i] * 0.70710678118654752f));
    }
    linear(f, R, F, w[S_OUT_W], w[S_OUT_B], D, y);
    residual(x, y, R, D, w, eps, norm_first, h);
}

/* One step of a Transformer decoder layer for R = B * beams rows of one new position each, in place on x (R, D).
   w: 3 sublayers' weights (self-attention, cross-attention, feed-forward), eps: their LayerNorms' epsilons.
   self_k, self_v: the self-attention cache buffers (B * beams, H, capacity, Dh) with strides (s_sb, s_sh, s_st, 1);
   positions 0..T-1 hold earlier steps, this step's key and value are written at T. cross_k, cross_v: the memory's
   keys and values (B, H, Ts, Dh), strides (c_sb, c_sh, c_st, 1); row n attends to memory row n / beams, its first
   lens[n / beams] keys (NULL: all Ts; none: a zero context, as PyTorch's paths give). scratch: at least
   R * (6 * D + F) + T + 1 + Ts floats. Returns 0, or -1 without a BLAS (nothing written). */
int attnlab_decoder_layer_step(float *x, int64_t R, int64_t D, int64_t H, int64_t F, int64_t beams,
                               const float *const *w, const float *eps, int norm_first, int activation, float *self_k,
                               float *self_v, int64_t s_sb, int64_t s_sh, int64_t s_st, int64_t T,
                               const float *cross_k, const float *cross_v, int64_t c_sb, int64_t c_sh, int64_t c_st,
                               int64_t Ts, const int64_t *lens, float *scratch) {
    if (!blas_sgemm) return -1;
    int64_t Dh = D / H;
    float scale = 1.f / sqrtf((float)Dh);
    float *h = scratch, *qkv = h + R * D, *ctx = qkv + 3 * R * D, *y = ctx + R * D, *f = y + R * D;
    float *scores = f + R * F;
    const float *const *self_w = w, *const *cross_w = w + SUBLAYER_WEIGHTS, *const *ffn_w = w + 2 * SUBLAYER_WEIGHTS;

    /* 1. Self-attention: this step's key and value go into the cache, the query attends over T + 1 positions. */
    linear(sublayer_input(x, R, D, self_w, eps[0], norm_first, h), R, D, self_w[S_IN_W], self_w[S_IN_B], 3 * D, qkv);
    for (int64_t r = 0; r < R; ++r)
        for (int64_t hd = 0; hd < H; ++hd) {
            const float *k = qkv + r * 3 * D + D + hd * Dh, *v = k + D;
            memcpy(self_k + r * s_sb + hd * s_sh + T * s_st, k, (size_t)Dh * sizeof(float));
            memcpy(self_v + r * s_sb + hd * s_sh + T * s_st, v, (size_t)Dh * sizeof(float));
            attend_head(qkv + r * 3 * D + hd * Dh, self_k + r * s_sb + hd * s_sh, s_st, self_v + r * s_sb + hd * s_sh,
                        s_st, T + 1, Dh, scale, scores, ctx + r * D + hd * Dh);
        }
    linear(ctx, R, D, self_w[S_OUT_W], self_w[S_OUT_B], D, y);
    residual(x, y, R, D, self_w, eps[0], norm_first, h);

    /* 2. Cross-attention: each row's query over its memory row's first lens keys. */
    linear(sublayer_input(x, R, D, cross_w, eps[1], norm_first, h), R, D, cross_w[S_IN_W], cross_w[S_IN_B], D, qkv);
    for (int64_t r = 0; r < R; ++r) {
        int64_t b = r / beams, L = lens ? lens[b] : Ts;
        L = L > Ts ? Ts : L;
        if (L < 1) {
            memset(ctx + r * D, 0, (size_t)D * sizeof(float));
            continue;
        }
        for (int64_t hd = 0; hd < H; ++hd)
            attend_head(qkv + r * D + hd * Dh, cross_k + b * c_sb + hd * c_sh, c_st, cross_v + b * c_sb + hd * c_sh,
                        c_st, L, Dh, scale, scores, ctx + r * D + hd * Dh);
    }
    linear(ctx, R, D, cross_w[S_OUT_W], cross_w[S_OUT_B], D, y);
    residual(x, y, R, D, cross_w, eps[1], norm_first, h);

    /* 3. Feed-forward. */
    feed_forward(x, R, D, F, ffn_w, eps[2], norm_first, activation, h, f, y);
    return 0;
}

/* Up to this many keys the encoder attends one query at a time (attend_one_head); from more, by matrix products. */
#define GEMM_KEYS 32

/* A Transformer encoder layer for inference on x (B, T, D), in place: self-attention in which every position of
   row b attends to the row's first lens[b] positions (NULL: all T; none: a zero context), then the feed-forward.
   w: 2 sublayers' weights, eps: their LayerNorms' epsilons. scratch: six buffers of B * T * D, 3 * B * T * D,
   B * T * D, B * T * D, B * T * F and T * T floats (separate, so that each is small enough for malloc to reuse: one
   block of tens of MB would be mapped afresh, and its pages faulted in, at every call). Returns 0, or -1 without a
   BLAS (nothing written). */
int attnlab_encoder_layer(float *x, int64_t B, int64_t T, int64_t D, int64_t H, int64_t F, const float *const *w,
                          const float *eps, int norm_first, int activation, const int64_t *lens,
                          float *const *scratch) {
    if (!blas_sgemm) return -1;
    int64_t R = B * T, Dh = D / H;
    float scale = 1.f / sqrtf((float)Dh);
    float *h = scratch[0], *qkv = scratch[1], *ctx = scratch[2], *y = scratch[3], *f = scratch[4];
    float *scores = scratch[5];
    const float *const *ffn_w = w + SUBLAYER_WEIGHTS;

    linear(sublayer_input(x, R, D, w, eps[0], norm_first, h), R, D, w[S_IN_W], w[S_IN_B], 3 * D, qkv);
    for (int64_t b = 0; b < B; ++b) {
        int64_t L = lens ? lens[b] : T;
        L = L > T ? T : L;
        const float *row = qkv + b * T * 3 * D;
        float *c = ctx + b * T * D;
        if (L < 1) {
            memset(c, 0, (size_t)(T * D) * sizeof(float));
            continue;
        }
        for (int64_t hd = 0; hd < H; ++hd) {
            const float *q = row + hd * Dh, *k = q + D, *v = q + 2 * D;
            if (L <= GEMM_KEYS) {  /* a few keys: one query at a time */
                for (int64_t t = 0; t < T; ++t)
                    attend_head(q + t * 3 * D, k, 3 * D, v, 3 * D, L, Dh, scale, scores, c + t * D + hd * Dh);
            } else {  /* the (T, L) scores of the head by products: Q K^T, softmax, times V */
                gemm_nt(q, 3 * D, k, 3 * D, scores, L, T, Dh, L, scale, 0.f);
                softmax_rows(scores, T, L, L);
                gemm_nn(scores, L, v, 3 * D, c + hd * Dh, D, T, L, Dh);
            }
        }
    }
    linear(ctx, R, D, w[S_OUT_W], w[S_OUT_B], D, y);
    residual(x, y, R, D, w, eps[0], norm_first, h);
    feed_forward(x, R, D, F, ffn_w, eps[1], norm_first, activation, h, f, y);
    return 0;
}

/* ---- training: label-smoothed cross-entropy over rows of logits, and its gradient (train/loss.py) ---- */

static inline float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as PyTorch's float -> bfloat16 conversion does (NaN stays a quiet NaN). */
static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* For each row r of (C, V) logits z (rows ld elements apart; float32, or bfloat16 where z_bf16) with target t_r:
     loss_r = (1 - eps) * (lse_r - z_rt) + eps * mean_v(lse_r - z_rv),   lse_r = log sum_v exp(z_rv),
   the sum of loss_r over the rows r >= skip into *loss, and, where grad is not NULL, d loss_r / d z_r =
   softmax(z_r) - (1 - eps) * onehot(t_r) - eps / V into grad ((C, V), contiguous; bfloat16 where grad_bf16),
   zero for the rows r < skip. work: V floats. Reads each row once and writes each gradient row once, where the
   same arithmetic in PyTorch operators reads and writes the whole (C, V) matrix eight or nine times.
   Returns 0; 1 where a row holds NaN or an infinity, 2 where a target is outside 0..V-1 (the caller then uses
   PyTorch, which gives its own answer or error). */
int attnlab_cross_entropy_rows(const void *logits, int z_bf16, int64_t C, int64_t V, int64_t ld,
                               const int64_t *target, float eps, int64_t skip, double *loss, void *grad,
                               int grad_bf16, float *work) {
    double total = 0.0;
    for (int64_t r = 0; r < C; ++r)
        if (target[r] < 0 || target[r] >= V) return 2;
    for (int64_t r = 0; r < C; ++r) {
        const float *z;
        if (z_bf16) {
            const uint16_t *restrict row = (const uint16_t *)logits + r * ld;
#pragma omp simd
            for (int64_t v = 0; v < V; ++v) work[v] = bf16_to_float(row[v]);
            z = work;
        } else {
            z = (const float *)logits + r * ld;
        }
        float top = -INFINITY, sum = 0.f;
#pragma omp simd reduction(max : top) reduction(+ : sum)
        for (int64_t v = 0; v < V; ++v) {
            top = z[v] > top ? z[v] : top;
            sum += z[v];
        }
        if (!isfinite(top) || !isfinite(sum)) return 1;
        const float z_t = z[target[r]];
        float denom = 0.f;
#pragma omp simd reduction(+ : denom)
        for (int64_t v = 0; v < V; ++v) {
            const float e = exp_nonpositive(z[v] - top);
            work[v] = e;  /* z[v] is read first where z is work */
            denom += e;
        }
        const float lse = top + logf(denom);
        if (r >= skip) total += (double)lse - (1.0 - eps) * z_t - eps * (double)sum / (double)V;
        if (grad == NULL) continue;
        const float inv = 1.f / denom, off = eps / (float)V;
        const float g_t = work[target[r]] * inv - off - (1.f - eps);
        if (grad_bf16) {
            uint16_t *restrict g = (uint16_t *)grad + r * V;
            if (r < skip) {
                memset(g, 0, (size_t)V * sizeof *g);
                continue;
            }
#pragma omp simd
            for (int64_t v = 0; v < V; ++v) g[v] = float_to_bf16(work[v] * inv - off);
            g[target[r]] = float_to_bf16(g_t);
        } else {
            float *restrict g = (float *)grad + r * V;
            if (r < skip) {
                memset(g, 0, (size_t)V * sizeof *g);
                continue;
            }
#pragma omp simd
            for (int64_t v = 0; v < V; ++v) g[v] = work[v] * inv - off;
            g[target[r]] = g_t;
        }
    }
    *loss = total;
    return 0;
}
