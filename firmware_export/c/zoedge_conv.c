/* zoedge_conv.c: the CONV_2D paths of zoedge_kernels.h (general, 1x1), one implementation per instruction set.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * DSP (Cortex-M4/M7/M33): im2col to int16. Two output positions at a time are copied into two int16
 * columns with the input offset added (a padded tap is 0, which contributes nothing, as TFLM skips it).
 * Within each group of four the column holds elements 0, 2, 1, 3: SXTB16 splits four int8 weights into
 * the same pairs, so SMLAD multiplies and adds two of them at once. Each pass of the inner loop computes a
 * 2x2 tile (two positions, two output channels): 8 SMLAD for 16 multiply-accumulates.
 *
 * MVE (Cortex-M55): four columns of int8 and one filter row at a time: VMLADAVA sums 16 products of
 * int8 lanes per instruction. The input offset is added after the loop as offset * (sum of the filter row),
 * the row's sum computed in the same loop (never stored: trainable filters may change between calls).
 *
 * Both requantise with TFLM's arithmetic (zoedge_kernels_internal.h); the sums are the reference's sums
 * in another order, which integer addition does not notice.
 */
#include "zoedge_kernels.h"

#include <stddef.h>
#include <string.h>

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_REF

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    zoedge_ref_conv_2d(p, input, filter, bias, output);
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    zoedge_ref_conv_2d_1x1(p, input, filter, bias, output);
}

#elif ZOEDGE_ISA == ZOEDGE_ISA_DSP

/* The scratch holds four im2col columns (a, b, c, d: four output positions) interleaved, so that one
 * pointer walks all four: per whole group of four window elements, the 32 bytes [a0 a2 a1 a3 b0 b2 b1 b3
 * c0 c2 c1 c3 d0 d2 d1 d3] (int16, input offset added); after the groups, the tail (size % 4 elements)
 * of a, then those of b, c and d. */
#define COLUMNS 4

ZOEDGE_INLINE int32_t element_index(int32_t k, int32_t column, int32_t groups_end, int32_t tail)
{
    if (k < groups_end) {
        return 4 * (k & ~3) + 4 * column + ((k & 1) << 1) + ((k >> 1) & 1);
    }
    return 4 * groups_end + column * tail + (k - groups_end);
}

ZOEDGE_INLINE int32_t offset_pair(int32_t offset)
{
    return (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
}

/* Window elements k .. k + n - 1 of column `column`: n input values from src with the offset added, or
 * zeros where src is NULL (padding contributes nothing, as TFLM skips it). Whole groups take a word per
 * four values (SXTAB16 adds the offset to two values at once). */
static void fill_run(int16_t *cols, int32_t column, int32_t k, const int8_t *src, int32_t n, int32_t groups_end,
                     int32_t tail, int32_t offset)
{
    int32_t i = 0;
    if ((k & 3) == 0) {
        const int32_t offset2 = offset_pair(offset);
        for (; i + 4 <= n && k + i < groups_end; i += 4) {
            int16_t *dst = cols + 4 * (k + i) + 4 * column;
            const int32_t x = src != NULL ? zoedge_read_s8x4(src + i) : 0;
            zoedge_write_word(dst, src != NULL ? __sxtab16(offset2, x) : 0);
            zoedge_write_word(dst + 2, src != NULL ? zoedge_sxtab16_ror8(offset2, x) : 0);
        }
    }
    for (; i < n; ++i) {
        cols[element_index(k + i, column, groups_end, tail)] = (int16_t)(src != NULL ? src[i] + offset : 0);
    }
}

/* Column `column`: the window of output position (oy, ox), k = (ky, kx, ic). A kernel row that lies
 * inside the input (no dilation across it) is one run of kernel_w * in_c values. */
static void fill_column(int16_t *cols, int32_t column, const zoedge_conv_params *p, const int8_t *input,
                        int32_t oy, int32_t ox)
{
    const int32_t in_c = p->in_c, row = p->kernel_w * in_c;
    const int32_t size = p->kernel_h * row, groups_end = size & ~3, tail = size - groups_end;
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    const int row_inside = x0 >= 0 && x0 + (p->kernel_w - 1) * p->dilation_w < p->in_w &&
                           (p->dilation_w == 1 || p->kernel_w == 1);
    for (int32_t ky = 0, k = 0; ky < p->kernel_h; ++ky, k += row) {
        const int32_t iy = y0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            fill_run(cols, column, k, NULL, row, groups_end, tail, 0);
        } else if (row_inside) {
            fill_run(cols, column, k, input + (iy * p->in_w + x0) * in_c, row, groups_end, tail, p->input_offset);
        } else {
            for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t ix = x0 + kx * p->dilation_w;
                const int8_t *pixel = ix >= 0 && ix < p->in_w ? input + (iy * p->in_w + ix) * in_c : NULL;
                fill_run(cols, column, k + kx * in_c, pixel, in_c, groups_end, tail, p->input_offset);
            }
        }
    }
}

/* *a_j += column j . filter row w over `groups` whole groups of four: 15 instructions per group (16
 * multiply-accumulates). LDM reads two columns' group at once into r8-r11. */
ZOEDGE_INLINE void dot_4x1_groups(const int16_t *cols, const int8_t *w, int32_t groups, int32_t *a0, int32_t *a1,
                                  int32_t *a2, int32_t *a3)
{
    int32_t s0 = *a0, s1 = *a1, s2 = *a2, s3 = *a3;
    if (groups > 0) {
        int32_t t0, t1;
        __asm volatile(
            "1:\n\t"
            "ldr %[t0], [%[w]], #4\n\t"
            "ldm %[cols]!, {r8, r9, r10, r11}\n\t"
            "sxtb16 %[t1], %[t0]\n\t"
            "sxtb16 %[t0], %[t0], ror #8\n\t"
            "smlad %[s0], %[t1], r8, %[s0]\n\t"
            "smlad %[s0], %[t0], r9, %[s0]\n\t"
            "smlad %[s1], %[t1], r10, %[s1]\n\t"
            "smlad %[s1], %[t0], r11, %[s1]\n\t"
            "ldm %[cols]!, {r8, r9, r10, r11}\n\t"
            "smlad %[s2], %[t1], r8, %[s2]\n\t"
            "smlad %[s2], %[t0], r9, %[s2]\n\t"
            "smlad %[s3], %[t1], r10, %[s3]\n\t"
            "smlad %[s3], %[t0], r11, %[s3]\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b"
            : [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [cols] "+r"(cols), [w] "+r"(w),
              [n] "+r"(groups), [t0] "=&r"(t0), [t1] "=&r"(t1)
            :
            : "r8", "r9", "r10", "r11", "cc", "memory");
    }
    *a0 = s0;
    *a1 = s1;
    *a2 = s2;
    *a3 = s3;
}

/* One output of channel oc: TFLM's requantisation (the short form when `fast`: every shift negative),
 * clamped to the activation (after the SSAT only when `narrow`). */
ZOEDGE_INLINE int8_t output_value(const zoedge_conv_params *p, int32_t acc, int fast, int narrow,
                                  zoedge_channel_quant q, int32_t offset2, int32_t oc)
{
    if (!fast) {
        return zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
    }
    const int32_t v = zoedge_requantize_to_int8(acc, q.m2, q.r_minus_1, offset2);
    return (int8_t)(narrow ? zoedge_clamp(v, p->act_min, p->act_max) : v);
}

/* Every output channel of four positions from their columns, written at out[j] (position j's first
 * output channel). A position given twice (past the last one) computes and writes the same bytes twice.
 * `fast`, `narrow`: see output_value (constants where this is inlined). */
ZOEDGE_INLINE void columns_to_outputs(const zoedge_conv_params *p, const int16_t *cols, const int8_t *filter,
                                      const int32_t *bias, int32_t size, int fast, int narrow,
                                      int8_t *const out[COLUMNS])
{
    const int32_t offset2 = 2 * p->output_offset + 1;
    const int32_t groups = size >> 2, groups_end = size & ~3, tail = size - groups_end;
    const int16_t *tail_a = cols + 4 * groups_end;
    int8_t *out0 = out[0], *out1 = out[1], *out2 = out[2], *out3 = out[3];
    const int32_t out_c = p->out_c;
    for (int32_t oc = 0; oc < out_c; ++oc) {
        const int8_t *w = filter + oc * size;
        int32_t a0 = bias != NULL ? bias[oc] : 0;
        int32_t a1 = a0, a2 = a0, a3 = a0;
        dot_4x1_groups(cols, w, groups, &a0, &a1, &a2, &a3);
        for (int32_t k = 0; k < tail; ++k) {
            const int32_t wk = w[groups_end + k];
            a0 += wk * tail_a[k];
            a1 += wk * tail_a[tail + k];
            a2 += wk * tail_a[2 * tail + k];
            a3 += wk * tail_a[3 * tail + k];
        }
        const zoedge_channel_quant q = zoedge_channel_quant_of(p->multiplier, p->shift, oc);
        out0[oc] = output_value(p, a0, fast, narrow, q, offset2, oc);
        out1[oc] = output_value(p, a1, fast, narrow, q, offset2, oc);
        out2[oc] = output_value(p, a2, fast, narrow, q, offset2, oc);
        out3[oc] = output_value(p, a3, fast, narrow, q, offset2, oc);
    }
}

/* columns_to_outputs with its two flags as constants, so that each combination compiles to its own loop. */
static void columns_to_outputs_any(const zoedge_conv_params *p, const int16_t *cols, const int8_t *filter,
                                   const int32_t *bias, int32_t size, int8_t *const out[COLUMNS])
{
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int narrow = zoedge_act_narrower_than_int8(p->act_min, p->act_max);
    if (fast && !narrow) {
        columns_to_outputs(p, cols, filter, bias, size, 1, 0, out);
    } else if (fast) {
        columns_to_outputs(p, cols, filter, bias, size, 1, 1, out);
    } else {
        columns_to_outputs(p, cols, filter, bias, size, 0, 1, out);
    }
}

/* The four positions pos .. pos + 3 (the last one repeated past `positions`) and their outputs. */
ZOEDGE_INLINE void tile_positions(int32_t pos, int32_t positions, int32_t out_c, int8_t *output, int32_t index[COLUMNS],
                                  int8_t *out[COLUMNS])
{
    for (int32_t j = 0; j < COLUMNS; ++j) {
        index[j] = pos + j < positions ? pos + j : positions - 1;
        out[j] = output + index[j] * out_c;
    }
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        int8_t *out[COLUMNS];
        tile_positions(pos, positions, p->out_c, output, index, out);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_column(cols, j, p, input, index[j] / p->out_w, index[j] % p->out_w);
        }
        columns_to_outputs_any(p, cols, filter, bias, size, out);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int32_t groups_end = size & ~3, tail = size - groups_end;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        int8_t *out[COLUMNS];
        tile_positions(pos, positions, p->out_c, output, index, out);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_run(cols, j, 0, input + index[j] * size, size, groups_end, tail, p->input_offset);
        }
        columns_to_outputs_any(p, cols, filter, bias, size, out);
    }
}

#else /* ZOEDGE_ISA_MVE */

/* The scratch: the layer's effective biases (int32 [out_c]: bias + input_offset * the filter row's sum,
 * computed per call, never kept: trainable filters change between calls), then four im2col columns
 * (four output positions) of int8 as stored, interleaved in 16-byte chunks: chunk k of column j at
 * (4k + j) * 16. A padded tap holds the input zero point, which with the offset in the bias contributes 0. */
#define COLUMNS 4

static void effective_biases(const zoedge_conv_params *p, const int8_t *filter, const int32_t *bias, int32_t size,
                             int32_t *out)
{
    for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int8_t *w = filter + oc * size;
        int32_t sum = 0;
        for (int32_t k = 0; k < size; k += 16) {
            const mve_pred16_t lanes = vctp8q((uint32_t)(size - k));
            sum = vaddvaq_p_s8(sum, vldrbq_z_s8(w + k, lanes), lanes);
        }
        out[oc] = (bias != NULL ? bias[oc] : 0) + p->input_offset * sum;
    }
}

/* Window elements k .. k + n - 1 of column j: n bytes from src, or the pad value where src is NULL. */
static void fill_run(int8_t *cols, int32_t column, int32_t k, const int8_t *src, int32_t n, int8_t pad)
{
    while (n > 0) {
        const int32_t in_chunk = 16 - (k & 15), m = n < in_chunk ? n : in_chunk;
        int8_t *dst = cols + (4 * (k >> 4) + column) * 16 + (k & 15);
        const mve_pred16_t lanes = vctp8q((uint32_t)m);
        vstrbq_p_s8(dst, src != NULL ? vldrbq_z_s8(src, lanes) : vdupq_n_s8(pad), lanes);
        if (src != NULL) {
            src += m;
        }
        k += m;
        n -= m;
    }
}

/* Column j: the window of output position (oy, ox), k = (ky, kx, ic); a kernel row inside the input is
 * one run. */
static void fill_column(int8_t *cols, int32_t column, const zoedge_conv_params *p, const int8_t *input, int32_t oy,
                        int32_t ox)
{
    const int32_t in_c = p->in_c, row = p->kernel_w * in_c;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    const int row_inside = x0 >= 0 && x0 + (p->kernel_w - 1) * p->dilation_w < p->in_w &&
                           (p->dilation_w == 1 || p->kernel_w == 1);
    for (int32_t ky = 0, k = 0; ky < p->kernel_h; ++ky, k += row) {
        const int32_t iy = y0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            fill_run(cols, column, k, NULL, row, pad);
        } else if (row_inside) {
            fill_run(cols, column, k, input + (iy * p->in_w + x0) * in_c, row, pad);
        } else {
            for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t ix = x0 + kx * p->dilation_w;
                const int8_t *pixel = ix >= 0 && ix < p->in_w ? input + (iy * p->in_w + ix) * in_c : NULL;
                fill_run(cols, column, k + kx * in_c, pixel, in_c, pad);
            }
        }
    }
}

/* The four lanes: effective bias + column j . filter row w. A tail-predicated low-overhead loop
 * (DLSTP/LETP): per 16 window elements one filter load, four column loads and four VMLADAVA (64
 * multiply-accumulates in 10 instructions); VMLADAVA accumulates in even registers only. */
ZOEDGE_INLINE int32x4_t dot_4x1(const int8_t *cols, const int8_t *w, int32_t size, int32_t bias)
{
    register int32_t a0 __asm("r0") = bias;
    register int32_t a1 __asm("r2") = bias;
    register int32_t a2 __asm("r4") = bias;
    register int32_t a3 __asm("r6") = bias;
    int32x4_t out;
    __asm volatile(
        "dlstp.8 lr, %[n]\n"
        "1:\n\t"
        "vldrb.8 q0, [%[w]], #16\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a0], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a1], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a2], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a3], q1, q0\n\t"
        "letp lr, 1b\n\t"
        "vmov %q[out][2], %q[out][0], %[a0], %[a2]\n\t"
        "vmov %q[out][3], %q[out][1], %[a1], %[a3]"
        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [c] "+r"(cols), [out] "=w"(out)
        : [n] "r"(size)
        : "q0", "q1", "lr", "memory");
    return out;
}

/* Every output channel of four positions from their columns; lane j goes to out + offsets[j]. `fast`:
 * every shift negative (the short requantisation); a constant where this is inlined. */
ZOEDGE_INLINE void columns_to_outputs(const zoedge_conv_params *p, const int8_t *cols, const int8_t *filter,
                                      const int32_t *biases, int32_t size, int fast, int8_t *out,
                                      const uint32x4_t offsets)
{
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int32x4_t acc = dot_4x1(cols, filter + oc * size, size, biases[oc]);
        int32x4_t v;
        if (fast) {
            v = vqrdmulhq_n_s32(acc, p->multiplier[oc]);
            v = vrshlq_n_s32(vaddq_s32(v, vshrq_n_s32(v, 31)), p->shift[oc]);
            v = vminq_s32(vmaxq_s32(vaddq_n_s32(v, p->output_offset), act_min), act_max);
        } else {
            v = zoedge_requantize_mve(acc, p->multiplier[oc], p->shift[oc], p->output_offset, act_min, act_max);
        }
        vstrbq_scatter_offset_s32(out + oc, offsets, v);
    }
}

static void columns_to_outputs_any(const zoedge_conv_params *p, const int8_t *cols, const int8_t *filter,
                                   const int32_t *biases, int32_t size, int fast, int8_t *out,
                                   const uint32x4_t offsets)
{
    if (fast) {
        columns_to_outputs(p, cols, filter, biases, size, 1, out, offsets);
    } else {
        columns_to_outputs(p, cols, filter, biases, size, 0, out, offsets);
    }
}

/* The positions pos .. pos + 3 (the last one repeated past `positions`) as output offsets. */
ZOEDGE_INLINE uint32x4_t position_offsets(int32_t pos, int32_t positions, int32_t out_c, int32_t index[COLUMNS])
{
    uint32_t lanes[COLUMNS];
    for (int32_t j = 0; j < COLUMNS; ++j) {
        index[j] = pos + j < positions ? pos + j : positions - 1;
        lanes[j] = (uint32_t)((index[j] - pos) * out_c);
    }
    return vld1q_u32(lanes);
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int32_t *biases = (int32_t *)scratch;
    int8_t *cols = (int8_t *)(biases + ((p->out_c + 3) & ~3));
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    effective_biases(p, filter, bias, size, biases);
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_column(cols, j, p, input, index[j] / p->out_w, index[j] % p->out_w);
        }
        columns_to_outputs_any(p, cols, filter, biases, size, fast, output + pos * p->out_c, offsets);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int32_t *biases = (int32_t *)scratch;
    int8_t *cols = (int8_t *)(biases + ((p->out_c + 3) & ~3));
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    effective_biases(p, filter, bias, size, biases);
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_run(cols, j, 0, input + index[j] * size, size, 0);
        }
        columns_to_outputs_any(p, cols, filter, biases, size, fast, output + pos * p->out_c, offsets);
    }
}

#endif
