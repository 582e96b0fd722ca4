#include "csupport.h"
#include <pthread.h>

static inline int is_space(uint8_t b) { return b == 0x20 || b == 0x09 || b == 0x0a || b == 0x0d; }

/// Whether in[k] is skipped: whitespace, or a backslash that continues a line (`sed -n l` wraps
/// long lines with one). A backslash at the very end is kept: the caller holds it until it knows.
static inline int skipped(const uint8_t *in, size_t n, size_t k) {
    uint8_t b = in[k];
    if (is_space(b)) return 1;
    return b == 0x5c && k + 1 < n && (in[k + 1] == 0x0a || in[k + 1] == 0x0d);
}

static size_t compact_scalar(const uint8_t *in, size_t n, size_t from, size_t to, uint8_t *out, size_t vn) {
    for (size_t k = from; k < to; k++) {
        out[vn] = in[k];
        vn += !skipped(in, n, k);
    }
    return vn;
}

int airlock_skipped(const uint8_t *in, size_t n, size_t k) { return skipped(in, n, k); }

#if defined(__x86_64__)
#include <immintrin.h>

/// For each 8-bit mask of kept bytes: the pshufb control that packs them to the front, and their count.
static uint8_t shuffles[256][8];
static uint8_t counts[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (int m = 0; m < 256; m++) {
        int c = 0;
        for (int i = 0; i < 8; i++) if (m & (1 << i)) shuffles[m][c++] = (uint8_t)i;
        for (int i = c; i < 8; i++) shuffles[m][i] = 0x80;
        counts[m] = (uint8_t)c;
    }
}

__attribute__((target("ssse3")))
static size_t compact_ssse3(const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size) {
    const __m128i sp = _mm_set1_epi8(0x20), tab = _mm_set1_epi8(0x09), lf = _mm_set1_epi8(0x0a), cr = _mm_set1_epi8(0x0d);
    const __m128i bs = _mm_set1_epi8(0x5c);
    size_t vn = 0, block = 0;
    for (size_t k = 0; k < n; ) {
        block_starts[block++] = vn;
        size_t end = k + block_size < n ? k + block_size : n;
        for (; k + 8 <= end; k += 8) {
            __m128i x = _mm_loadl_epi64((const __m128i *)(in + k));
            if (_mm_movemask_epi8(_mm_cmpeq_epi8(x, bs)) & 0xff) {  // a backslash: look at what follows it
                vn = compact_scalar(in, n, k, k + 8, out, vn);
                continue;
            }
            __m128i ws = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, sp), _mm_cmpeq_epi8(x, tab)),
                                      _mm_or_si128(_mm_cmpeq_epi8(x, lf), _mm_cmpeq_epi8(x, cr)));
            unsigned kept = (~(unsigned)_mm_movemask_epi8(ws)) & 0xff;
            __m128i shuffle = _mm_loadl_epi64((const __m128i *)shuffles[kept]);
            _mm_storel_epi64((__m128i *)(out + vn), _mm_shuffle_epi8(x, shuffle));
            vn += counts[kept];
        }
        vn = compact_scalar(in, n, k, end, out, vn);
        k = end;
    }
    return vn;
}

/// 64 bytes at a time: AVX-512 compares give a 64-bit mask of skipped bytes, and VBMI2's vpcompressb
/// packs the kept ones (register form: its memory form is slow on AMD).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")))
static size_t compact_avx512(const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size) {
    const __m512i sp = _mm512_set1_epi8(0x20), tab = _mm512_set1_epi8(0x09), lf = _mm512_set1_epi8(0x0a), cr = _mm512_set1_epi8(0x0d);
    const __m512i bs = _mm512_set1_epi8(0x5c);
    size_t vn = 0, block = 0;
    for (size_t k = 0; k < n; ) {
        block_starts[block++] = vn;
        size_t end = k + block_size < n ? k + block_size : n;
        for (; k + 64 <= end; k += 64) {
            __m512i x = _mm512_loadu_si512((const void *)(in + k));
            __mmask64 eol = _mm512_cmpeq_epi8_mask(x, lf) | _mm512_cmpeq_epi8_mask(x, cr);
            __mmask64 skip = eol | _mm512_cmpeq_epi8_mask(x, sp) | _mm512_cmpeq_epi8_mask(x, tab);
            __mmask64 backslash = _mm512_cmpeq_epi8_mask(x, bs);
            if (backslash) {  // skipped when CR or LF follows it, the 64th byte's follower included
                uint64_t next = (uint64_t)eol >> 1;
                if (k + 64 < n && (in[k + 64] == 0x0a || in[k + 64] == 0x0d)) next |= 1ULL << 63;
                skip |= backslash & next;
            }
            __mmask64 kept = ~skip;
            _mm512_storeu_si512((void *)(out + vn), _mm512_maskz_compress_epi8(kept, x));
            vn += (size_t)__builtin_popcountll(kept);
        }
        vn = compact_scalar(in, n, k, end, out, vn);
        k = end;
    }
    return vn;
}
#endif

/// Which implementation runs: 2 AVX-512 VBMI2, 1 SSSE3, 0 scalar (the best the CPU has).
static int best_impl(void) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return 2;
    if (__builtin_cpu_supports("ssse3")) return 1;
#endif
    return 0;
}

int airlock_compact_whitespace_best(void) { return best_impl(); }

size_t airlock_compact_whitespace_using(int impl, const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size) {
    int best = best_impl();
    if (impl > best) impl = best;
#if defined(__x86_64__)
    if (impl == 2 && block_size % 64 == 0) return compact_avx512(in, n, out, block_starts, block_size);
    if (impl >= 1) {
        pthread_once(&tables_once, build_tables);
        return compact_ssse3(in, n, out, block_starts, block_size);
    }
#endif
    size_t vn = 0, block = 0;
    for (size_t k = 0; k < n; ) {
        block_starts[block++] = vn;
        size_t end = k + block_size < n ? k + block_size : n;
        vn = compact_scalar(in, n, k, end, out, vn);
        k = end;
    }
    return vn;
}

static int chosen = -1;

size_t airlock_compact_whitespace(const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size) {
    int impl = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (impl < 0) { impl = best_impl(); __atomic_store_n(&chosen, impl, __ATOMIC_RELAXED); }
    return airlock_compact_whitespace_using(impl, in, n, out, block_starts, block_size);
}

/// The Wu-Manber hash of a 3-gram (StreamMasker.hash3).
static inline uint32_t hash3(const uint8_t *p, unsigned bits) {
    uint32_t g = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | (uint32_t)p[2];
    return (g * 0x9E3779B1u) >> (32 - bits);
}

size_t airlock_wm_candidates(const uint8_t *buf, size_t n, size_t from, size_t m, const uint8_t *shift, unsigned bits,
                             uint32_t *candidates, size_t *resume) {
    enum { streams = 4 };
    *resume = from;
    if (m < 3 || n < m || from > n - m) return 0;
    size_t last = n - m + 1;  // one past the last start whose window fits
    size_t span = last - from, part = (span + streams - 1) / streams;
    size_t pos[streams], stop[streams], count[streams];
    for (int s = 0; s < streams; s++) {
        size_t a = from + part * (size_t)s, b = a + part;
        pos[s] = a < last ? a : last;
        stop[s] = b < last ? b : last;
        count[s] = 0;
    }
    const uint8_t *tail = buf + m - 3;
    // The four walks are independent: their table loads overlap instead of waiting on each other.
    // A start with shift 0 is recorded (the store is unconditional, the count moves only then).
    for (;;) {
        int active = 0;
        for (int s = 0; s < streams; s++) {
            if (pos[s] < stop[s]) {
                active = 1;
                uint8_t sh = shift[hash3(tail + pos[s], bits)];
                candidates[part * (size_t)s + count[s]] = (uint32_t)pos[s];
                count[s] += sh == 0;
                pos[s] += sh ? sh : 1;
            }
        }
        if (!active) break;
    }
    // Each walk wrote into its own part of `candidates`; close the gaps, keeping the order.
    size_t total = count[0];
    for (int s = 1; s < streams; s++) {
        if (count[s] && total != part * (size_t)s) {
            for (size_t c = 0; c < count[s]; c++) candidates[total + c] = candidates[part * (size_t)s + c];
        }
        total += count[s];
    }
    *resume = pos[streams - 1];
    return total;
}
