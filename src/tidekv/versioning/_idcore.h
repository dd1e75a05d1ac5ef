/* The version id in C for tidekv's extensions (included by versioning/_idhash.c and
 * _putrec.c; each gets its own static copy): SHA-256 with the x86 SHA extensions when
 * the CPU has them (tide_sha256_init() picks), plain C otherwise (tested against
 * hashlib for every length across the block and padding boundaries, both
 * compressors), and tide_version_id(), the canonical bytes of a version id and their
 * hash. Include after Python.h. */
#ifndef TIDE_IDCORE_H
#define TIDE_IDCORE_H
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TIDE_X86 1
#include <immintrin.h>
#include <cpuid.h>
#endif

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t H256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

typedef void (*blocks_fn)(uint32_t st[8], const uint8_t *p, size_t nblocks);

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void blocks_c(uint32_t st[8], const uint8_t *p, size_t nblocks) {
    uint32_t w[64];
    for (; nblocks; nblocks--, p += 64) {
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
        uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[i] + w[i];
            uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1;
            d = c; c = b; b = a; a = t1 + t2;
        }
        st[0] += a; st[1] += b; st[2] += c; st[3] += d;
        st[4] += e; st[5] += f; st[6] += g; st[7] += h;
    }
}

#ifdef TIDE_X86
/* The SHA extensions: state kept as ABEF / CDGH, four rounds per step, the message
 * schedule W[t] = msg2(msg1(W[t-4], W[t-3]) + alignr(W[t-1], W[t-2]), W[t-1]). */
__attribute__((target("sha,sse4.1"))) static void blocks_ni(uint32_t st[8], const uint8_t *p,
                                                            size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_loadu_si128((const __m128i *)&st[0]);  /* A B C D (lanes 0..3) */
    __m128i s1 = _mm_loadu_si128((const __m128i *)&st[4]); /* E F G H */
    t = _mm_shuffle_epi32(t, 0xB1);
    s1 = _mm_shuffle_epi32(s1, 0x1B);
    __m128i s0 = _mm_alignr_epi8(t, s1, 8); /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);      /* CDGH */
    for (; nblocks; nblocks--, p += 64) {
        __m128i save0 = s0, save1 = s1, w[16];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
        for (int i = 4; i < 16; i++) {
            __m128i x = _mm_sha256msg1_epu32(w[i - 4], w[i - 3]);
            x = _mm_add_epi32(x, _mm_alignr_epi8(w[i - 1], w[i - 2], 4));
            w[i] = _mm_sha256msg2_epu32(x, w[i - 1]);
        }
        for (int i = 0; i < 16; i++) {
            __m128i m = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
    }
    t = _mm_shuffle_epi32(s0, 0x1B);    /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);   /* DCHG */
    s0 = _mm_blend_epi16(t, s1, 0xF0);  /* DCBA */
    s1 = _mm_alignr_epi8(s1, t, 8);     /* HGFE */
    _mm_storeu_si128((__m128i *)&st[0], s0);
    _mm_storeu_si128((__m128i *)&st[4], s1);
}

static int have_sha_ni(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(b & (1u << 29))) return 0; /* SHA */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & (1u << 19)) && (c & (1u << 9)); /* SSE4.1, SSSE3 */
}
#endif

static blocks_fn fast_blocks = blocks_c;

/* SHA-256 of n bytes at p (any length) into out[32]. */
static void sha256(blocks_fn blocks, const uint8_t *p, size_t n, uint8_t out[32]) {
    uint32_t st[8];
    uint8_t last[128];
    memcpy(st, H256, sizeof st);
    size_t full = n / 64;
    if (full) blocks(st, p, full);
    size_t rest = n - full * 64;
    memcpy(last, p + full * 64, rest);
    last[rest] = 0x80;
    size_t total = rest + 9 <= 64 ? 64 : 128;
    memset(last + rest + 1, 0, total - rest - 1);
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) last[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks(st, last, total / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}

static const char HEXD[] = "0123456789abcdef";

/* "tidekv.version-id\0" then the id format, 1 */
static const char ID_HEAD[] = "tidekv.version-id\0\x01";
#define ID_HEAD_LEN 19

static uint8_t *put_u32(uint8_t *q, uint32_t v) {
    q[0] = (uint8_t)(v >> 24); q[1] = (uint8_t)(v >> 16);
    q[2] = (uint8_t)(v >> 8); q[3] = (uint8_t)v;
    return q + 4;
}

/* The 20 raw bytes of a version id (the canonical bytes of
 * tidekv.versioning.version._py_id_bytes): key kb, parents (a tuple of 40-character
 * str ids), value (NULL for a tombstone), HLC, tail (origin, flag, content type,
 * author: id_tail). -1 with a Python error set on bad input. */
static int tide_version_id(const char *kb, Py_ssize_t nk, PyObject *parents, const char *value,
                           Py_ssize_t nv, unsigned long long wall, unsigned long logical,
                           const char *tail, Py_ssize_t nt, uint8_t out[20]) {
    Py_ssize_t np = PyTuple_GET_SIZE(parents);
    if (nk > 0xFFFFFFFFLL || np > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_OverflowError, "key or parents too long");
        return -1;
    }
    if (logical > 0xFFFF) {
        PyErr_SetString(PyExc_OverflowError, "logical counter out of range");
        return -1;
    }
    size_t size = ID_HEAD_LEN + 4 + (size_t)nk + 4 + (size_t)np * 44 + 4 + 64 + 10 + (size_t)nt;
    uint8_t stackbuf[512];
    uint8_t *buf = size <= sizeof stackbuf ? stackbuf : PyMem_Malloc(size);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint8_t *q = buf;
    memcpy(q, ID_HEAD, ID_HEAD_LEN);
    q += ID_HEAD_LEN;
    q = put_u32(q, (uint32_t)nk);
    memcpy(q, kb, (size_t)nk);
    q += nk;
    q = put_u32(q, (uint32_t)np);
    for (Py_ssize_t i = 0; i < np; i++) {
        Py_ssize_t n = 0;
        PyObject *p = PyTuple_GET_ITEM(parents, i);
        const char *s = PyUnicode_Check(p) ? PyUnicode_AsUTF8AndSize(p, &n) : NULL;
        if (s == NULL || n != 40) {
            if (buf != stackbuf) PyMem_Free(buf);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a parent is a 40-character version id");
            return -1;
        }
        q = put_u32(q, 40);
        memcpy(q, s, 40);
        q += 40;
    }
    uint8_t digest[32];
    if (value == NULL) {
        q = put_u32(q, 0);
    } else {
        sha256(fast_blocks, (const uint8_t *)value, (size_t)nv, digest);
        q = put_u32(q, 64);
        for (int i = 0; i < 32; i++) {
            *q++ = (uint8_t)HEXD[digest[i] >> 4];
            *q++ = (uint8_t)HEXD[digest[i] & 15];
        }
    }
    for (int i = 7; i >= 0; i--) *q++ = (uint8_t)(wall >> (8 * i));
    *q++ = (uint8_t)(logical >> 8);
    *q++ = (uint8_t)logical;
    memcpy(q, tail, (size_t)nt);
    q += nt;
    sha256(fast_blocks, buf, (size_t)(q - buf), digest);
    if (buf != stackbuf) PyMem_Free(buf);
    memcpy(out, digest, 20);
    return 0;
}

static void tide_sha256_init(void) {
#ifdef TIDE_X86
    if (have_sha_ni()) fast_blocks = blocks_ni;
#endif
}
#endif
