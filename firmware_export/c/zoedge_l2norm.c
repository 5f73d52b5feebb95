/* zoedge_l2norm.c: L2_NORMALIZATION; see zoedge_l2norm.h. */
#include "zoedge_l2norm.h"

#include "zoedge_kernels_internal.h"

#define L2NORM_OUTPUT_SCALE_BITS 7  /* outputs in steps of 1/128 */

static int32_t l2norm_count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    while (n < 32 && !(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* TFLM's GetInvSqrtQuantizedMultiplierExp with reverse_shift -1: 1/sqrt(input) as (multiplier, shift). */
static void l2norm_inv_sqrt(int32_t input, int32_t *multiplier, int32_t *shift)
{
    if (input <= 1) {
        *multiplier = INT32_MAX;
        *shift = 0;
        return;
    }
    int32_t out_shift = 11;
    while (input >= (1 << 29)) {
        input /= 4;
        ++out_shift;
    }
    const int32_t max_left_shift_bits = l2norm_count_leading_zeros((uint32_t)input) - 1;
    const int32_t left_shift_bit_pairs = max_left_shift_bits / 2 - 1;
    out_shift -= left_shift_bit_pairs;
    input = (int32_t)((uint32_t)input << (2 * left_shift_bit_pairs));  /* now in [2^27, 2^29) */
    /* Q3.28 throughout: x <- 1.5 x - (input / 2) x^3, five times from x = 1 */
    const int32_t half_input = zoedge_rounding_divide_by_pot(input >> 1, 1);
    const int32_t half_three = (1 << 28) + (1 << 27);
    int32_t x = 1 << 28;
    for (int32_t i = 0; i < 5; ++i) {
        const int32_t x2 = zoedge_saturating_rounding_doubling_high_mul(x, x);
        const int32_t x3 = zoedge_saturating_left_shift(zoedge_saturating_rounding_doubling_high_mul(x2, x), 6);
        const int32_t step = zoedge_saturating_rounding_doubling_high_mul(half_three, x)
                             - zoedge_saturating_rounding_doubling_high_mul(half_input, x3);
        x = zoedge_saturating_left_shift(step, 3);
    }
    x = zoedge_saturating_rounding_doubling_high_mul(x, 1518500250);  /* times sqrt(2)/2 in Q0.31 */
    if (out_shift < 0) {
        x = (int32_t)((uint32_t)x << -out_shift);
        out_shift = 0;
    }
    *multiplier = x;
    *shift = -out_shift;
}

void zoedge_l2_normalization(const zoedge_l2norm_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *in = input + r * p->depth;
        int8_t *out = output + r * p->depth;
        int32_t acc = 0;
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t v = in[i] - p->input_zero_point;
            acc += v * v;
        }
        int32_t multiplier, shift;
        l2norm_inv_sqrt(acc, &multiplier, &shift);
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t v = zoedge_multiply_by_quantized_multiplier_ref(in[i] - p->input_zero_point, multiplier,
                                                                         shift + L2NORM_OUTPUT_SCALE_BITS);
            out[i] = (int8_t)zoedge_clamp(v, -128, 127);
        }
    }
}
