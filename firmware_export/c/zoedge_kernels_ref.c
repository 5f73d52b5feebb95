/* zoedge_kernels_ref.c: the reference kernels, TensorFlow Lite Micro's reference arithmetic as loops.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * These loops are the specification of every kernel path (zoedge_kernels.h) and the kernels of the
 * cores without DSP or MVE instructions (Cortex-M0+/M3) and of the host. They follow TFLM's reference
 * kernels (tensorflow/lite/kernels/internal/reference/) and its default double rounding, so outputs
 * match TFLM and the zo-edge simulator byte for byte. Two properties of the C implementation this relies
 * on, true of gcc, clang and the Arm compilers: `>>` of a negative int32 is an arithmetic shift, and
 * converting an out-of-range uint32 to int32 wraps (two's complement).
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

/* TFLM's MultiplyByQuantizedMultiplier (zoedge_requantize_ref in zoedge_kernels_internal.h). */
int32_t zoedge_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    return zoedge_multiply_by_quantized_multiplier_ref(x, multiplier, shift);
}

/* The 1x1 path of TFLM's ConvPerChannel (kernel 1x1, stride 1: no padding, out_h == in_h, out_w == in_w):
 * every output position is a dot product of one input pixel's channels with each filter row. */
void zoedge_ref_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                            const int32_t *bias, int8_t *output)
{
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; ++pos) {
        const int8_t *pixel = input + pos * p->in_c;
        for (int32_t oc = 0; oc < p->out_c; ++oc) {
            const int8_t *row = filter + oc * p->in_c;
            int32_t acc = 0;
            for (int32_t ic = 0; ic < p->in_c; ++ic) {
                acc += (int32_t)row[ic] * ((int32_t)pixel[ic] + p->input_offset);
            }
            if (bias != NULL) {
                acc += bias[oc];
            }
            output[pos * p->out_c + oc] =
                zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
        }
    }
}

/* TFLM's ConvPerChannel. */
void zoedge_ref_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output)
{
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            for (int32_t oc = 0; oc < p->out_c; ++oc) {
                int32_t acc = 0;
                for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = y0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue; /* padding contributes nothing */
                    }
                    for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = x0 + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        const int8_t *pixel = input + (iy * p->in_w + ix) * p->in_c;
                        const int8_t *taps = filter + ((oc * p->kernel_h + ky) * p->kernel_w + kx) * p->in_c;
                        for (int32_t ic = 0; ic < p->in_c; ++ic) {
                            acc += (int32_t)taps[ic] * ((int32_t)pixel[ic] + p->input_offset);
                        }
                    }
                }
                if (bias != NULL) {
                    acc += bias[oc];
                }
                output[(oy * p->out_w + ox) * p->out_c + oc] =
                    zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
            }
        }
    }
}

/* TFLM's DepthwiseConvPerChannel. */
void zoedge_ref_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output)
{
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            for (int32_t ic = 0; ic < p->in_c; ++ic) {
                for (int32_t m = 0; m < p->depth_multiplier; ++m) {
                    const int32_t oc = ic * p->depth_multiplier + m;
                    int32_t acc = 0;
                    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            const int32_t x = input[(iy * p->in_w + ix) * p->in_c + ic];
                            const int32_t w = filter[(ky * p->kernel_w + kx) * p->out_c + oc];
                            acc += w * (x + p->input_offset);
                        }
                    }
                    if (bias != NULL) {
                        acc += bias[oc];
                    }
                    output[(oy * p->out_w + ox) * p->out_c + oc] =
                        zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}

/* TFLM's FullyConnected (one multiplier) and FullyConnectedPerChannel (one per unit). */
void zoedge_ref_fully_connected(const zoedge_fully_connected_params *p, const int8_t *input,
                                const int8_t *filter, const int32_t *bias, int8_t *output)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *vector = input + r * p->depth;
        for (int32_t u = 0; u < p->units; ++u) {
            const int8_t *row = filter + u * p->depth;
            int32_t acc = 0;
            for (int32_t d = 0; d < p->depth; ++d) {
                acc += ((int32_t)row[d] + p->filter_offset) * ((int32_t)vector[d] + p->input_offset);
            }
            if (bias != NULL) {
                acc += bias[u];
            }
            const int32_t c = p->per_channel ? u : 0;
            output[r * p->units + u] =
                zoedge_requantize_ref(acc, p->multiplier[c], p->shift[c], p->output_offset, p->act_min, p->act_max);
        }
    }
}

void zoedge_for_each_row(const int32_t shape[4], const int32_t strides1[4], const int32_t strides2[4],
                         zoedge_row_fn row, const void *params, const int8_t *input1, const int8_t *input2,
                         int8_t *output, void *scratch)
{
    for (int32_t i0 = 0; i0 < shape[0]; ++i0) {
        for (int32_t i1 = 0; i1 < shape[1]; ++i1) {
            for (int32_t i2 = 0; i2 < shape[2]; ++i2) {
                const int32_t a = i0 * strides1[0] + i1 * strides1[1] + i2 * strides1[2];
                const int32_t b = i0 * strides2[0] + i1 * strides2[1] + i2 * strides2[2];
                row(params, input1 + a, strides1[3], input2 + b, strides2[3], output, shape[3], scratch);
                output += shape[3];
            }
        }
    }
}

/* TFLM's AddElementwise for int8 (one row). The ADD multipliers are below one (shifts <= 0), where
 * MultiplyByQuantizedMultiplierSmallerThanOneExp is the same composition as
 * MultiplyByQuantizedMultiplier. */
static void add_row(const void *params, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const zoedge_add_params *p = (const zoedge_add_params *)params;
    (void)scratch;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t a = ((int32_t)input1[i * stride1] + p->input1_offset) * (1 << p->left_shift);
        const int32_t b = ((int32_t)input2[i * stride2] + p->input2_offset) * (1 << p->left_shift);
        const int32_t scaled_a = zoedge_multiply_by_quantized_multiplier_ref(a, p->input1_multiplier, p->input1_shift);
        const int32_t scaled_b = zoedge_multiply_by_quantized_multiplier_ref(b, p->input2_multiplier, p->input2_shift);
        const int32_t raw_sum = scaled_a + scaled_b;
        const int32_t out = zoedge_multiply_by_quantized_multiplier_ref(raw_sum, p->output_multiplier, p->output_shift) +
                            p->output_offset;
        output[i] = (int8_t)zoedge_clamp(out, p->act_min, p->act_max);
    }
}

void zoedge_ref_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    zoedge_for_each_row(p->shape, p->input1_strides, p->input2_strides, add_row, p, input1, input2, output, NULL);
}

/* TFLM's MulElementwise for int8 (one row). */
static void mul_row(const void *params, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const zoedge_mul_params *p = (const zoedge_mul_params *)params;
    (void)scratch;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t a = (int32_t)input1[i * stride1] + p->input1_offset;
        const int32_t b = (int32_t)input2[i * stride2] + p->input2_offset;
        const int32_t out = zoedge_multiply_by_quantized_multiplier_ref(a * b, p->output_multiplier, p->output_shift) +
                            p->output_offset;
        output[i] = (int8_t)zoedge_clamp(out, p->act_min, p->act_max);
    }
}

void zoedge_ref_mul(const zoedge_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    zoedge_for_each_row(p->shape, p->input1_strides, p->input2_strides, mul_row, p, input1, input2, output, NULL);
}

/* TFLM's QuantizedMeanOrSum (the integer path every int8 MEAN takes in TFLM). The output is
 * clamped to the int8 range, not to an activation. */
void zoedge_ref_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t o = 0; o < p->outer; ++o) {
        const int8_t *block = input + o * p->count * p->inner;
        for (int32_t c = 0; c < p->inner; ++c) {
            int32_t sum = 0;
            for (int32_t k = 0; k < p->count; ++k) {
                sum += block[k * p->inner + c];
            }
            const int32_t shifted_sum = sum - p->input_zero_point * p->count;
            int32_t out = zoedge_multiply_by_quantized_multiplier_ref(shifted_sum, p->multiplier, p->shift) +
                          p->output_zero_point;
            if (out < -128) {
                out = -128;
            }
            if (out > 127) {
                out = 127;
            }
            output[o * p->inner + c] = (int8_t)out;
        }
    }
}

/* TFLM's reference_integer_ops::AveragePool for int8: the in-bounds values of each window summed and
 * divided by their count, rounding half away from zero, then clamped to the activation. */
void zoedge_ref_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ky_start = y0 < 0 ? -y0 : 0;
        const int32_t ky_end = p->in_h - y0 < p->filter_h ? p->in_h - y0 : p->filter_h;
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t kx_start = x0 < 0 ? -x0 : 0;
            const int32_t kx_end = p->in_w - x0 < p->filter_w ? p->in_w - x0 : p->filter_w;
            const int32_t count = (ky_end - ky_start) * (kx_end - kx_start);
            for (int32_t c = 0; c < p->channels; ++c) {
                int32_t acc = 0;
                for (int32_t ky = ky_start; ky < ky_end; ++ky) {
                    for (int32_t kx = kx_start; kx < kx_end; ++kx) {
                        acc += input[((y0 + ky) * p->in_w + (x0 + kx)) * p->channels + c];
                    }
                }
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                output[(oy * p->out_w + ox) * p->channels + c] = (int8_t)zoedge_clamp(acc, p->act_min, p->act_max);
            }
        }
    }
}

/* TFLM's reference_integer_ops::MaxPool for int8 (no optimised variant: it is a few percent of any
 * model's work, and the plain loop is what every core runs). */
void zoedge_max_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ky_start = y0 < 0 ? -y0 : 0;
        const int32_t ky_end = p->in_h - y0 < p->filter_h ? p->in_h - y0 : p->filter_h;
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t kx_start = x0 < 0 ? -x0 : 0;
            const int32_t kx_end = p->in_w - x0 < p->filter_w ? p->in_w - x0 : p->filter_w;
            for (int32_t c = 0; c < p->channels; ++c) {
                int32_t best = -128;
                for (int32_t ky = ky_start; ky < ky_end; ++ky) {
                    for (int32_t kx = kx_start; kx < kx_end; ++kx) {
                        const int32_t v = input[((y0 + ky) * p->in_w + (x0 + kx)) * p->channels + c];
                        best = v > best ? v : best;
                    }
                }
                output[(oy * p->out_w + ox) * p->channels + c] = (int8_t)zoedge_clamp(best, p->act_min, p->act_max);
            }
        }
    }
}

/* -- SOFTMAX: gemmlowp fixed point (zo_edge/kernels/softmax.py is the same arithmetic in numpy) --------- */
#define SOFTMAX_SCALED_DIFF_INTEGER_BITS 5
#define SOFTMAX_ACCUMULATION_INTEGER_BITS 12

static int32_t mul(int32_t a, int32_t b)
{
    return zoedge_saturating_rounding_doubling_high_mul(a, b);
}

/* e^a for a in [-1/4, 0), Q0.31 in and out: gemmlowp's Taylor series around -1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;  /* e^(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = a + (1 << 28);  /* a + 1/8 */
    const int32_t x2 = mul(x, x);
    const int32_t x3 = mul(x2, x);
    const int32_t x4 = mul(x2, x2);
    const int32_t x4_over_4 = zoedge_rounding_divide_by_pot(x4, 2);
    const int32_t poly = zoedge_rounding_divide_by_pot(mul(x4_over_4 + x3, constant_1_over_3) + x2, 1);
    return constant_term + mul(constant_term, x + poly);
}

/* gemmlowp's exp_on_negative_values: Q5.26 in (a <= 0), Q0.31 out. */
static int32_t exp_on_negative_values(int32_t a)
{
    static const int32_t barrel_shifter[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t fractional_bits = 31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS;
    const int32_t one_quarter = 1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        zoedge_saturating_left_shift(a_mod_quarter_minus_one_quarter, SOFTMAX_SCALED_DIFF_INTEGER_BITS));
    const int32_t remainder = a_mod_quarter_minus_one_quarter - a;  /* in [0, 2^31): no overflow */
    for (int32_t k = 0; k < 7; ++k) {  /* e^(-2^(k-2)) for each bit of the remainder */
        if ((remainder >> (fractional_bits - 2 + k)) & 1) {
            result = mul(result, barrel_shifter[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* gemmlowp's one_over_one_plus_x_for_x_in_0_1: Newton-Raphson in Q2.29, Q0.31 in and out. */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int64_t total = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((total + (total >= 0 ? 1 : -1)) / 2);  /* RoundingHalfSum */
    int32_t x = 1515870810 + mul(half_denominator, -1010580540);  /* 48/17 - 32/17 d */
    for (int32_t i = 0; i < 3; ++i) {
        const int32_t one_minus_half_denominator_times_x = (1 << 29) - mul(half_denominator, x);
        x = x + zoedge_saturating_left_shift(mul(x, one_minus_half_denominator_times_x), 2);
    }
    return zoedge_saturating_left_shift(x, 1);
}

static int32_t count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    while (n < 32 && !(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* RoundingDivideByPOT in 64 bits: the final exponent of a wide row may reach 34 (as in numpy). */
static int32_t rounding_divide_by_pot_wide(int32_t x, int32_t exponent)
{
    const int64_t mask = ((int64_t)1 << exponent) - 1;
    const int64_t remainder = (int64_t)x & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (int32_t)(((int64_t)x >> exponent) + (remainder > threshold ? 1 : 0));
}

/* TFLM's reference Softmax for int8 in and out (SoftmaxInt8). */
void zoedge_softmax(const zoedge_softmax_params *p, const int8_t *input, int8_t *output)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *in = input + r * p->depth;
        int8_t *out = output + r * p->depth;
        int32_t max_in_row = -128;
        for (int32_t i = 0; i < p->depth; ++i) {
            max_in_row = in[i] > max_in_row ? in[i] : max_in_row;
        }
        int32_t sum_of_exps = 0;  /* Q12.19 */
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t diff = in[i] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = mul((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
                sum_of_exps += zoedge_rounding_divide_by_pot(exp_on_negative_values(scaled),
                                                             SOFTMAX_ACCUMULATION_INTEGER_BITS);
            }
        }
        /* GetReciprocal: 1 / sum as a Q0.31 mantissa and the number of bits of the sum above 1.0 */
        const int32_t headroom_plus_one = count_leading_zeros((uint32_t)sum_of_exps);
        const int32_t num_bits_over_unit = SOFTMAX_ACCUMULATION_INTEGER_BITS - headroom_plus_one;
        const int32_t shifted_sum_minus_one = (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - (1u << 31));
        const int32_t shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t diff = in[i] - max_in_row;
            int32_t value = -128;
            if (diff >= p->diff_min) {
                const int32_t scaled = mul((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
                const int32_t unsat = rounding_divide_by_pot_wide(mul(shifted_scale, exp_on_negative_values(scaled)),
                                                                  num_bits_over_unit + 31 - 8);
                value = zoedge_clamp(unsat - 128, -128, 127);
            }
            out[i] = (int8_t)value;
        }
    }
}
