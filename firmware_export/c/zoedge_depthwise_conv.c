/* zoedge_depthwise_conv.c: the DEPTHWISE_CONV_2D paths of zoedge_kernels.h (general, 3x3).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * DSP (Cortex-M4/M7/M33), path 3x3: one channel at a time. The channel's input is copied into a plane
 * of int16 in the scratch, the input offset added and the padding left at 0 (which contributes
 * nothing, as TFLM skips it); then each row of the 3x3 window is two taps by SMLAD on a pair of
 * neighbouring plane values and the third by SMLABT. With stride 1, two neighbouring outputs share
 * their loads: per row, words A = (x0, x1) and B = (x2, x3) give out0 = A.(w0, w1) + x2 w2 and
 * out1 = x1 w0 + B.(w1, w2). Requantisation is TFLM's (zoedge_kernels_internal.h).
 *
 * MVE (Cortex-M55), both paths with depth multiplier 1: four channels per vector, int8 loaded into
 * int32 lanes. The DSP general path and depth multipliers above 1 run the reference loops.
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_MVE

/* MVE, depth multiplier 1, any kernel, stride and dilation. One channel at a time: the channel is
 * gathered into a plane of int8 (padding = the input zero point, so that the input offset goes into an
 * effective bias, bias + input_offset * the sum of the channel's taps, computed per call: trainable
 * filters change between calls; a padded tap then adds w * (zero point + offset) = 0, as TFLM's skip
 * does). Lanes are four neighbouring output positions: per tap one contiguous load and one VMLA by the
 * tap's weight (four multiply-accumulates). A stride of s splits the plane into s phase planes (plane
 * column s * q + phase at q), so that the positions of a tap stay contiguous. Scratch, as kernel_spec's
 * _depthwise_scratch: the effective biases (int32 [channels rounded up to 4]), then the phase planes. */
#define BLOCK 4

typedef struct {
    int32_t h;        /* plane rows */
    int32_t width;    /* columns of one phase plane: the blocks' positions plus the taps' reach */
    int32_t phases;   /* = stride_w */
} mve_plane;

static mve_plane mve_plane_of(const zoedge_conv_params *p)
{
    mve_plane g;
    g.h = (p->out_h - 1) * p->stride_h + (p->kernel_h - 1) * p->dilation_h + 1;
    g.phases = p->stride_w;
    g.width = (p->out_w + BLOCK - 1) / BLOCK * BLOCK + (p->kernel_w - 1) * p->dilation_w / p->stride_w;
    return g;
}

/* `rows` rows of n int8: from `src`, values `step` bytes apart (offsets = 0, step, 2 step, 3 step), rows
 * src_row bytes apart, to `dst`, contiguous, rows dst_row bytes apart: per four values one gather load
 * and one store in a low-overhead loop, the last n % 4 under the predicate P0 (`tail`). One assembly
 * block for all rows (a C loop around an asm that writes memory reloads its values at every row). */
static void gather_rows(int8_t *dst, int32_t dst_row, const int8_t *src, int32_t src_row, int32_t step, int32_t rows,
                        int32_t n, uint32x4_t offsets)
{
    const int32_t blocks = n / 4, rest = n % 4;
    const mve_pred16_t tail = vctp32q((uint32_t)rest);
    const int32_t src_next = src_row - blocks * 4 * step, dst_next = dst_row - blocks * 4;
    __asm volatile("2:\n\t"
                   "wls lr, %[blocks], 3f\n"
                   "1:\n\t"
                   "vldrb.u32 q0, [%[x], %q[off]]\n\t"
                   "vstrb.32 q0, [%[d]], #4\n\t"
                   "add %[x], %[x], %[step]\n\t"
                   "le lr, 1b\n"
                   "3:\n\t"
                   "cbz %[rest], 4f\n\t"
                   "vpst\n\t"
                   "vldrbt.u32 q0, [%[x], %q[off]]\n\t"
                   "vpst\n\t"
                   "vstrbt.32 q0, [%[d]]\n"
                   "4:\n\t"
                   "add %[x], %[x], %[src_next]\n\t"
                   "add %[d], %[d], %[dst_next]\n\t"
                   "subs %[rows], %[rows], #1\n\t"
                   "bne 2b"
                   : [x] "+r"(src), [d] "+l"(dst), [rows] "+r"(rows)
                   : [blocks] "r"(blocks), [off] "w"(offsets), [step] "r"(4 * step), [rest] "l"(rest),
                     [src_next] "r"(src_next), [dst_next] "r"(dst_next), [p] "Up"(tail)
                   : "q0", "lr", "cc", "memory");
}

/* The reverse: `rows` rows of n int8 from `src` (contiguous, rows src_row apart) to `dst`, values `step`
 * bytes apart, rows dst_row apart, each clamped to [lo, hi]. */
static void scatter_rows(int8_t *dst, int32_t dst_row, const int8_t *src, int32_t src_row, int32_t step, int32_t rows,
                         int32_t n, uint32x4_t offsets, int32x4_t lo, int32x4_t hi)
{
    const int32_t blocks = n / 4, rest = n % 4;
    const mve_pred16_t tail = vctp32q((uint32_t)rest);
    const int32_t src_next = src_row - blocks * 4, dst_next = dst_row - blocks * 4 * step;
    __asm volatile("2:\n\t"
                   "wls lr, %[blocks], 3f\n"
                   "1:\n\t"
                   "vldrb.s32 q0, [%[x]], #4\n\t"
                   "vmax.s32 q0, q0, %q[lo]\n\t"
                   "vmin.s32 q0, q0, %q[hi]\n\t"
                   "vstrb.32 q0, [%[d], %q[off]]\n\t"
                   "add %[d], %[d], %[step]\n\t"
                   "le lr, 1b\n"
                   "3:\n\t"
                   "cbz %[rest], 4f\n\t"
                   "vldrb.s32 q0, [%[x]]\n\t"
                   "vmax.s32 q0, q0, %q[lo]\n\t"
                   "vmin.s32 q0, q0, %q[hi]\n\t"
                   "vpst\n\t"
                   "vstrbt.32 q0, [%[d], %q[off]]\n"
                   "4:\n\t"
                   "add %[x], %[x], %[src_next]\n\t"
                   "add %[d], %[d], %[dst_next]\n\t"
                   "subs %[rows], %[rows], #1\n\t"
                   "bne 2b"
                   : [x] "+l"(src), [d] "+r"(dst), [rows] "+r"(rows)
                   : [blocks] "r"(blocks), [off] "w"(offsets), [step] "r"(4 * step), [rest] "l"(rest),
                     [src_next] "r"(src_next), [dst_next] "r"(dst_next), [lo] "w"(lo), [hi] "w"(hi), [p] "Up"(tail)
                   : "q0", "lr", "cc", "memory");
}

/* The phase planes of a call start as all zero point (the padding); per channel only the input's
 * rows and columns are written: per four plane columns one gather (the columns of one phase are
 * stride_w pixels apart, channels bytes each). */
static void clear_plane_mve(int8_t *plane, int32_t n, int8_t zero_point)
{
    for (int32_t i = 0; i < n; i += 16) {
        vstrbq_p_s8(plane + i, vdupq_n_s8(zero_point), vctp8q((uint32_t)(n - i)));
    }
}

static void fill_plane_mve(int8_t *plane, const mve_plane *g, const zoedge_conv_params *p, const int8_t *input,
                           int32_t c)
{
    const int32_t channels = p->in_c, s = p->stride_w, row_bytes = p->in_w * channels;
    const uint32x4_t offsets = vreinterpretq_u32_s32(vmulq_n_s32(vreinterpretq_s32_u32(vidupq_n_u32(0, 1)),
                                                                 s * channels));
    const int32_t py_begin = p->pad_top, py_end = p->pad_top + p->in_h < g->h ? p->pad_top + p->in_h : g->h;
    for (int32_t ph = 0; ph < g->phases; ++ph) {
        /* the plane columns q whose input column s * q + ph - pad_left lies in [0, in_w) */
        const int32_t first = p->pad_left - ph, q_begin = first > 0 ? (first + s - 1) / s : 0;
        const int32_t last = p->in_w + p->pad_left - ph, q_reach = last > 0 ? (last + s - 1) / s : 0;
        const int32_t q_end = q_reach < g->width ? q_reach : g->width, n = q_end - q_begin;
        if (n <= 0 || py_end <= py_begin) {
            continue;
        }
        gather_rows(plane + (ph * g->h + py_begin) * g->width + q_begin, g->width,
                    input + (s * q_begin + ph - p->pad_left) * channels + c, row_bytes, s * channels,
                    py_end - py_begin, n, offsets);
    }
}

/* Output channel c of one block of positions ox .. ox + 3 (the last block's lanes past the row are
 * computed from the plane's spare columns and not stored). */
ZOEDGE_INLINE int32x4_t block_sum(const zoedge_conv_params *p, const mve_plane *g, const int8_t *plane,
                                  const int8_t *filter, int32_t c, int32_t oy, int32_t ox, int32_t bias)
{
    int32x4_t acc = vdupq_n_s32(bias);
    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t py = oy * p->stride_h + ky * p->dilation_h;
        for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
            const int32_t reach = kx * p->dilation_w, phase = reach % p->stride_w;
            const int8_t *x = plane + (phase * g->h + py) * g->width + ox + reach / p->stride_w;
            acc = vmlaq_n_s32(acc, vldrbq_s32(x), filter[(ky * p->kernel_w + kx) * p->out_c + c]);
        }
    }
    return acc;
}

/* The 3x3 stride-1 case: one block of four positions from the plane rows r0, r1, r2 (each advanced by
 * four), requantised (every shift negative) and saturated to int8 by two saturating narrowings
 * (VQMOVNB: int32 -> int16 -> int8, the byte the store takes; the activation must not clamp inside
 * int8); the store is the caller's. The nine weights stay in registers. */
#define ZOEDGE_DW3X3_BLOCK                    \
    "vmov q0, %q[b]\n\t"                      \
    "vldrb.s32 q1, [%[r0], #4]!\n\t"          \
    "vmla.s32 q0, q1, %[w0]\n\t"              \
    "vldrb.s32 q1, [%[r0], #1]\n\t"           \
    "vmla.s32 q0, q1, %[w1]\n\t"              \
    "vldrb.s32 q1, [%[r0], #2]\n\t"           \
    "vmla.s32 q0, q1, %[w2]\n\t"              \
    "vldrb.s32 q1, [%[r1], #4]!\n\t"          \
    "vmla.s32 q0, q1, %[w3]\n\t"              \
    "vldrb.s32 q1, [%[r1], #1]\n\t"           \
    "vmla.s32 q0, q1, %[w4]\n\t"              \
    "vldrb.s32 q1, [%[r1], #2]\n\t"           \
    "vmla.s32 q0, q1, %[w5]\n\t"              \
    "vldrb.s32 q1, [%[r2], #4]!\n\t"          \
    "vmla.s32 q0, q1, %[w6]\n\t"              \
    "vldrb.s32 q1, [%[r2], #1]\n\t"           \
    "vmla.s32 q0, q1, %[w7]\n\t"              \
    "vldrb.s32 q1, [%[r2], #2]\n\t"           \
    "vmla.s32 q0, q1, %[w8]\n\t"              \
    "vqrdmulh.s32 q0, q0, %q[m]\n\t"          \
    "vshr.s32 q1, q0, #31\n\t"                \
    "vadd.i32 q0, q0, q1\n\t"                 \
    "vrshl.s32 q0, q0, %q[sh]\n\t"            \
    "vadd.i32 q0, q0, %q[zp]\n\t"             \
    "vqmovnb.s32 q0, q0\n\t"                  \
    "vqmovnb.s16 q0, q0\n\t"

/* The 3x3 case with stride 1 and no dilation, one channel at a time, over the whole plane at once: with
 * the plane `width` = out_w + 2 columns wide, output (oy, ox) reads plane[L], plane[L + width] and
 * plane[L + 2 * width] (three taps each) at L = oy * width + ox, so the outputs are one sequence over L
 * (two positions per row, ox >= out_w, are computed and dropped). `blocks` blocks of four are written
 * as bytes to `out` (L order); 28 instructions each, 36 multiply-accumulates. Fourteen registers: gcc
 * allocates that many for an asm only when each is named. */
static void plane_3x3(const int8_t *plane, int32_t width, const int32_t w[9], int32x4_t bias, int32x4_t multiplier,
                      int32x4_t shift, int32x4_t zero_point, int8_t *output, int32_t blocks)
{
    register const int8_t *r0 __asm("r0") = plane - 4;
    register const int8_t *r1 __asm("r1") = plane + width - 4;
    register const int8_t *r2 __asm("r2") = plane + 2 * width - 4;
    register int8_t *out __asm("r3") = output;
    register int32_t w0 __asm("r4") = w[0];
    register int32_t w1 __asm("r5") = w[1];
    register int32_t w2 __asm("r6") = w[2];
    register int32_t w3 __asm("r7") = w[3];
    register int32_t w4 __asm("r8") = w[4];
    register int32_t w5 __asm("r9") = w[5];
    register int32_t w6 __asm("r10") = w[6];
    register int32_t w7 __asm("r11") = w[7];
    register int32_t w8 __asm("r12") = w[8];
    register int32_t n __asm("lr") = blocks;
    __asm volatile(
        "dls lr, lr\n"
        "1:\n\t" ZOEDGE_DW3X3_BLOCK
        "vstrb.32 q0, [%[out]], #4\n\t"
        "le lr, 1b"
        : [r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [out] "+r"(out), [n] "+r"(n)
        : [w0] "r"(w0), [w1] "r"(w1), [w2] "r"(w2), [w3] "r"(w3), [w4] "r"(w4), [w5] "r"(w5), [w6] "r"(w6),
          [w7] "r"(w7), [w8] "r"(w8), [b] "w"(bias), [m] "w"(multiplier), [sh] "w"(shift), [zp] "w"(zero_point)
        : "q0", "q1", "memory");
}

/* Requantise four positions of one channel (one multiplier and shift; the short form when `fast`) and
 * store those inside the row at out, out + channels, ... */
ZOEDGE_INLINE void store_positions(const zoedge_conv_params *p, int32x4_t acc, zoedge_channel_quant_mve q, int fast,
                                   int8_t *out, uint32x4_t offsets, int32_t left)
{
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    int32x4_t v;
    if (fast) {
        v = vqrdmulhq_n_s32(acc, q.multiplier);
        v = vrshlq_n_s32(vaddq_s32(v, vshrq_n_s32(v, 31)), q.shift);
        v = vminq_s32(vmaxq_s32(vaddq_n_s32(v, p->output_offset), act_min), act_max);
    } else {
        v = zoedge_requantize_mve(acc, q.multiplier, q.shift, p->output_offset, act_min, act_max);
    }
    vstrbq_scatter_offset_p_s32(out, offsets, v, vctp32q((uint32_t)left));
}

/* Channel c's outputs, in blocks of four positions. */
static void channel_outputs(const zoedge_conv_params *p, const mve_plane *g, const int8_t *plane,
                            const int8_t *filter, int32_t c, int32_t bias, int8_t *output, int fast)
{
    const int32_t channels = p->out_c;
    const uint32x4_t offsets = vreinterpretq_u32_s32(vmulq_n_s32(vreinterpretq_s32_u32(vidupq_n_u32(0, 1)), channels));
    const zoedge_channel_quant_mve q = {p->multiplier[c], p->shift[c]};
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        int8_t *out = output + oy * p->out_w * channels + c;
        for (int32_t ox = 0; ox < p->out_w; ox += BLOCK, out += BLOCK * channels) {
            const int32x4_t acc = block_sum(p, g, plane, filter, c, oy, ox, bias);
            if (fast) {
                store_positions(p, acc, q, 1, out, offsets, p->out_w - ox);
            } else {
                store_positions(p, acc, q, 0, out, offsets, p->out_w - ox);
            }
        }
    }
}

/* The geometry of the 3x3 stride-1 path: a plane of the padded input, out_w + 2 columns, out_h + 2 rows
 * and slack for the last block's reads; then the L-ordered outputs. As kernel_spec's _depthwise_scratch. */
static mve_plane plane_3x3_of(const zoedge_conv_params *p)
{
    mve_plane g;
    g.h = p->out_h + 2;
    g.width = p->out_w + 2;
    g.phases = 1;
    return g;
}

static void depthwise_mve(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t channels = p->out_c, taps = p->kernel_h * p->kernel_w;
    const int fast = zoedge_all_shifts_negative(p->shift, channels);
    const int linear = fast && p->kernel_h == 3 && p->kernel_w == 3 && p->stride_h == 1 && p->stride_w == 1 &&
                       p->dilation_h == 1 && p->dilation_w == 1;
    const mve_plane g = linear ? plane_3x3_of(p) : mve_plane_of(p);
    const uint32x4_t out_offsets = vreinterpretq_u32_s32(vmulq_n_s32(vreinterpretq_s32_u32(vidupq_n_u32(0, 1)),
                                                                     channels));
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    int8_t *plane = (int8_t *)scratch;
    const int32_t plane_bytes = g.phases * g.h * g.width + 8; /* the last block reads up to 5 bytes past */
    int8_t *sequence = plane + plane_bytes;                     /* linear: out_h * width outputs, and 3 spare */
    const int32_t blocks = (p->out_h * g.width + BLOCK - 1) / BLOCK;
    clear_plane_mve(plane, plane_bytes, (int8_t)(-p->input_offset));
    for (int32_t c = 0; c < channels; ++c) {
        int32_t sum = 0;
        for (int32_t t = 0; t < taps; ++t) {
            sum += filter[t * channels + c];
        }
        const int32_t b = (bias != NULL ? bias[c] : 0) + p->input_offset * sum;
        fill_plane_mve(plane, &g, p, input, c);
        if (!linear) {
            channel_outputs(p, &g, plane, filter, c, b, output, fast);
            continue;
        }
        int32_t w[9];
        for (int32_t t = 0; t < 9; ++t) {
            w[t] = filter[t * channels + c];
        }
        plane_3x3(plane, g.width, w, vdupq_n_s32(b), vdupq_n_s32(p->multiplier[c]), vdupq_n_s32(p->shift[c]),
                  vdupq_n_s32(p->output_offset), sequence, blocks);
        /* into the output, channels apart, clamped to the activation */
        scatter_rows(output + c, p->out_w * channels, sequence, g.width, channels, p->out_h, p->out_w, out_offsets,
                     act_min, act_max);
    }
}

#endif

#if ZOEDGE_ISA != ZOEDGE_ISA_DSP
void zoedge_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
#if ZOEDGE_ISA == ZOEDGE_ISA_MVE
    if (p->depth_multiplier == 1) {
        depthwise_mve(p, input, filter, bias, output, scratch);
        return;
    }
#endif
    zoedge_ref_depthwise_conv_2d(p, input, filter, bias, output);
}
#endif

#if ZOEDGE_ISA == ZOEDGE_ISA_DSP

/* The plane of one input channel (int16, the input offset added, padding 0): the rows and columns the
 * layer's windows cover, its width even and two spare elements at the end (a pair of taps read as one
 * word may reach one element past a window). Geometry as kernel_spec's _depthwise_scratch. */
typedef struct {
    int32_t h, w;                     /* plane rows and (even) columns */
    int32_t y_begin, y_end;           /* the plane rows that hold input rows (the rest stay 0) */
    int32_t x_begin, x_end;           /* ... and columns */
} plane_geometry;

static plane_geometry plane_of(const zoedge_conv_params *p)
{
    plane_geometry g;
    g.h = (p->out_h - 1) * p->stride_h + (p->kernel_h - 1) * p->dilation_h + 1;
    g.w = ((p->out_w - 1) * p->stride_w + (p->kernel_w - 1) * p->dilation_w + 1 + 1) & ~1;
    g.y_begin = p->pad_top;
    g.x_begin = p->pad_left;
    g.y_end = p->pad_top + p->in_h < g.h ? p->pad_top + p->in_h : g.h;
    g.x_end = p->pad_left + p->in_w < g.w ? p->pad_left + p->in_w : g.w;
    return g;
}

ZOEDGE_INLINE int32_t pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

/* Input channel c into the plane; two values per store (the offset added to both by SADD16). The
 * plane's padding was zeroed once and is never written. */
static void fill_plane(int16_t *plane, const plane_geometry *g, const zoedge_conv_params *p, const int8_t *input,
                       int32_t c)
{
    const int32_t channels = p->in_c, n = g->x_end - g->x_begin;
    const int32_t offset2 = pack16(p->input_offset, p->input_offset);
    for (int32_t py = g->y_begin; py < g->y_end; ++py) {
        const int8_t *src = input + ((py - p->pad_top) * p->in_w + (g->x_begin - p->pad_left)) * channels + c;
        int16_t *dst = plane + py * g->w + g->x_begin;
        int32_t i = 0;
        for (; i + 1 < n; i += 2, src += 2 * channels) {
            zoedge_write_word(dst + i, __sadd16(pack16(src[0], src[channels]), offset2));
        }
        if (i < n) {
            dst[i] = (int16_t)(src[0] + p->input_offset);
        }
    }
}

static void clear_plane(int16_t *plane, const plane_geometry *g)
{
    for (int32_t i = 0; i < g->h * g->w + 2; ++i) {
        plane[i] = 0;
    }
}

/* Output channel oc's value from its accumulator (the short requantisation when `fast`). */
ZOEDGE_INLINE int8_t output_value(const zoedge_conv_params *p, int32_t acc, int fast, int narrow,
                                  zoedge_channel_quant q, int32_t offset2, int32_t oc)
{
    if (!fast) {
        return zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
    }
    const int32_t v = zoedge_requantize_to_int8(acc, q.m2, q.r_minus_1, offset2);
    return (int8_t)(narrow ? zoedge_clamp(v, p->act_min, p->act_max) : v);
}

/* Any geometry and depth multiplier: per input channel one plane, per output channel of it the filter
 * as int16 pairs of neighbouring taps (one SMLAD per pair; one SMLABB per tap with dilation). */
static void depthwise_planes(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output, int16_t *plane, int fast, int narrow)
{
    const plane_geometry g = plane_of(p);
    int32_t *pairs = (int32_t *)(void *)(plane + ((g.h * g.w + 2 + 1) & ~1)); /* [kernel_h][(kernel_w + 1) / 2] */
    const int32_t per_row = (p->kernel_w + 1) / 2, out_c = p->out_c, offset2 = 2 * p->output_offset + 1;
    clear_plane(plane, &g);
    for (int32_t c = 0; c < p->in_c; ++c) {
        fill_plane(plane, &g, p, input, c);
        for (int32_t m = 0; m < p->depth_multiplier; ++m) {
            const int32_t oc = c * p->depth_multiplier + m;
            for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                const int8_t *w = filter + ky * p->kernel_w * out_c + oc;
                for (int32_t k = 0; k < per_row; ++k) {
                    const int32_t hi = 2 * k + 1 < p->kernel_w ? w[(2 * k + 1) * out_c] : 0;
                    pairs[ky * per_row + k] = pack16(w[2 * k * out_c], hi);
                }
            }
            const int32_t b = bias != NULL ? bias[oc] : 0;
            const zoedge_channel_quant q = fast ? zoedge_channel_quant_of(p->multiplier, p->shift, oc)
                                                : (zoedge_channel_quant){0, 0};
            int8_t *out = output + oc;
            for (int32_t oy = 0; oy < p->out_h; ++oy) {
                for (int32_t ox = 0; ox < p->out_w; ++ox, out += out_c) {
                    const int16_t *window = plane + oy * p->stride_h * g.w + ox * p->stride_w;
                    int32_t acc = b;
                    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                        const int16_t *row = window + ky * p->dilation_h * g.w;
                        const int32_t *wk = pairs + ky * per_row;
                        if (p->dilation_w == 1) {
                            for (int32_t k = 0; k < per_row; ++k) {
                                acc = __smlad(zoedge_read_word(row + 2 * k), wk[k], acc);
                            }
                        } else {
                            for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                                acc = (kx & 1) ? __smlabt(row[kx * p->dilation_w], wk[kx >> 1], acc)
                                               : __smlabb(row[kx * p->dilation_w], wk[kx >> 1], acc);
                            }
                        }
                    }
                    *out = output_value(p, acc, fast, narrow, q, offset2, oc);
                }
            }
        }
    }
}

void zoedge_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, void *scratch)
{
    if (!zoedge_all_shifts_negative(p->shift, p->out_c)) {
        depthwise_planes(p, input, filter, bias, output, (int16_t *)scratch, 0, 1);
    } else if (zoedge_act_narrower_than_int8(p->act_min, p->act_max)) {
        depthwise_planes(p, input, filter, bias, output, (int16_t *)scratch, 1, 1);
    } else {
        depthwise_planes(p, input, filter, bias, output, (int16_t *)scratch, 1, 0);
    }
}

/* One channel's constants for the 3x3 loops, in the order the assembly reads them. */
enum { T_W01_0, T_W12_0, T_W01_1, T_W12_1, T_W01_2, T_W12_2, T_BIAS, T_BIAS2, T_M2, T_R_MINUS_1, T_OFFSET2, T_PAD,
       T_ACT_MIN, T_ACT_MAX, T_WORDS };

/* Stride 1: `pairs` pairs of neighbouring outputs of one row, from the plane rows r0, r1, r2 (word
 * aligned), written at out and out + channels, then 2 * channels further on. Per row LDRD gives
 * A = (x0, x1) and B = (x2, x3); out0 = A.(w0, w1) + x2 w2 and out1 = x1 w0 + B.(w1, w2); requantised as
 * zoedge_requantize_to_int8. 36 instructions per pair (18 multiply-accumulates). */
static void row_pairs_3x3(const int16_t *r0, const int16_t *r1, const int16_t *r2, const int32_t *t, int8_t *out,
                          int32_t channels, int32_t pairs)
{
    const int16_t *end = r0 + 2 * pairs;
    int32_t even, odd, w01, w12, a, b;
    __asm volatile(
        "1:\n\t"
        "ldrd %[even], %[odd], [%[t], #24]\n\t"
        "ldrd %[w01], %[w12], [%[t]]\n\t"
        "ldrd %[a], %[b], [%[r0]], #4\n\t"
        "smlad %[even], %[a], %[w01], %[even]\n\t"
        "smlabt %[even], %[b], %[w12], %[even]\n\t"
        "smlatb %[odd], %[a], %[w01], %[odd]\n\t"
        "smlad %[odd], %[b], %[w12], %[odd]\n\t"
        "ldrd %[w01], %[w12], [%[t], #8]\n\t"
        "ldrd %[a], %[b], [%[r1]], #4\n\t"
        "smlad %[even], %[a], %[w01], %[even]\n\t"
        "smlabt %[even], %[b], %[w12], %[even]\n\t"
        "smlatb %[odd], %[a], %[w01], %[odd]\n\t"
        "smlad %[odd], %[b], %[w12], %[odd]\n\t"
        "ldrd %[w01], %[w12], [%[t], #16]\n\t"
        "ldrd %[a], %[b], [%[r2]], #4\n\t"
        "smlad %[even], %[a], %[w01], %[even]\n\t"
        "smlabt %[even], %[b], %[w12], %[even]\n\t"
        "smlatb %[odd], %[a], %[w01], %[odd]\n\t"
        "smlad %[odd], %[b], %[w12], %[odd]\n\t"
        "ldrd %[w01], %[w12], [%[t], #32]\n\t" /* m2, r - 1 */
        "ldr %[a], [%[t], #40]\n\t"           /* offset2 */
        "smmlar %[b], %[even], %[w01], %[even]\n\t"
        "add %[b], %[b], %[even], asr #31\n\t"
        "asr %[b], %[b], %[w12]\n\t"
        "qadd %[b], %[b], %[a]\n\t"
        "ssat %[b], #8, %[b], asr #1\n\t"
        "strb %[b], [%[out]]\n\t"
        "smmlar %[even], %[odd], %[w01], %[odd]\n\t"
        "add %[even], %[even], %[odd], asr #31\n\t"
        "asr %[even], %[even], %[w12]\n\t"
        "qadd %[even], %[even], %[a]\n\t"
        "ssat %[even], #8, %[even], asr #1\n\t"
        "strb %[even], [%[out], %[ch]]\n\t"
        "add %[out], %[out], %[ch], lsl #1\n\t"
        "cmp %[r0], %[end]\n\t"
        "bne 1b"
        : [r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [out] "+r"(out), [even] "=&r"(even), [odd] "=&r"(odd),
          [w01] "=&r"(w01), [w12] "=&r"(w12), [a] "=&r"(a), [b] "=&r"(b)
        : [t] "r"(t), [ch] "r"(channels), [end] "r"(end)
        : "cc", "memory");
}

/* Path 3x3 (depth multiplier 1, no dilation), every shift negative: one plane per channel, the
 * channel's constants in a table the assembly reads (T_*). `narrow`: the activation clamps inside
 * int8, so the stride-1 pairs are clamped again after the loop (the same bytes: a clamp of a clamp). */
static void depthwise_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, int8_t *output, int16_t *plane)
{
    const plane_geometry g = plane_of(p);
    const int32_t channels = p->out_c, offset2 = 2 * p->output_offset + 1;
    const int narrow = zoedge_act_narrower_than_int8(p->act_min, p->act_max);
    /* An odd row ends with a pair whose second output is the next row's first (the plane is wide enough
     * for its taps): written now, rewritten with the right value when that row runs. Not on the last row. */
    const int32_t pairs = p->stride_w == 1 ? p->out_w / 2 : 0, odd_pairs = p->stride_w == 1 ? (p->out_w + 1) / 2 : 0;
    int32_t t[T_WORDS];
    clear_plane(plane, &g);
    for (int32_t c = 0; c < channels; ++c) {
        fill_plane(plane, &g, p, input, c);
        const int8_t *w = filter + c;
        for (int32_t ky = 0; ky < 3; ++ky) {
            const int8_t *row = w + 3 * ky * channels;
            t[2 * ky] = pack16(row[0], row[channels]);
            t[2 * ky + 1] = pack16(row[channels], row[2 * channels]);
        }
        t[T_BIAS] = t[T_BIAS2] = bias != NULL ? bias[c] : 0;
        const zoedge_channel_quant q = zoedge_channel_quant_of(p->multiplier, p->shift, c);
        t[T_M2] = q.m2;
        t[T_R_MINUS_1] = q.r_minus_1;
        t[T_OFFSET2] = offset2;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int16_t *row = plane + oy * p->stride_h * g.w;
            int8_t *out = output + oy * p->out_w * channels + c;
            const int32_t n = oy + 1 < p->out_h ? odd_pairs : pairs;
            if (n > 0) {
                row_pairs_3x3(row, row + g.w, row + 2 * g.w, t, out, channels, n);
                if (narrow) {
                    for (int32_t ox = 0; ox < 2 * n && ox < p->out_w; ++ox) {
                        out[ox * channels] = (int8_t)zoedge_clamp(out[ox * channels], p->act_min, p->act_max);
                    }
                }
            }
            for (int32_t ox = 2 * n; ox < p->out_w; ++ox) {
                const int16_t *x = row + ox * p->stride_w;
                int32_t acc = __smlad(zoedge_read_word(x), t[T_W01_0], t[T_BIAS]);
                acc = __smlabt(x[2], t[T_W12_0], acc);
                acc = __smlad(zoedge_read_word(x + g.w), t[T_W01_1], acc);
                acc = __smlabt(x[g.w + 2], t[T_W12_1], acc);
                acc = __smlad(zoedge_read_word(x + 2 * g.w), t[T_W01_2], acc);
                acc = __smlabt(x[2 * g.w + 2], t[T_W12_2], acc);
                const int32_t v = zoedge_requantize_to_int8(acc, q.m2, q.r_minus_1, offset2);
                out[ox * channels] = (int8_t)(narrow ? zoedge_clamp(v, p->act_min, p->act_max) : v);
            }
        }
    }
}

void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch)
{
    if (zoedge_all_shifts_negative(p->shift, p->out_c)) {
        depthwise_3x3(p, input, filter, bias, output, (int16_t *)scratch);
    } else {
        zoedge_depthwise_conv_2d(p, input, filter, bias, output, scratch);
    }
}

#else

void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch)
{
    zoedge_depthwise_conv_2d(p, input, filter, bias, output, scratch);
}

#endif
