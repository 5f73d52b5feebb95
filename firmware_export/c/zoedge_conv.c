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

/* The position of element k in a column: within each whole group of four, elements 1 and 2 swap. */
ZOEDGE_INLINE int32_t column_index(int32_t k, int32_t groups_end)
{
    return k < groups_end ? ((k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)) : k;
}

/* n input values (n a multiple of 4, starting a group) into the column at `dst`, offset added. */
ZOEDGE_INLINE void expand_groups(int16_t *dst, const int8_t *src, int32_t n, int32_t offset2)
{
    for (int32_t k = 0; k < n; k += 4) {
        const int32_t x = zoedge_read_s8x4(src + k);
        zoedge_write_word(dst + k, __sxtab16(offset2, x));           /* elements 0, 2 */
        zoedge_write_word(dst + k + 2, zoedge_sxtab16_ror8(offset2, x)); /* elements 1, 3 */
    }
}

/* One column: the kernel_h x kernel_w x in_c window of output position (oy, ox), k = (ky, kx, ic). */
static void fill_column(int16_t *col, const zoedge_conv_params *p, const int8_t *input, int32_t oy, int32_t ox)
{
    const int32_t in_c = p->in_c;
    const int32_t size = p->kernel_h * p->kernel_w * in_c;
    const int32_t groups_end = size & ~3;
    const int32_t offset2 = (int32_t)(((uint32_t)p->input_offset & 0xFFFFu) | ((uint32_t)p->input_offset << 16));
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    int32_t k = 0;
    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = y0 + ky * p->dilation_h;
        for (int32_t kx = 0; kx < p->kernel_w; ++kx, k += in_c) {
            const int32_t ix = x0 + kx * p->dilation_w;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *pixel = input + (iy * p->in_w + ix) * in_c;
            if ((in_c & 3) == 0 && inside) {
                expand_groups(col + k, pixel, in_c, offset2);
            } else {
                for (int32_t c = 0; c < in_c; ++c) {
                    col[column_index(k + c, groups_end)] = (int16_t)(inside ? pixel[c] + p->input_offset : 0);
                }
            }
        }
    }
}

/* The 1x1 path's column: one pixel, offset added. */
static void fill_pixel_column(int16_t *col, const zoedge_conv_params *p, const int8_t *pixel)
{
    const int32_t in_c = p->in_c;
    const int32_t groups_end = in_c & ~3;
    const int32_t offset2 = (int32_t)(((uint32_t)p->input_offset & 0xFFFFu) | ((uint32_t)p->input_offset << 16));
    expand_groups(col, pixel, groups_end, offset2);
    for (int32_t c = groups_end; c < in_c; ++c) {
        col[c] = (int16_t)(pixel[c] + p->input_offset);
    }
}

/* acc[2][2] += columns a, b (int16, layout above) times filter rows w0, w1 over `size` elements. */
ZOEDGE_INLINE void dot_2x2(const int16_t *a, const int16_t *b, const int8_t *w0, const int8_t *w1, int32_t size,
                           int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    const int32_t groups_end = size & ~3;
    int32_t k = 0;
    for (; k < groups_end; k += 4) {
        const int32_t wa = zoedge_read_s8x4(w0 + k);
        const int32_t wb = zoedge_read_s8x4(w1 + k);
        const int32_t wa02 = __sxtb16(wa), wa13 = zoedge_sxtb16_ror8(wa);
        const int32_t wb02 = __sxtb16(wb), wb13 = zoedge_sxtb16_ror8(wb);
        const int32_t ca02 = zoedge_read_word(a + k), ca13 = zoedge_read_word(a + k + 2);
        const int32_t cb02 = zoedge_read_word(b + k), cb13 = zoedge_read_word(b + k + 2);
        a0 = __smlad(wa02, ca02, a0);
        a0 = __smlad(wa13, ca13, a0);
        a1 = __smlad(wb02, ca02, a1);
        a1 = __smlad(wb13, ca13, a1);
        b0 = __smlad(wa02, cb02, b0);
        b0 = __smlad(wa13, cb13, b0);
        b1 = __smlad(wb02, cb02, b1);
        b1 = __smlad(wb13, cb13, b1);
    }
    for (; k < size; ++k) {
        a0 += w0[k] * a[k];
        a1 += w1[k] * a[k];
        b0 += w0[k] * b[k];
        b1 += w1[k] * b[k];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* Every output channel of one or two positions from their columns: out_a and out_b point at the
 * positions' first output channel (out_b NULL: one position, column b ignored). */
static void columns_to_outputs(const zoedge_conv_params *p, const int16_t *col_a, const int16_t *col_b,
                               const int8_t *filter, const int32_t *bias, int32_t size, int fast,
                               int8_t *out_a, int8_t *out_b)
{
    const int32_t offset2 = 2 * p->output_offset + 1;
    for (int32_t oc = 0; oc < p->out_c; oc += 2) {
        const int pair = oc + 1 < p->out_c;
        const int32_t oc1 = pair ? oc + 1 : oc; /* an odd last channel runs twice, its copy discarded */
        const int32_t bias0 = bias != NULL ? bias[oc] : 0, bias1 = bias != NULL ? bias[oc1] : 0;
        int32_t acc[4] = {bias0, bias1, bias0, bias1};
        dot_2x2(col_a, col_b, filter + oc * size, filter + oc1 * size, size, acc);
        const int32_t channels[2] = {oc, oc1};
        for (int32_t j = 0; j < 2; ++j) {
            if (j == 1 && !pair) {
                break;
            }
            const int32_t c = channels[j];
            if (fast) {
                const int32_t m2 = (int32_t)((uint32_t)p->multiplier[c] << 1);
                const int32_t r_minus_1 = ~p->shift[c];
                out_a[c] = (int8_t)zoedge_clamp(zoedge_requantize_negative_shift(acc[j], m2, r_minus_1, offset2),
                                                p->act_min, p->act_max);
                if (out_b != NULL) {
                    out_b[c] = (int8_t)zoedge_clamp(
                        zoedge_requantize_negative_shift(acc[2 + j], m2, r_minus_1, offset2), p->act_min, p->act_max);
                }
            } else {
                out_a[c] = zoedge_requantize_ref(acc[j], p->multiplier[c], p->shift[c], p->output_offset,
                                                 p->act_min, p->act_max);
                if (out_b != NULL) {
                    out_b[c] = zoedge_requantize_ref(acc[2 + j], p->multiplier[c], p->shift[c], p->output_offset,
                                                     p->act_min, p->act_max);
                }
            }
        }
    }
}

/* The scratch holds two columns of `size` int16, the second 8-byte aligned. */
ZOEDGE_INLINE int32_t column_stride(int32_t size)
{
    return (size + 3) & ~3;
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int16_t *col_a = (int16_t *)scratch;
    int16_t *col_b = col_a + column_stride(size);
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 2) {
        const int two = pos + 1 < positions;
        fill_column(col_a, p, input, pos / p->out_w, pos % p->out_w);
        if (two) {
            fill_column(col_b, p, input, (pos + 1) / p->out_w, (pos + 1) % p->out_w);
        }
        columns_to_outputs(p, col_a, two ? col_b : col_a, filter, bias, size, fast, output + pos * p->out_c,
                           two ? output + (pos + 1) * p->out_c : NULL);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int16_t *col_a = (int16_t *)scratch;
    int16_t *col_b = col_a + column_stride(size);
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += 2) {
        const int two = pos + 1 < positions;
        fill_pixel_column(col_a, p, input + pos * size);
        if (two) {
            fill_pixel_column(col_b, p, input + (pos + 1) * size);
        }
        columns_to_outputs(p, col_a, two ? col_b : col_a, filter, bias, size, fast, output + pos * p->out_c,
                           two ? output + (pos + 1) * p->out_c : NULL);
    }
}

#else /* ZOEDGE_ISA_MVE: not written yet, the reference loops */

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

#endif
