/* zoedge_mul.c: MUL (zoedge_kernels.h), with broadcasting.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * A Keras BatchNormalization that cannot fold into the layer before it (a ReLU in between) converts to
 * MUL and ADD by per-channel constants; both broadcast along the channels' rows.
 *
 * DSP (Cortex-M4/M7/M33): the offsets added to two values at once (SADD16 on halfword pairs), SMLABB
 * and SMLATT (adding 0) for the two products, the short requantisation when the shift is negative. MVE (Cortex-M55):
 * four products per vector, requantised in int32 lanes.
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_REF

void zoedge_mul(const zoedge_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch)
{
    (void)scratch;
    zoedge_ref_mul(p, input1, input2, output);
}

#else

ZOEDGE_INLINE int8_t output_of(const zoedge_mul_params *p, int32_t product)
{
    return zoedge_requantize_ref(product, p->output_multiplier, p->output_shift, p->output_offset, p->act_min,
                                 p->act_max);
}

static void mul_row_scalar(const zoedge_mul_params *p, const int8_t *input1, int32_t stride1, const int8_t *input2,
                           int32_t stride2, int8_t *output, int32_t n)
{
    for (int32_t i = 0; i < n; ++i) {
        output[i] = output_of(p, (input1[i * stride1] + p->input1_offset) * (input2[i * stride2] + p->input2_offset));
    }
}

#if ZOEDGE_ISA == ZOEDGE_ISA_DSP

ZOEDGE_INLINE int32_t pair(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

static void mul_row(const void *params, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const zoedge_mul_params *p = (const zoedge_mul_params *)params;
    (void)scratch;
    if (stride1 != 1 || stride2 != 1 || p->output_shift >= 0) {
        mul_row_scalar(p, input1, stride1, input2, stride2, output, n);
        return;
    }
    const int32_t o1 = pair(p->input1_offset, p->input1_offset), o2 = pair(p->input2_offset, p->input2_offset);
    const int32_t m2 = (int32_t)((uint32_t)p->output_multiplier << 1), r_minus_1 = ~p->output_shift;
    const int32_t offset2 = 2 * p->output_offset + 1, narrow = zoedge_act_narrower_than_int8(p->act_min, p->act_max);
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const int32_t a = __sadd16(pair(input1[i], input1[i + 1]), o1), b = __sadd16(pair(input2[i], input2[i + 1]), o2);
        int32_t v0 = zoedge_requantize_to_int8(__smlabb(a, b, 0), m2, r_minus_1, offset2);
        int32_t v1 = zoedge_requantize_to_int8(__smlatt(a, b, 0), m2, r_minus_1, offset2);
        if (narrow) {
            v0 = zoedge_clamp(v0, p->act_min, p->act_max);
            v1 = zoedge_clamp(v1, p->act_min, p->act_max);
        }
        output[i] = (int8_t)v0;
        output[i + 1] = (int8_t)v1;
    }
    mul_row_scalar(p, input1 + i, 1, input2 + i, 1, output + i, n - i);
}

#else /* ZOEDGE_ISA_MVE */

ZOEDGE_INLINE int32x4_t mul_lanes(const zoedge_mul_params *p, int32x4_t a, int32x4_t b, int32x4_t act_min,
                                  int32x4_t act_max)
{
    const int32x4_t product = vmulq_s32(vaddq_n_s32(a, p->input1_offset), vaddq_n_s32(b, p->input2_offset));
    return zoedge_requantize_mve(product, p->output_multiplier, p->output_shift, p->output_offset, act_min, act_max);
}

static void mul_row(const void *params, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const zoedge_mul_params *p = (const zoedge_mul_params *)params;
    (void)scratch;
    if (stride1 != 1 || stride2 != 1) {
        mul_row_scalar(p, input1, stride1, input2, stride2, output, n);
        return;
    }
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vstrbq_s32(output + i, mul_lanes(p, vldrbq_s32(input1 + i), vldrbq_s32(input2 + i), act_min, act_max));
    }
    if (i < n) {
        const mve_pred16_t lanes = vctp32q((uint32_t)(n - i));
        vstrbq_p_s32(output + i, mul_lanes(p, vldrbq_z_s32(input1 + i, lanes), vldrbq_z_s32(input2 + i, lanes), act_min,
                                           act_max), lanes);
    }
}

#endif

void zoedge_mul(const zoedge_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch)
{
    zoedge_for_each_row(p->shape, p->input1_strides, p->input2_strides, mul_row, p, input1, input2, output, scratch);
}

#endif
