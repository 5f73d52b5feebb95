/* zoedge_pool.c: MEAN and AVERAGE_POOL_2D (zoedge_kernels.h); MAX_POOL_2D is zoedge_kernels_ref.c's.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * Both sum int8 values over positions for every channel, then rescale (MEAN: TFLM's multiplier) or
 * divide by the count (AVERAGE_POOL_2D: rounding half away from zero). The sums are the reference's in
 * another order. DSP (Cortex-M4/M7/M33): four channels per word, SXTAB16 adding two of them at once into
 * int16 halves, at most 255 positions at a time (255 * 128 < 2^15), then widened into int32 totals. MVE
 * (Cortex-M55): sixteen channels at a time, int8 loaded into four int32 vectors.
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_REF

void zoedge_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output)
{
    zoedge_ref_mean(p, input, output);
}

void zoedge_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output)
{
    zoedge_ref_average_pool_2d(p, input, output);
}

#else

#if ZOEDGE_ISA == ZOEDGE_ISA_DSP
#define GROUP 4

/* sums[0..3] = the sums over `count` positions (`step` bytes apart) of four neighbouring channels. */
ZOEDGE_INLINE void group_sums(const int8_t *x, int32_t count, int32_t step, int32_t sums[GROUP])
{
    int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    while (count > 0) {
        const int32_t n = count < 255 ? count : 255;
        int32_t even = 0, odd = 0; /* channels 0 and 2, 1 and 3, in int16 halves */
        for (int32_t k = 0; k < n; ++k, x += step) {
            const int32_t v = zoedge_read_s8x4(x);
            even = __sxtab16(even, v);
            odd = zoedge_sxtab16_ror8(odd, v);
        }
        t0 += (int16_t)even;
        t2 += even >> 16;
        t1 += (int16_t)odd;
        t3 += odd >> 16;
        count -= n;
    }
    sums[0] = t0;
    sums[1] = t1;
    sums[2] = t2;
    sums[3] = t3;
}

#else /* ZOEDGE_ISA_MVE */
#define GROUP 16

/* sums[0..15] = the sums over `count` positions (`step` bytes apart) of sixteen neighbouring channels
 * (the first `channels` of them; the rest 0). */
ZOEDGE_INLINE void group_sums(const int8_t *x, int32_t count, int32_t step, int32_t channels, int32_t sums[GROUP])
{
    const mve_pred16_t p0 = vctp32q((uint32_t)channels), p1 = vctp32q((uint32_t)(channels > 4 ? channels - 4 : 0));
    const mve_pred16_t p2 = vctp32q((uint32_t)(channels > 8 ? channels - 8 : 0));
    const mve_pred16_t p3 = vctp32q((uint32_t)(channels > 12 ? channels - 12 : 0));
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    if (channels >= GROUP) {
        for (int32_t k = 0; k < count; ++k, x += step) {
            a0 = vaddq_s32(a0, vldrbq_s32(x));
            a1 = vaddq_s32(a1, vldrbq_s32(x + 4));
            a2 = vaddq_s32(a2, vldrbq_s32(x + 8));
            a3 = vaddq_s32(a3, vldrbq_s32(x + 12));
        }
    } else {
        for (int32_t k = 0; k < count; ++k, x += step) {
            a0 = vaddq_s32(a0, vldrbq_z_s32(x, p0));
            a1 = vaddq_s32(a1, vldrbq_z_s32(x + 4, p1));
            a2 = vaddq_s32(a2, vldrbq_z_s32(x + 8, p2));
            a3 = vaddq_s32(a3, vldrbq_z_s32(x + 12, p3));
        }
    }
    vst1q_s32(sums, a0);
    vst1q_s32(sums + 4, a1);
    vst1q_s32(sums + 8, a2);
    vst1q_s32(sums + 12, a3);
}
#endif

/* Channels c .. c + GROUP - 1 (those below `channels`) of `count` positions `step` bytes apart. */
ZOEDGE_INLINE void channel_sums(const int8_t *x, int32_t count, int32_t step, int32_t channels, int32_t sums[GROUP])
{
#if ZOEDGE_ISA == ZOEDGE_ISA_DSP
    if (channels >= GROUP) {
        group_sums(x, count, step, sums);
        return;
    }
    for (int32_t j = 0; j < channels; ++j) {
        int32_t s = 0;
        for (int32_t k = 0; k < count; ++k) {
            s += x[k * step + j];
        }
        sums[j] = s;
    }
#else
    group_sums(x, count, step, channels, sums);
#endif
}

void zoedge_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output)
{
    const int32_t inner = p->inner, count = p->count, correction = p->input_zero_point * count;
    const int32_t multiplier = p->multiplier, shift = p->shift, zero_point = p->output_zero_point;
    for (int32_t o = 0; o < p->outer; ++o) {
        const int8_t *block = input + o * count * inner;
        int8_t *out = output + o * inner;
        for (int32_t c = 0; c < inner; c += GROUP) {
            int32_t sums[GROUP];
            const int32_t n = inner - c < GROUP ? inner - c : GROUP;
            channel_sums(block + c, count, inner, n, sums);
            for (int32_t j = 0; j < n; ++j) {
                out[c + j] = zoedge_requantize_ref(sums[j] - correction, multiplier, shift, zero_point, -128, 127);
            }
        }
    }
}

/* TFLM's rounding division of an average pool's sum by its count (half away from zero). */
ZOEDGE_INLINE int32_t average(int32_t sum, int32_t count)
{
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

void zoedge_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output)
{
    const int32_t channels = p->channels, act_min = p->act_min, act_max = p->act_max;
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ky_start = y0 < 0 ? -y0 : 0;
        const int32_t ky_end = p->in_h - y0 < p->filter_h ? p->in_h - y0 : p->filter_h;
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t kx_start = x0 < 0 ? -x0 : 0;
            const int32_t kx_end = p->in_w - x0 < p->filter_w ? p->in_w - x0 : p->filter_w;
            const int32_t rows = ky_end - ky_start, columns = kx_end - kx_start, count = rows * columns;
            const int8_t *window = input + ((y0 + ky_start) * p->in_w + (x0 + kx_start)) * channels;
            int8_t *out = output + (oy * p->out_w + ox) * channels;
            for (int32_t c = 0; c < channels; c += GROUP) {
                const int32_t n = channels - c < GROUP ? channels - c : GROUP;
                int32_t sums[GROUP] = {0};
                if (columns == p->in_w) { /* whole input rows: one run of positions (global pooling) */
                    channel_sums(window + c, count, channels, n, sums);
                }
                for (int32_t r = 0; r < rows && columns != p->in_w; ++r) { /* a window row: `columns` positions */
                    int32_t row[GROUP];
                    channel_sums(window + r * p->in_w * channels + c, columns, channels, n, row);
                    for (int32_t j = 0; j < n; ++j) {
                        sums[j] += row[j];
                    }
                }
                for (int32_t j = 0; j < n; ++j) {
                    out[c + j] = (int8_t)zoedge_clamp(average(sums[j], count), act_min, act_max);
                }
            }
        }
    }
}

#endif
