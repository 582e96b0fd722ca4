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
#endif

size_t airlock_compact_whitespace(const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("ssse3")) {
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
