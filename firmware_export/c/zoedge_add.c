/* zoedge_add.c: ADD (zoedge_kernels.h).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * DSP and MVE builds: TFLM's three MultiplyByQuantizedMultiplier per element with SMMLAR
 * (zoedge_kernels_internal.h). ADD's multipliers are all below one: a shift of 0 needs only the
 * doubling high multiply, a negative one the rounding shift after it as well.
 */
#include "zoedge_kernels.h"

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_REF

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    zoedge_ref_add(p, input1, input2, output);
}

#else

/* MultiplyByQuantizedMultiplier for shift <= 0 (m2 = 2 * multiplier as int32, r_minus_1 = ~shift). */
ZOEDGE_INLINE int32_t scale_below_one(int32_t x, int32_t m2, int32_t shift, int32_t r_minus_1)
{
    const int32_t high = zoedge_smmlar(x, m2, x);
    if (shift == 0) {
        return high;
    }
    return (((high + (x >> 31)) >> r_minus_1) + 1) >> 1;
}

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    if (p->input1_shift > 0 || p->input2_shift > 0 || p->output_shift > 0 || p->input1_multiplier == 0 ||
        p->input2_multiplier == 0 || p->output_multiplier == 0) {
        zoedge_ref_add(p, input1, input2, output); /* not what TFLM's ADD preparation makes */
        return;
    }
    const int32_t m1 = (int32_t)((uint32_t)p->input1_multiplier << 1), s1 = p->input1_shift, r1 = ~s1;
    const int32_t m2 = (int32_t)((uint32_t)p->input2_multiplier << 1), s2 = p->input2_shift, r2 = ~s2;
    const int32_t mo = (int32_t)((uint32_t)p->output_multiplier << 1), so = p->output_shift, ro = ~so;
    const int32_t off1 = p->input1_offset, off2 = p->input2_offset, zp = p->output_offset;
    const int32_t lift = p->left_shift;
    for (int32_t i = 0; i < p->size; ++i) {
        const int32_t a = scale_below_one((int32_t)((uint32_t)(input1[i] + off1) << lift), m1, s1, r1);
        const int32_t b = scale_below_one((int32_t)((uint32_t)(input2[i] + off2) << lift), m2, s2, r2);
        const int32_t out = scale_below_one(a + b, mo, so, ro) + zp;
        output[i] = (int8_t)zoedge_clamp(out, p->act_min, p->act_max);
    }
}

#endif
