/* Fused decoding of one object and its delta chain: zstd, un-grouping, XOR and ULP-add in one
 * pass over the output, one block of elements at a time.
 *
 * Built by setup.py as an optional extension and called through ctypes (which releases the GIL
 * for the whole call), so Python runs once per object instead of once per 64 KiB frame.
 * libzstd is not linked: the caller passes ZSTD_decompressDCtx's address, taken from the
 * system library through ctypes, so neither zstd's headers nor its sources are needed here.
 *
 * Frame b of every plane covers the same elements [b * F, b * F + n), so block b of the output
 * needs exactly frame b of each of the k planes of every level of the chain. Those frames are
 * decompressed into a scratch buffer of k * F bytes that stays in cache, and the block is
 * written once: the root sets it, every delta (XOR, or arithmetic) is combined into it.
 * The object format is the one described in format.py; nothing here changes it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef size_t (*ws_decompress_fn)(void *dctx, void *dst, size_t dst_cap, const void *src,
                                   size_t src_size);
typedef unsigned (*ws_is_error_fn)(size_t code);

#define RAW_FRAME 0x80000000u

enum { OP_RAW = 0, OP_PLAIN = 1, OP_XOR = 2, OP_SUB = 3 };

/* Errors, returned with err[0] = level, err[1] = frame, err[2] = detail. */
enum { WS_OK = 0, WS_ZSTD = 1, WS_SIZE = 2, WS_RAW_SIZE = 3, WS_NOMEM = 4, WS_ARGS = 5 };

/* Element-wise: assemble k planes into elements, rotate floats back, then combine into out. */
#define DEFINE_COMBINE(K, T)                                                                    \
    static inline __attribute__((always_inline)) void combine_##K##_body(                    \
        const uint8_t *const *p, size_t n, T *restrict out, const int rotate, const int op)   \
    {                                                                                         \
        const T top = (T)1 << (8 * K - 1);                                                    \
        for (size_t j = 0; j < n; j++) {                                                      \
            T v = 0;                                                                          \
            for (int b = K - 1; b >= 0; b--)                                                  \
                v = (T)(v << 8) | p[b][j];                                                    \
            if (rotate)                                                                       \
                v = (T)(v >> 1) | (T)(v << (8 * K - 1));                                      \
            if (op == OP_PLAIN) {                                                             \
                out[j] = v;                                                                   \
            } else if (op == OP_XOR) {                                                        \
                out[j] ^= v;                                                                  \
            } else {                                                                          \
                /* arith.add_delta: un-zigzag, add in value order, map back to bits */        \
                T base = out[j];                                                              \
                T d = (T)(v >> 1) ^ (T)(0 - (v & 1));                                         \
                d = (T)(d + (base ^ ((T)(0 - (base >> (8 * K - 1))) | top)));                 \
                T nd = (T)~d;                                                                 \
                out[j] = d ^ ((T)(0 - (nd >> (8 * K - 1))) | top);                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    static void combine_##K(const uint8_t *const *p, size_t n, uint8_t *out, int rotate,      \
                            int op)                                                           \
    {                                                                                         \
        T *o = (T *)out;                                                                      \
        if (op == OP_PLAIN)                                                                   \
            rotate ? combine_##K##_body(p, n, o, 1, OP_PLAIN)                                 \
                   : combine_##K##_body(p, n, o, 0, OP_PLAIN);                                \
        else if (op == OP_XOR)                                                                \
            rotate ? combine_##K##_body(p, n, o, 1, OP_XOR)                                   \
                   : combine_##K##_body(p, n, o, 0, OP_XOR);                                  \
        else                                                                                  \
            combine_##K##_body(p, n, o, 0, OP_SUB);                                           \
    }

DEFINE_COMBINE(2, uint16_t)
DEFINE_COMBINE(4, uint32_t)
DEFINE_COMBINE(8, uint64_t)

static void combine_1(const uint8_t *const *p, size_t n, uint8_t *out, int rotate, int op)
{
    (void)rotate;
    if (op == OP_PLAIN) {
        memcpy(out, p[0], n);
    } else {
        for (size_t j = 0; j < n; j++)
            out[j] ^= p[0][j];
    }
}

/* Decode blocks [first, stop) of a chain into out (the raw bytes of the whole object).
 *
 * levels: n_levels rows of 4 uint64 (payload address, frame table address, op, rotate), root
 * first (a raw object's payload, or a base held by the caller), then each delta towards the
 * object wanted. Every level with frames has elem_size k and
 * frame_size F; the caller checked the headers (CRC, frame count, payload length). scratch holds
 * k * min(F, plane_len) bytes. Returns WS_OK or an error code with err[0..2] filled in.
 */
int ws_decode_blocks(const uint64_t *levels, uint32_t n_levels, uint32_t k, uint64_t plane_len,
                     uint64_t frame_size, uint64_t first, uint64_t stop, uint8_t *out,
                     uint8_t *scratch, void *dctx, ws_decompress_fn decompress,
                     ws_is_error_fn is_error, int64_t *err)
{
    if (k != 1 && k != 2 && k != 4 && k != 8)
        return WS_ARGS;
    if (frame_size == 0 || n_levels == 0)
        return WS_ARGS;
    const uint64_t per_plane = (plane_len + frame_size - 1) / frame_size;
    const uint64_t slot = frame_size < plane_len ? frame_size : plane_len;
    /* Where frame `first` of each plane of each level starts in its payload. */
    uint64_t *cursor = calloc((size_t)n_levels * k, sizeof(uint64_t));
    if (!cursor)
        return WS_NOMEM;
    for (uint32_t l = 0; l < n_levels; l++) {
        const uint32_t *table = (const uint32_t *)(uintptr_t)levels[4 * l + 1];
        if (levels[4 * l + 2] == OP_RAW)
            continue;
        uint64_t pos = 0;
        for (uint32_t p = 0; p < k; p++) {
            for (uint64_t b = 0; b < per_plane; b++) {
                if (b == first)
                    cursor[(size_t)l * k + p] = pos;
                pos += table[p * per_plane + b] & ~RAW_FRAME;
            }
        }
    }
    int rc = WS_OK;
    const uint8_t *planes[8];
    for (uint64_t b = first; b < stop && rc == WS_OK; b++) {
        const uint64_t e0 = b * frame_size;
        const size_t n = (size_t)(plane_len - e0 < frame_size ? plane_len - e0 : frame_size);
        uint8_t *dst = out + e0 * k;
        for (uint32_t l = 0; l < n_levels; l++) {
            const uint8_t *payload = (const uint8_t *)(uintptr_t)levels[4 * l];
            const uint32_t *table = (const uint32_t *)(uintptr_t)levels[4 * l + 1];
            const int op = (int)levels[4 * l + 2];
            const int rotate = (int)levels[4 * l + 3];
            if (op == OP_RAW) {
                if (dst != payload + e0 * k) /* a base decoded in place: already there */
                    memcpy(dst, payload + e0 * k, n * k);
                continue;
            }
            for (uint32_t p = 0; p < k; p++) {
                const uint64_t f = p * per_plane + b;
                const uint32_t entry = table[f];
                const size_t size = entry & ~RAW_FRAME;
                const uint8_t *src = payload + cursor[(size_t)l * k + p];
                cursor[(size_t)l * k + p] += size;
                if (entry & RAW_FRAME) {
                    if (size != n) {
                        err[0] = l, err[1] = (int64_t)f, err[2] = (int64_t)size;
                        rc = WS_RAW_SIZE;
                        break;
                    }
                    planes[p] = src; /* stored uncompressed: read in place, no copy */
                    continue;
                }
                uint8_t *into = scratch + p * slot;
                size_t got = decompress(dctx, into, n, src, size);
                if (got != n) {
                    err[0] = l, err[1] = (int64_t)f, err[2] = (int64_t)got;
                    rc = is_error(got) ? WS_ZSTD : WS_SIZE;
                    break;
                }
                planes[p] = into;
            }
            if (rc != WS_OK)
                break;
            switch (k) {
            case 1: combine_1(planes, n, dst, rotate, op); break;
            case 2: combine_2(planes, n, dst, rotate, op); break;
            case 4: combine_4(planes, n, dst, rotate, op); break;
            default: combine_8(planes, n, dst, rotate, op); break;
            }
        }
    }
    free(cursor);
    return rc;
}
