/* zoedge_kernels.h: the int8 kernels of zo-edge, their parameters and their preconditions.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * This header is the specification. Every op has one reference implementation in
 * zoedge_kernels_ref.c (zoedge_ref_*): TensorFlow Lite Micro's reference arithmetic, written as plain
 * loops; they are the kernels for Cortex-M0+/M3 and for the host. Optimised paths sit beside them, one
 * file per op (zoedge_conv.c, zoedge_depthwise_conv.c, zoedge_fully_connected.c, zoedge_add.c,
 * zoedge_mul.c, zoedge_pool.c), and choose their instruction set at compile time:
 *
 *   __ARM_FEATURE_MVE   Cortex-M55 (Helium): 128-bit integer vectors
 *   __ARM_FEATURE_DSP   Cortex-M4/M7/M33: 32-bit SIMD (SMLAD on int16 pairs, SXTB16, SMMLAR)
 *   neither, or ZOEDGE_KERNELS_REFERENCE defined: the reference loops
 *
 * Every path computes the same bytes as its reference: integer sums do not depend on the order of
 * their terms, and every path requantises with TFLM's MultiplyByQuantizedMultiplier (double rounding).
 * The export chooses the path of each layer (zo_edge/kernel_spec.py, the same predicates as here) and
 * writes the call into zoedge_model.c, so an unused path is never linked.
 *
 * Tensors are NHWC with a batch of 1, int8 activations, int8 weights, int32 biases. Integer only:
 * no float, no libm, no malloc. Shared preconditions of every function below:
 *   - input, weight and output pointers are valid for the sizes the parameters give; an output never
 *     overlaps an input (ADD may not run in place either);
 *   - a NULL bias means a bias of zero;
 *   - offsets: input_offset = -input zero point, in [-127, 128]; output_offset = the output zero
 *     point, in [-128, 127]; act_min <= act_max, both in [-128, 127];
 *   - multiplier/shift pairs come from TFLM's QuantizeMultiplier: multiplier 0 (with shift 0) or in
 *     [2^30, 2^31), shift in [-31, 30];
 *   - every accumulator (sum of products plus bias) fits in int32 (the export checks
 *     |sum| + |bias| < 2^31 from the layer's geometry; trainable biases must keep to it);
 *   - `scratch` points to the kernel's scratch bytes (ZOEDGE_*_SCRATCH_BYTES below, per instruction
 *     set), 8-byte aligned; it may be NULL where that count is 0. Nothing is kept in it between calls.
 */
#ifndef ZOEDGE_KERNELS_H
#define ZOEDGE_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The instruction set the optimised paths are compiled for (ZOEDGE_ISA_*), for the scratch sizes. */
#define ZOEDGE_ISA_REF 0
#define ZOEDGE_ISA_DSP 1
#define ZOEDGE_ISA_MVE 2
#if defined(ZOEDGE_KERNELS_REFERENCE)
#define ZOEDGE_ISA ZOEDGE_ISA_REF
#elif defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define ZOEDGE_ISA ZOEDGE_ISA_MVE
#elif defined(__ARM_FEATURE_DSP)
#define ZOEDGE_ISA ZOEDGE_ISA_DSP
#else
#define ZOEDGE_ISA ZOEDGE_ISA_REF
#endif

/* ---- CONV_2D and DEPTHWISE_CONV_2D ------------------------------------------------------------------
 * Filters: conv [out_c][kernel_h][kernel_w][in_c]; depthwise [1][kernel_h][kernel_w][in_c * depth_multiplier],
 * output channel c*m + j reads input channel c. Window positions outside the input contribute nothing
 * (TFLM's padding). out_h/out_w are TFLM's for the padding; pad_top/pad_left the padding before the
 * first row/column (>= 0). Mirrors TFLM's ConvPerChannel / DepthwiseConvPerChannel. */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t depth_multiplier;       /* depthwise only; 1 for conv */
    int32_t input_offset;           /* minus the input zero point */
    int32_t output_offset;          /* the output zero point */
    int32_t act_min, act_max;       /* the fused activation as an int8 clamp */
    const int32_t *multiplier;      /* [out_c] Q0.31 */
    const int32_t *shift;           /* [out_c] power-of-two exponent */
} zoedge_conv_params;

/* Any geometry. Scratch: DSP 4 * kernel_h * kernel_w * in_c bytes rounded up to a multiple of 8 (two
 * im2col columns as int16, the input offset added); MVE 4 * kernel_h * kernel_w * in_c rounded up to
 * 16 (four int8 columns); reference 0. */
void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch);
/* Path "1x1": kernel 1x1, stride 1 (so no padding: out_h == in_h, out_w == in_w). A matrix product of
 * the [positions][in_c] input with the [out_c][in_c] filter. Scratch: DSP 4 * in_c rounded up to a
 * multiple of 8 (two pixels as int16); MVE 0; reference 0. */
void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch);

/* Any geometry and depth multiplier. Scratch: DSP and MVE as zoedge_depthwise_conv_2d_3x3 when
 * depth_multiplier == 1, else 0; reference 0. */
void zoedge_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, void *scratch);
/* Path "3x3": kernel 3x3, depth multiplier 1, dilation 1 (any stride and padding). Scratch: DSP
 * 2 * (in_w + 2 * kernel_w) * (in_h + 2 * kernel_h) bytes rounded up to 8 (one channel plane as int16,
 * padded); MVE 0; reference 0. */
void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch);

/* ---- FULLY_CONNECTED --------------------------------------------------------------------------------
 * Input read as `rows` vectors of `depth`, filter [units][depth]; TFLM's FullyConnected (one multiplier,
 * per_channel 0) and FullyConnectedPerChannel (one per unit). filter_offset = -filter zero point, in
 * [-127, 128]. Scratch: DSP 2 * depth rounded up to a multiple of 8 (the input vector as int16, the
 * offset added); MVE 0; reference 0. */
typedef struct {
    int32_t rows, depth, units;
    int32_t input_offset, filter_offset, output_offset;
    int32_t act_min, act_max;
    int32_t per_channel;            /* 1: multiplier/shift have one entry per unit; 0: one entry */
    const int32_t *multiplier;
    const int32_t *shift;
} zoedge_fully_connected_params;

void zoedge_fully_connected(const zoedge_fully_connected_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output, void *scratch);

/* ---- ADD and MUL: two int8 tensors, numpy/TFLM broadcasting ---------------------------------------
 * The output's shape with broadcast dimensions merged, at most four: element (i0, i1, i2, i3) reads
 * input1[i0 * input1_strides[0] + ... + i3 * input1_strides[3]] (a stride of 0 where input 1
 * broadcasts), likewise input 2, and writes the output in row-major order (TFLM's
 * BroadcastAdd4DSlow / BroadcastMul4DSlow, and AddElementwise / MulElementwise for equal shapes).
 * size = shape[0] * shape[1] * shape[2] * shape[3]. */
/* ADD (TFLM's AddElementwise for int8): both inputs are lifted by left_shift bits, rescaled to a common
 * scale, summed and rescaled to the output. The three multipliers are below one (shifts <= 0), as TFLM's
 * PrepareGeneralSubOp makes them. Scratch: DSP 2048 bytes when size >= ZOEDGE_ADD_TABLES_FROM (the two
 * inputs' rescaled values for all 256 int8 values, built per call), else 0; MVE 0; reference 0. */
#define ZOEDGE_ADD_TABLES_FROM 512
typedef struct {
    int32_t size;
    int32_t shape[4];
    int32_t input1_strides[4], input2_strides[4];
    int32_t input1_offset, input2_offset, output_offset;
    int32_t left_shift;             /* 20 for int8 */
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} zoedge_add_params;

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch);

/* MUL (TFLM's MulElementwise for int8): (input1 + offset1) * (input2 + offset2) rescaled by one multiplier
 * (input1_scale * input2_scale / output_scale, any shift), plus the output zero point, clamped to the
 * activation. No scratch. */
typedef struct {
    int32_t size;
    int32_t shape[4];
    int32_t input1_strides[4], input2_strides[4];
    int32_t input1_offset, input2_offset, output_offset;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} zoedge_mul_params;

void zoedge_mul(const zoedge_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch);

/* ---- MEAN -------------------------------------------------------------------------------------------
 * Over a contiguous block of axes, the input seen as [outer][count][inner] (global average pooling over
 * H, W of NHWC: outer 1, count H*W, inner C). TFLM's integer path (QuantizedMeanOrSum): the zero-point
 * corrected sum times (in_scale / out_scale) / count, folded into one multiplier and shift; the output
 * clamped to int8. count * 255 < 2^31. No scratch. */
typedef struct {
    int32_t outer, count, inner;
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift;
} zoedge_mean_params;

void zoedge_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output);

/* ---- AVERAGE_POOL_2D and MAX_POOL_2D ----------------------------------------------------------------
 * TFLM's reference_integer_ops::AveragePool / MaxPool: the output shares the input's quantisation. The
 * average divides the sum of the window's in-bounds values by their count, rounding half away from
 * zero; the maximum starts from -128. Both clamp to the fused activation. Every window holds at least
 * one input position. No scratch. */
typedef struct {
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t act_min, act_max;
} zoedge_pool_params;

void zoedge_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output);
void zoedge_max_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output);

/* ---- SOFTMAX ----------------------------------------------------------------------------------------
 * int8 in, int8 out (scale 1/256, zero point -128), over the last axis: TFLM's reference Softmax on
 * gemmlowp fixed point (differences to the row maximum scaled to Q5.26 by input_multiplier and
 * input_left_shift, exponentiated, summed in Q12.19, inverted by Newton-Raphson). diff_min: differences
 * below it give exactly -128. No scratch. */
typedef struct {
    int32_t rows, depth;
    int32_t input_multiplier, input_left_shift;
    int32_t diff_min;
} zoedge_softmax_params;

void zoedge_softmax(const zoedge_softmax_params *p, const int8_t *input, int8_t *output);

/* ---- the reference implementations (zoedge_kernels_ref.c): the specification of every path above ---- */
void zoedge_ref_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output);
void zoedge_ref_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                            const int32_t *bias, int8_t *output);
void zoedge_ref_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output);
void zoedge_ref_fully_connected(const zoedge_fully_connected_params *p, const int8_t *input,
                                const int8_t *filter, const int32_t *bias, int8_t *output);
void zoedge_ref_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void zoedge_ref_mul(const zoedge_mul_params *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void zoedge_ref_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output);
void zoedge_ref_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output);

/* TFLM's MultiplyByQuantizedMultiplier (double rounding), for callers outside the kernels. */
int32_t zoedge_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift);

#ifdef __cplusplus
}
#endif

#endif /* ZOEDGE_KERNELS_H */
