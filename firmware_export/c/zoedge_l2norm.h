/* zoedge_l2norm.h: L2_NORMALIZATION, int8 in and out (TFLM's reference_integer_ops::L2Normalization).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 * zo_edge/kernels/l2norm.py is the same arithmetic in numpy; the random op suite holds both to TFLM.
 *
 * Per row of `depth` values: acc = sum (x - zero point)^2 in int32 (no overflow for depth <= 2^16), its
 * inverse square root as a Q0.31 multiplier and shift (TFLM's GetInvSqrtQuantizedMultiplierExp: five
 * gemmlowp Newton-Raphson steps in Q3.28), then each output MultiplyByQuantizedMultiplier(x - zero point,
 * multiplier, shift + 7) clamped to int8. The output's quantisation is fixed at scale 1/128, zero point 0.
 * A row whose sum is 0 or 1 gets the multiplier 2^31 - 1 and shift 0, as in TFLM.
 */
#ifndef ZOEDGE_L2NORM_H
#define ZOEDGE_L2NORM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t rows, depth;       /* rows = the product of every dimension but the last */
    int32_t input_zero_point;
} zoedge_l2norm_params;

void zoedge_l2_normalization(const zoedge_l2norm_params *p, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* ZOEDGE_L2NORM_H */
