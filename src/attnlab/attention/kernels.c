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
            float *o = out + (n * H + h) * Dh;
            /* Constant head sizes let the compiler unroll the inner loops. */
            if (Dh == 32) attend_one_head(qp, kp, k_st, vp, v_st, L, 32, scale, scores, o);
            else if (Dh == 64) attend_one_head(qp, kp, k_st, vp, v_st, L, 64, scale, scores, o);
            else attend_one_head(qp, kp, k_st, vp, v_st, L, Dh, scale, scores, o);
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
