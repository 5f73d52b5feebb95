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

/* The scratch holds the two columns interleaved, so that one pointer walks both: per whole group of
 * four window elements, the 16 bytes [a0 a2 a1 a3 b0 b2 b1 b3] (int16, offset added); after the groups,
 * the tail (size % 4 elements) of column a, then that of column b. */
ZOEDGE_INLINE int32_t pair_index(int32_t k, int32_t column, int32_t groups_end, int32_t tail)
{
    if (k < groups_end) {
        return 2 * (k & ~3) + 4 * column + ((k & 1) << 1) + ((k >> 1) & 1);
    }
    return 2 * groups_end + column * tail + (k - groups_end);
}

ZOEDGE_INLINE int32_t offset_pair(int32_t offset)
{
    return (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
}

/* Column `column` of the pair at `cols`: the window of output position (oy, ox), k = (ky, kx, ic). */
static void fill_column(int16_t *cols, int32_t column, const zoedge_conv_params *p, const int8_t *input,
                        int32_t oy, int32_t ox)
{
    const int32_t in_c = p->in_c;
    const int32_t size = p->kernel_h * p->kernel_w * in_c;
    const int32_t groups_end = size & ~3, tail = size - groups_end;
    const int32_t offset2 = offset_pair(p->input_offset);
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    int32_t k = 0;
    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = y0 + ky * p->dilation_h;
        for (int32_t kx = 0; kx < p->kernel_w; ++kx, k += in_c) {
            const int32_t ix = x0 + kx * p->dilation_w;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *pixel = input + (iy * p->in_w + ix) * in_c;
            if ((in_c & 3) == 0 && inside) { /* whole groups: four values per word read */
                int16_t *dst = cols + 2 * k + 4 * column;
                for (int32_t c = 0; c < in_c; c += 4, dst += 8) {
                    const int32_t x = zoedge_read_s8x4(pixel + c);
                    zoedge_write_word(dst, __sxtab16(offset2, x));
                    zoedge_write_word(dst + 2, zoedge_sxtab16_ror8(offset2, x));
                }
            } else {
                for (int32_t c = 0; c < in_c; ++c) {
                    cols[pair_index(k + c, column, groups_end, tail)] = (int16_t)(inside ? pixel[c] + p->input_offset : 0);
                }
            }
        }
    }
}

/* The 1x1 path's column: one pixel, offset added. */
static void fill_pixel_column(int16_t *cols, int32_t column, const zoedge_conv_params *p, const int8_t *pixel)
{
    const int32_t in_c = p->in_c;
    const int32_t groups_end = in_c & ~3, tail = in_c - groups_end;
    const int32_t offset2 = offset_pair(p->input_offset);
    int16_t *dst = cols + 4 * column;
    for (int32_t c = 0; c < groups_end; c += 4, dst += 8) {
        const int32_t x = zoedge_read_s8x4(pixel + c);
        zoedge_write_word(dst, __sxtab16(offset2, x));
        zoedge_write_word(dst + 2, zoedge_sxtab16_ror8(offset2, x));
    }
    for (int32_t c = groups_end; c < in_c; ++c) {
        cols[2 * groups_end + column * tail + (c - groups_end)] = (int16_t)(pixel[c] + p->input_offset);
    }
}

/* acc {a0, a1, b0, b1} += columns a, b times filter rows w0, w1 (a0 = a . w0, a1 = a . w1, ...), over
 * `groups` whole groups of four; 18 instructions per group (16 multiply-accumulates). */
ZOEDGE_INLINE void dot_2x2_groups(const int16_t *cols, const int8_t *w0, const int8_t *w1, int32_t groups,
                                  int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    if (groups > 0) {
        int32_t c0, c1, c2, c3, t0, t1;
        __asm volatile(
            "1:\n\t"
            "ldrd %[c0], %[c1], [%[cols]], #8\n\t"
            "ldrd %[c2], %[c3], [%[cols]], #8\n\t"
            "ldr %[t0], [%[w0]], #4\n\t"
            "sxtb16 %[t1], %[t0]\n\t"
            "sxtb16 %[t0], %[t0], ror #8\n\t"
            "smlad %[a0], %[t1], %[c0], %[a0]\n\t"
            "smlad %[a0], %[t0], %[c1], %[a0]\n\t"
            "smlad %[b0], %[t1], %[c2], %[b0]\n\t"
            "smlad %[b0], %[t0], %[c3], %[b0]\n\t"
            "ldr %[t0], [%[w1]], #4\n\t"
            "sxtb16 %[t1], %[t0]\n\t"
            "sxtb16 %[t0], %[t0], ror #8\n\t"
            "smlad %[a1], %[t1], %[c0], %[a1]\n\t"
            "smlad %[a1], %[t0], %[c1], %[a1]\n\t"
            "smlad %[b1], %[t1], %[c2], %[b1]\n\t"
            "smlad %[b1], %[t0], %[c3], %[b1]\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b"
            : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [cols] "+r"(cols), [w0] "+r"(w0),
              [w1] "+r"(w1), [n] "+r"(groups), [c0] "=&r"(c0), [c1] "=&r"(c1), [c2] "=&r"(c2), [c3] "=&r"(c3),
              [t0] "=&r"(t0), [t1] "=&r"(t1)
            :
            : "cc", "memory");
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

ZOEDGE_INLINE int8_t requantize_fast(int32_t acc, int32_t m2, int32_t r_minus_1, int32_t offset2, int32_t act_min,
                                     int32_t act_max)
{
    return (int8_t)zoedge_clamp(zoedge_requantize_negative_shift(acc, m2, r_minus_1, offset2), act_min, act_max);
}

/* Every output channel of two positions from their columns, written at out_a and out_b (the positions'
 * first output channel). One position: column b is a copy of a and out_b == out_a, so the same bytes
 * are written twice; an odd last channel likewise runs as a pair with itself. */
static void columns_to_outputs(const zoedge_conv_params *p, const int16_t *cols, const int8_t *filter,
                               const int32_t *bias, int32_t size, int fast, int8_t *out_a, int8_t *out_b)
{
    const int32_t offset2 = 2 * p->output_offset + 1;
    const int32_t groups = size >> 2, groups_end = size & ~3, tail = size - groups_end;
    const int16_t *tail_a = cols + 2 * groups_end, *tail_b = tail_a + tail;
    const int32_t act_min = p->act_min, act_max = p->act_max, out_c = p->out_c;
    for (int32_t oc = 0; oc < out_c; oc += 2) {
        const int32_t oc1 = oc + 1 < out_c ? oc + 1 : oc;
        const int8_t *w0 = filter + oc * size, *w1 = filter + oc1 * size;
        int32_t acc[4];
        acc[0] = acc[2] = bias != NULL ? bias[oc] : 0;
        acc[1] = acc[3] = bias != NULL ? bias[oc1] : 0;
        dot_2x2_groups(cols, w0, w1, groups, acc);
        for (int32_t k = 0; k < tail; ++k) {
            acc[0] += w0[groups_end + k] * tail_a[k];
            acc[1] += w1[groups_end + k] * tail_a[k];
            acc[2] += w0[groups_end + k] * tail_b[k];
            acc[3] += w1[groups_end + k] * tail_b[k];
        }
        if (fast) {
            const int32_t m0 = (int32_t)((uint32_t)p->multiplier[oc] << 1), r0 = ~p->shift[oc];
            const int32_t m1 = (int32_t)((uint32_t)p->multiplier[oc1] << 1), r1 = ~p->shift[oc1];
            out_a[oc] = requantize_fast(acc[0], m0, r0, offset2, act_min, act_max);
            out_b[oc] = requantize_fast(acc[2], m0, r0, offset2, act_min, act_max);
            out_a[oc1] = requantize_fast(acc[1], m1, r1, offset2, act_min, act_max);
            out_b[oc1] = requantize_fast(acc[3], m1, r1, offset2, act_min, act_max);
        } else {
            const int32_t m0 = p->multiplier[oc], s0 = p->shift[oc], m1 = p->multiplier[oc1], s1 = p->shift[oc1];
            const int32_t zp = p->output_offset;
            out_a[oc] = zoedge_requantize_ref(acc[0], m0, s0, zp, act_min, act_max);
            out_b[oc] = zoedge_requantize_ref(acc[2], m0, s0, zp, act_min, act_max);
            out_a[oc1] = zoedge_requantize_ref(acc[1], m1, s1, zp, act_min, act_max);
            out_b[oc1] = zoedge_requantize_ref(acc[3], m1, s1, zp, act_min, act_max);
        }
    }
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 2) {
        const int32_t second = pos + 1 < positions ? pos + 1 : pos;
        fill_column(cols, 0, p, input, pos / p->out_w, pos % p->out_w);
        fill_column(cols, 1, p, input, second / p->out_w, second % p->out_w);
        columns_to_outputs(p, cols, filter, bias, size, fast, output + pos * p->out_c, output + second * p->out_c);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 2) {
        const int32_t second = pos + 1 < positions ? pos + 1 : pos;
        fill_pixel_column(cols, 0, p, input + pos * size);
        fill_pixel_column(cols, 1, p, input + second * size);
        columns_to_outputs(p, cols, filter, bias, size, fast, output + pos * p->out_c, output + second * p->out_c);
    }
}

#else /* ZOEDGE_ISA_MVE */

/* Up to four columns of `size` int8 and every filter row: VMLADAVA sums 16 products of int8 lanes per
 * instruction into a scalar, VADDVA sums the filter row's lanes (its sum times the input offset is what
 * the offset adds to each accumulator). Lanes past the end are loaded as zero (tail predication), which
 * adds nothing. Outputs of column j go to out + j * stride; a column given twice computes (and stores)
 * the same bytes twice. */
static void columns_to_outputs(const zoedge_conv_params *p, const int8_t *const cols[4], const int8_t *filter,
                               const int32_t *bias, int32_t size, int8_t *out, const uint32x4_t offsets)
{
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    const int8_t *c0 = cols[0], *c1 = cols[1], *c2 = cols[2], *c3 = cols[3];
    for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int8_t *w = filter + oc * size;
        /* VMLADAVA and VADDVA accumulate in even-numbered registers only */
        register int32_t a0 __asm("r0") = 0;
        register int32_t a1 __asm("r2") = 0;
        register int32_t a2 __asm("r4") = 0;
        register int32_t a3 __asm("r6") = 0;
        register int32_t row_sum __asm("r8") = 0;
        if (size > 0) {
            /* 14 instructions per 16 elements of the four columns (64 multiply-accumulates); the loads
             * are predicated on the elements left (VCTP), so the last pass reads nothing past the end */
            const int8_t *pw = w, *p0 = c0, *p1 = c1, *p2 = c2, *p3 = c3;
            int32_t left = size;
            __asm volatile(
                "1:\n\t"
                "vctp.8 %[left]\n\t"
                "vpstttt\n\t"
                "vldrbt.8 q0, [%[pw]], #16\n\t"
                "vldrbt.8 q1, [%[p0]], #16\n\t"
                "vldrbt.8 q2, [%[p1]], #16\n\t"
                "vldrbt.8 q3, [%[p2]], #16\n\t"
                "vpst\n\t"
                "vldrbt.8 q4, [%[p3]], #16\n\t"
                "vaddva.s8 %[sum], q0\n\t"
                "vmladava.s8 %[a0], q1, q0\n\t"
                "vmladava.s8 %[a1], q2, q0\n\t"
                "vmladava.s8 %[a2], q3, q0\n\t"
                "vmladava.s8 %[a3], q4, q0\n\t"
                "subs %[left], %[left], #16\n\t"
                "bgt 1b"
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [sum] "+r"(row_sum),
                  [left] "+r"(left), [pw] "+r"(pw), [p0] "+r"(p0), [p1] "+r"(p1), [p2] "+r"(p2), [p3] "+r"(p3)
                :
                : "q0", "q1", "q2", "q3", "q4", "cc", "memory");
        }
        int32x4_t acc = vdupq_n_s32(a0);
        acc = vsetq_lane_s32(a1, acc, 1);
        acc = vsetq_lane_s32(a2, acc, 2);
        acc = vsetq_lane_s32(a3, acc, 3);
        acc = vaddq_n_s32(acc, (bias != NULL ? bias[oc] : 0) + p->input_offset * row_sum);
        vstrbq_scatter_offset_s32(out + oc, offsets, zoedge_requantize_mve(acc, p->multiplier[oc], p->shift[oc],
                                                                           p->output_offset, act_min, act_max));
    }
}

/* Column j of the four at `cols`: the window of output position (oy, ox) as stored, a padded tap holding
 * the input zero point (so that with the offset it contributes 0). */
static void fill_column(int8_t *col, const zoedge_conv_params *p, const int8_t *input, int32_t oy, int32_t ox)
{
    const int32_t in_c = p->in_c;
    const int8_t pad = (int8_t)(-p->input_offset);
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = y0 + ky * p->dilation_h;
        for (int32_t kx = 0; kx < p->kernel_w; ++kx, col += in_c) {
            const int32_t ix = x0 + kx * p->dilation_w;
            if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w) {
                memcpy(col, input + (iy * p->in_w + ix) * in_c, (size_t)in_c);
            } else {
                memset(col, pad, (size_t)in_c);
            }
        }
    }
}

/* The positions pos .. pos + 3 (the last one repeated past `positions`) as output offsets. */
ZOEDGE_INLINE uint32x4_t position_offsets(int32_t pos, int32_t positions, int32_t out_c, int32_t index[4])
{
    uint32_t lanes[4];
    for (int32_t j = 0; j < 4; ++j) {
        index[j] = pos + j < positions ? pos + j : positions - 1;
        lanes[j] = (uint32_t)((index[j] - pos) * out_c);
    }
    return vld1q_u32(lanes);
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    const int32_t stride = (size + 15) & ~15;
    int8_t *scratch_cols = (int8_t *)scratch;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 4) {
        int32_t index[4];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        const int8_t *cols[4];
        for (int32_t j = 0; j < 4; ++j) {
            cols[j] = scratch_cols + j * stride;
            if (j == 0 || index[j] != index[j - 1]) {
                fill_column(scratch_cols + j * stride, p, input, index[j] / p->out_w, index[j] % p->out_w);
            } else {
                cols[j] = cols[j - 1];
            }
        }
        columns_to_outputs(p, cols, filter, bias, size, output + pos * p->out_c, offsets);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    const int32_t size = p->in_c;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 4) {
        int32_t index[4];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        const int8_t *const cols[4] = {input + index[0] * size, input + index[1] * size, input + index[2] * size,
                                       input + index[3] * size};
        columns_to_outputs(p, cols, filter, bias, size, output + pos * p->out_c, offsets);
    }
}

#endif
