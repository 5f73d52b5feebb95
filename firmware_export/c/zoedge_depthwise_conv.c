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

/* MVE, any geometry with depth multiplier 1: four channels per vector (int8 loaded into int32 lanes),
 * each in-bounds tap one multiply and one add; requantised four channels at a time. */
static void depthwise_mve(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, int8_t *output)
{
    const int32_t channels = p->out_c;
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        int32_t ky_begin = 0, ky_end = p->kernel_h; /* the window rows inside the input */
        while (ky_begin < ky_end && y0 + ky_begin * p->dilation_h < 0) {
            ++ky_begin;
        }
        while (ky_end > ky_begin && y0 + (ky_end - 1) * p->dilation_h >= p->in_h) {
            --ky_end;
        }
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            int32_t kx_begin = 0, kx_end = p->kernel_w;
            while (kx_begin < kx_end && x0 + kx_begin * p->dilation_w < 0) {
                ++kx_begin;
            }
            while (kx_end > kx_begin && x0 + (kx_end - 1) * p->dilation_w >= p->in_w) {
                --kx_end;
            }
            int8_t *out = output + (oy * p->out_w + ox) * channels;
            for (int32_t c = 0; c < channels; c += 4) {
                const mve_pred16_t lanes = vctp32q((uint32_t)(channels - c));
                int32x4_t acc = bias != NULL ? vldrwq_z_s32(bias + c, lanes) : vdupq_n_s32(0);
                for (int32_t ky = ky_begin; ky < ky_end; ++ky) {
                    const int8_t *in = input + ((y0 + ky * p->dilation_h) * p->in_w + x0) * channels + c;
                    const int8_t *w = filter + ky * p->kernel_w * channels + c;
                    for (int32_t kx = kx_begin; kx < kx_end; ++kx) {
                        const int32x4_t x = vldrbq_z_s32(in + kx * p->dilation_w * channels, lanes);
                        const int32x4_t wk = vldrbq_z_s32(w + kx * channels, lanes);
                        acc = vaddq_s32(acc, vmulq_s32(vaddq_n_s32(x, p->input_offset), wk));
                    }
                }
                const int32x4_t v = zoedge_requantize_mve_lanes(acc, vldrwq_z_s32(p->multiplier + c, lanes),
                                                                vldrwq_z_s32(p->shift + c, lanes), p->output_offset,
                                                                act_min, act_max);
                vstrbq_p_s32(out + c, v, lanes);
            }
        }
    }
}

#endif

void zoedge_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
#if ZOEDGE_ISA == ZOEDGE_ISA_MVE
    if (p->depth_multiplier == 1) {
        depthwise_mve(p, input, filter, bias, output);
        return;
    }
#endif
    zoedge_ref_depthwise_conv_2d(p, input, filter, bias, output);
}

#if ZOEDGE_ISA == ZOEDGE_ISA_DSP

ZOEDGE_INLINE int32_t pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

ZOEDGE_INLINE int8_t requantize_channel(int32_t acc, int fast, int32_t m2, int32_t r_minus_1, int32_t offset2,
                                        const zoedge_conv_params *p, int32_t c)
{
    if (fast) {
        return (int8_t)zoedge_clamp(zoedge_requantize_negative_shift(acc, m2, r_minus_1, offset2), p->act_min,
                                    p->act_max);
    }
    return zoedge_requantize_ref(acc, p->multiplier[c], p->shift[c], p->output_offset, p->act_min, p->act_max);
}

void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t channels = p->out_c;
    const int32_t plane_h = (p->out_h - 1) * p->stride_h + 3;
    const int32_t plane_w = ((p->out_w - 1) * p->stride_w + 3 + 1) & ~1; /* even: rows stay word aligned */
    int16_t *plane = (int16_t *)scratch;
    const int fast = zoedge_all_shifts_negative(p->shift, channels);
    const int32_t offset2 = 2 * p->output_offset + 1;
    /* the plane's window onto the input: rows [y_begin, y_end) and columns [x_begin, x_end) */
    const int32_t y_begin = p->pad_top, x_begin = p->pad_left;
    const int32_t y_end = p->pad_top + p->in_h < plane_h ? p->pad_top + p->in_h : plane_h;
    const int32_t x_end = p->pad_left + p->in_w < plane_w ? p->pad_left + p->in_w : plane_w;
    for (int32_t i = 0; i < plane_h * plane_w; ++i) {
        plane[i] = 0;
    }
    for (int32_t c = 0; c < channels; ++c) {
        for (int32_t py = y_begin; py < y_end; ++py) {
            const int8_t *src = input + ((py - p->pad_top) * p->in_w + (x_begin - p->pad_left)) * channels + c;
            int16_t *dst = plane + py * plane_w;
            for (int32_t px = x_begin; px < x_end; ++px, src += channels) {
                dst[px] = (int16_t)(*src + p->input_offset);
            }
        }
        const int8_t *w = filter + c;
        const int32_t w01_0 = pack16(w[0], w[channels]), w12_0 = pack16(w[channels], w[2 * channels]);
        const int32_t w01_1 = pack16(w[3 * channels], w[4 * channels]), w12_1 = pack16(w[4 * channels], w[5 * channels]);
        const int32_t w01_2 = pack16(w[6 * channels], w[7 * channels]), w12_2 = pack16(w[7 * channels], w[8 * channels]);
        const int32_t b = bias != NULL ? bias[c] : 0;
        const int32_t m2 = (int32_t)((uint32_t)p->multiplier[c] << 1), r_minus_1 = ~p->shift[c];
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int16_t *row = plane + oy * p->stride_h * plane_w;
            int8_t *out = output + oy * p->out_w * channels + c;
            int32_t ox = 0;
            if (p->stride_w == 1) {
                for (; ox + 1 < p->out_w; ox += 2, out += 2 * channels) {
                    const int16_t *r0 = row + ox, *r1 = r0 + plane_w, *r2 = r1 + plane_w;
                    const int32_t a0 = zoedge_read_word(r0), b0 = zoedge_read_word(r0 + 2);
                    const int32_t a1 = zoedge_read_word(r1), b1 = zoedge_read_word(r1 + 2);
                    const int32_t a2 = zoedge_read_word(r2), b2 = zoedge_read_word(r2 + 2);
                    int32_t even = __smlad(a0, w01_0, b), odd = __smlad(b0, w12_0, b);
                    even = __smlabt(b0, w12_0, even);
                    odd = __smlatb(a0, w01_0, odd);
                    even = __smlad(a1, w01_1, even);
                    odd = __smlad(b1, w12_1, odd);
                    even = __smlabt(b1, w12_1, even);
                    odd = __smlatb(a1, w01_1, odd);
                    even = __smlad(a2, w01_2, even);
                    odd = __smlad(b2, w12_2, odd);
                    even = __smlabt(b2, w12_2, even);
                    odd = __smlatb(a2, w01_2, odd);
                    out[0] = requantize_channel(even, fast, m2, r_minus_1, offset2, p, c);
                    out[channels] = requantize_channel(odd, fast, m2, r_minus_1, offset2, p, c);
                }
            }
            for (; ox < p->out_w; ++ox, out += channels) {
                const int16_t *r0 = row + ox * p->stride_w, *r1 = r0 + plane_w, *r2 = r1 + plane_w;
                int32_t acc = __smlad(zoedge_read_word(r0), w01_0, b);
                acc = __smlabt(zoedge_read_word(r0 + 2), w12_0, acc);
                acc = __smlad(zoedge_read_word(r1), w01_1, acc);
                acc = __smlabt(zoedge_read_word(r1 + 2), w12_1, acc);
                acc = __smlad(zoedge_read_word(r2), w01_2, acc);
                acc = __smlabt(zoedge_read_word(r2 + 2), w12_2, acc);
                out[0] = requantize_channel(acc, fast, m2, r_minus_1, offset2, p, c);
            }
        }
    }
}

#else

void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch)
{
    zoedge_depthwise_conv_2d(p, input, filter, bias, output, scratch);
}

#endif
