/* zoedge_kernels_internal.h: requantisation shared by the kernel files; not part of the library's API.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * zoedge_multiply_by_quantized_multiplier_ref is TFLM's MultiplyByQuantizedMultiplier written as gemmlowp
 * writes it, the specification. The DSP and MVE forms below compute the same int32 with fewer
 * instructions; why they are equal is written next to each.
 */
#ifndef ZOEDGE_KERNELS_INTERNAL_H
#define ZOEDGE_KERNELS_INTERNAL_H

#include <stdint.h>

#include "zoedge_kernels.h"

#if defined(__GNUC__) || defined(__clang__)
#define ZOEDGE_INLINE static inline __attribute__((always_inline))
#else
#define ZOEDGE_INLINE static inline
#endif

/* gemmlowp's SaturatingRoundingDoublingHighMul: round(a * b / 2^31) from a 64-bit product, the
 * nudge making the truncating division round half away from zero. The one product that does not
 * fit, INT32_MIN * INT32_MIN, saturates. */
ZOEDGE_INLINE int32_t zoedge_saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

/* gemmlowp's SaturatingRoundingMultiplyByPOT for a positive exponent: a saturating left shift
 * (SOFTMAX's and L2_NORMALIZATION's fixed point). */
ZOEDGE_INLINE int32_t zoedge_saturating_left_shift(int32_t x, int32_t exponent)
{
    const int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero. */
ZOEDGE_INLINE int32_t zoedge_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLM's MultiplyByQuantizedMultiplier: x * multiplier * 2^shift, multiplier in Q0.31. A positive
 * shift is applied before the multiply (wrapping as int32 does), a negative one after it, each
 * step rounding on its own ("double rounding", TFLM's default build). */
ZOEDGE_INLINE int32_t zoedge_multiply_by_quantized_multiplier_ref(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left_shift = shift > 0 ? shift : 0;
    const int32_t right_shift = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return zoedge_rounding_divide_by_pot(zoedge_saturating_rounding_doubling_high_mul(shifted, multiplier),
                                         right_shift);
}

/* One innermost row of a broadcast binary op (zoedge_add, zoedge_mul): n outputs from input 1 read
 * stride1 apart and input 2 read stride2 apart (0: one value for the whole row). */
typedef void (*zoedge_row_fn)(const void *params, const int8_t *input1, int32_t stride1, const int8_t *input2,
                              int32_t stride2, int8_t *output, int32_t n, void *scratch);

/* Runs `row` over every innermost row of the broadcast shape (zoedge_kernels.h, ADD and MUL). */
void zoedge_for_each_row(const int32_t shape[4], const int32_t strides1[4], const int32_t strides2[4],
                         zoedge_row_fn row, const void *params, const int8_t *input1, const int8_t *input2,
                         int8_t *output, void *scratch);

ZOEDGE_INLINE int32_t zoedge_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* The tail every conv-like op shares: rescale the int32 accumulator, add the output zero point,
 * clamp to the fused activation. */
ZOEDGE_INLINE int8_t zoedge_requantize_ref(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                           int32_t act_min, int32_t act_max)
{
    return (int8_t)zoedge_clamp(zoedge_multiply_by_quantized_multiplier_ref(acc, multiplier, shift) + output_offset,
                                act_min, act_max);
}

/* 1 when every shift of `shifts[0..n)` is negative: the layer can use the short requantisation below
 * (zoedge_requantize_negative_shift). A negative shift also rules out the zero multiplier, which
 * QuantizeMultiplier pairs with shift 0. */
ZOEDGE_INLINE int zoedge_all_shifts_negative(const int32_t *shifts, int32_t n)
{
    int32_t any = 0;
    for (int32_t i = 0; i < n; ++i) {
        any |= ~shifts[i]; /* the sign bit of ~s is set when s >= 0 */
    }
    return any >= 0;
}

#if ZOEDGE_ISA != ZOEDGE_ISA_REF
#include <arm_acle.h>
#include <string.h>

/* Four int8 values as one word; any alignment (the cores with DSP or MVE load unaligned words). */
ZOEDGE_INLINE int32_t zoedge_read_s8x4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

ZOEDGE_INLINE int32_t zoedge_read_word(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

ZOEDGE_INLINE void zoedge_write_word(void *p, int32_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* SXTB16 of the word rotated right by 8: bytes 1 and 3 sign-extended to two int16 halves (arm_acle.h has
 * __sxtb16 but no rotation). */
ZOEDGE_INLINE int32_t zoedge_sxtb16_ror8(int32_t x)
{
    int32_t out;
    __asm("sxtb16 %0, %1, ror #8" : "=r"(out) : "r"(x));
    return out;
}

/* SXTAB16 of the word rotated right by 8: a's halves plus bytes 1 and 3 of x, sign-extended. */
ZOEDGE_INLINE int32_t zoedge_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t out;
    __asm("sxtab16 %0, %1, %2, ror #8" : "=r"(out) : "r"(a), "r"(x));
    return out;
}

/* SMMLAR (ARMv7E-M, ARMv8-M Mainline with DSP, ARMv8.1-M): (a * b + (acc << 32) + 2^31) >> 32. */
ZOEDGE_INLINE int32_t zoedge_smmlar(int32_t a, int32_t b, int32_t acc)
{
    int32_t out;
    __asm("smmlar %0, %1, %2, %3" : "=r"(out) : "r"(a), "r"(b), "r"(acc));
    return out;
}

/* MultiplyByQuantizedMultiplier for a negative shift (r = -shift >= 1, no left shift) plus the output
 * zero point, before the clamp; m2 = (int32)(2 * multiplier) and r_minus_1 = ~shift = r - 1 (precomputed
 * per channel), offset2 = 2 * output_offset + 1. Why it is TFLM's int32, for every int32 x:
 *   - multiplier M is in [2^30, 2^31), so m2 = 2M - 2^32 and x * m2 + x * 2^32 = 2xM:
 *     SMMLAR(x, m2, x) = (2xM + 2^31) >> 32 = floor((xM + 2^30) / 2^31), which is gemmlowp's
 *     SaturatingRoundingDoublingHighMul (its nudged, truncating division equals this floor, and the
 *     saturating case needs M = INT32_MIN);
 *   - RoundingDivideByPOT(y, r) = floor((y - [y < 0] + 2^(r-1)) / 2^r), and using [x < 0] for [y < 0]
 *     changes nothing: they differ only where y = 0, and both give 0 there;
 *   - floor((q + 2^(r-1)) / 2^r) = ((q >> (r-1)) + 1) >> 1, which cannot overflow; adding the zero point
 *     inside the last halving, saturating (a saturated value clamps to -128 or 127 all the same), gives
 *     the output before the activation clamp. */
ZOEDGE_INLINE int32_t zoedge_requantize_negative_shift(int32_t x, int32_t m2, int32_t r_minus_1, int32_t offset2)
{
    const int32_t q = zoedge_smmlar(x, m2, x) + (x >> 31);
    return __qadd(q >> r_minus_1, offset2) >> 1;
}

/* The same, saturated to int8 in the last halving: SSAT with ASR #1 is the halving and the clamp to
 * [-128, 127] in one instruction (saturating q >> 1 is saturating the output: the output is q >> 1).
 * Six instructions with the store; a fused activation narrower than int8 clamps once more after it. */
ZOEDGE_INLINE int32_t zoedge_requantize_to_int8(int32_t x, int32_t m2, int32_t r_minus_1, int32_t offset2)
{
    const int32_t q = __qadd((zoedge_smmlar(x, m2, x) + (x >> 31)) >> r_minus_1, offset2);
    int32_t out;
    __asm("ssat %0, #8, %1, asr #1" : "=r"(out) : "r"(q));
    return out;
}

/* One channel's requantisation constants for zoedge_requantize_to_int8. */
typedef struct {
    int32_t m2, r_minus_1;
} zoedge_channel_quant;

ZOEDGE_INLINE zoedge_channel_quant zoedge_channel_quant_of(const int32_t *multiplier, const int32_t *shift, int32_t c)
{
    zoedge_channel_quant q;
    q.m2 = (int32_t)((uint32_t)multiplier[c] << 1);
    q.r_minus_1 = ~shift[c];
    return q;
}

/* 1 when the fused activation clamps inside [-128, 127]: the output needs a clamp after the SSAT. */
ZOEDGE_INLINE int zoedge_act_narrower_than_int8(int32_t act_min, int32_t act_max)
{
    return act_min > -128 || act_max < 127;
}
#endif

#if ZOEDGE_ISA == ZOEDGE_ISA_MVE
#include <arm_mve.h>

/* TFLM's MultiplyByQuantizedMultiplier on four lanes, one multiplier and shift for all of them, plus the
 * output offset and the activation clamp (as CMSIS-NN's arm_requantize_mve, our own code):
 *   - VSHL by a register wraps, as TFLM's int32 x * (1 << left_shift) does;
 *   - VQRDMULH = saturate((2ab + 2^31) >> 32) = gemmlowp's SaturatingRoundingDoublingHighMul (the
 *     nudged truncating division is this floor; both saturate exactly at INT32_MIN * INT32_MIN);
 *   - RoundingDivideByPOT(x, r) = (x - [x < 0] + 2^(r-1)) >> r: VRSHL by -r adds 2^(r-1) and shifts
 *     without overflow; subtracting 1 first from negative x saturates only at INT32_MIN, which no high
 *     multiply with a multiplier below 2^31 returns. */
ZOEDGE_INLINE int32x4_t zoedge_requantize_mve(int32x4_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                              int32x4_t act_min, int32x4_t act_max)
{
    int32x4_t v = vqrdmulhq_n_s32(vshlq_r_s32(acc, shift > 0 ? shift : 0), multiplier);
    if (shift < 0) {
        v = vrshlq_n_s32(vqaddq_s32(v, vshrq_n_s32(v, 31)), shift);
    }
    return vminq_s32(vmaxq_s32(vaddq_n_s32(v, output_offset), act_min), act_max);
}

/* One channel's multiplier and shift, for zoedge_requantize_mve. */
typedef struct {
    int32_t multiplier, shift;
} zoedge_channel_quant_mve;

/* The same with one (multiplier, shift) pair per lane: left = max(shift, 0), and -r = min(shift, 0), whose
 * sign bit masks the negative-value fixup to the lanes that shift right. */
ZOEDGE_INLINE int32x4_t zoedge_requantize_mve_lanes(int32x4_t acc, int32x4_t multiplier, int32x4_t shift,
                                                    int32_t output_offset, int32x4_t act_min, int32x4_t act_max)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t minus_right = vminq_s32(shift, zero);
    int32x4_t v = vqrdmulhq_s32(vshlq_s32(acc, vmaxq_s32(shift, zero)), multiplier);
    v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, minus_right), 31));
    v = vrshlq_s32(v, minus_right);
    return vminq_s32(vmaxq_s32(vaddq_n_s32(v, output_offset), act_min), act_max);
}
#endif

#endif /* ZOEDGE_KERNELS_INTERNAL_H */
