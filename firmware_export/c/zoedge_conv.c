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
#include <string.h>

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

/* The scratch holds four im2col columns (a, b, c, d: four output positions) interleaved, so that one
 * pointer walks all four: per whole group of four window elements, the 32 bytes [a0 a2 a1 a3 b0 b2 b1 b3
 * c0 c2 c1 c3 d0 d2 d1 d3] (int16, input offset added); after the groups, the tail (size % 4 elements)
 * of a, then those of b, c and d. */
#define COLUMNS 4

ZOEDGE_INLINE int32_t element_index(int32_t k, int32_t column, int32_t groups_end, int32_t tail)
{
    if (k < groups_end) {
        return 4 * (k & ~3) + 4 * column + ((k & 1) << 1) + ((k >> 1) & 1);
    }
    return 4 * groups_end + column * tail + (k - groups_end);
}

ZOEDGE_INLINE int32_t offset_pair(int32_t offset)
{
    return (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
}

/* Window elements k .. k + n - 1 of column `column`: n input values from src with the offset added, or
 * zeros where src is NULL (padding contributes nothing, as TFLM skips it). Whole groups take a word per
 * four values (SXTAB16 adds the offset to two values at once). */
static void fill_run(int16_t *cols, int32_t column, int32_t k, const int8_t *src, int32_t n, int32_t groups_end,
                     int32_t tail, int32_t offset)
{
    int32_t i = 0;
    if ((k & 3) == 0) {
        const int32_t offset2 = offset_pair(offset);
        for (; i + 4 <= n && k + i < groups_end; i += 4) {
            int16_t *dst = cols + 4 * (k + i) + 4 * column;
            const int32_t x = src != NULL ? zoedge_read_s8x4(src + i) : 0;
            zoedge_write_word(dst, src != NULL ? __sxtab16(offset2, x) : 0);
            zoedge_write_word(dst + 2, src != NULL ? zoedge_sxtab16_ror8(offset2, x) : 0);
        }
    }
    for (; i < n; ++i) {
        cols[element_index(k + i, column, groups_end, tail)] = (int16_t)(src != NULL ? src[i] + offset : 0);
    }
}

/* Column `column`: the window of output position (oy, ox), k = (ky, kx, ic). A kernel row that lies
 * inside the input (no dilation across it) is one run of kernel_w * in_c values. */
static void fill_column(int16_t *cols, int32_t column, const zoedge_conv_params *p, const int8_t *input,
                        int32_t oy, int32_t ox)
{
    const int32_t in_c = p->in_c, row = p->kernel_w * in_c;
    const int32_t size = p->kernel_h * row, groups_end = size & ~3, tail = size - groups_end;
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    const int row_inside = x0 >= 0 && x0 + (p->kernel_w - 1) * p->dilation_w < p->in_w &&
                           (p->dilation_w == 1 || p->kernel_w == 1);
    for (int32_t ky = 0, k = 0; ky < p->kernel_h; ++ky, k += row) {
        const int32_t iy = y0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            fill_run(cols, column, k, NULL, row, groups_end, tail, 0);
        } else if (row_inside) {
            fill_run(cols, column, k, input + (iy * p->in_w + x0) * in_c, row, groups_end, tail, p->input_offset);
        } else {
            for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t ix = x0 + kx * p->dilation_w;
                const int8_t *pixel = ix >= 0 && ix < p->in_w ? input + (iy * p->in_w + ix) * in_c : NULL;
                fill_run(cols, column, k + kx * in_c, pixel, in_c, groups_end, tail, p->input_offset);
            }
        }
    }
}

/* *a_j += column j . filter row w over `groups` whole groups of four: 15 instructions per group (16
 * multiply-accumulates). LDM reads two columns' group at once into r8-r11. */
ZOEDGE_INLINE void dot_4x1_groups(const int16_t *cols, const int8_t *w, int32_t groups, int32_t *a0, int32_t *a1,
                                  int32_t *a2, int32_t *a3)
{
    int32_t s0 = *a0, s1 = *a1, s2 = *a2, s3 = *a3;
    if (groups > 0) {
        int32_t t0, t1;
        __asm volatile(
            "1:\n\t"
            "ldr %[t0], [%[w]], #4\n\t"
            "ldm %[cols]!, {r8, r9, r10, r11}\n\t"
            "sxtb16 %[t1], %[t0]\n\t"
            "sxtb16 %[t0], %[t0], ror #8\n\t"
            "smlad %[s0], %[t1], r8, %[s0]\n\t"
            "smlad %[s0], %[t0], r9, %[s0]\n\t"
            "smlad %[s1], %[t1], r10, %[s1]\n\t"
            "smlad %[s1], %[t0], r11, %[s1]\n\t"
            "ldm %[cols]!, {r8, r9, r10, r11}\n\t"
            "smlad %[s2], %[t1], r8, %[s2]\n\t"
            "smlad %[s2], %[t0], r9, %[s2]\n\t"
            "smlad %[s3], %[t1], r10, %[s3]\n\t"
            "smlad %[s3], %[t0], r11, %[s3]\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b"
            : [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [cols] "+r"(cols), [w] "+r"(w),
              [n] "+r"(groups), [t0] "=&r"(t0), [t1] "=&r"(t1)
            :
            : "r8", "r9", "r10", "r11", "cc", "memory");
    }
    *a0 = s0;
    *a1 = s1;
    *a2 = s2;
    *a3 = s3;
}

/* One output of channel oc: TFLM's requantisation (the short form when `fast`: every shift negative),
 * clamped to the activation (after the SSAT only when `narrow`). */
ZOEDGE_INLINE int8_t output_value(const zoedge_conv_params *p, int32_t acc, int fast, int narrow,
                                  zoedge_channel_quant q, int32_t offset2, int32_t oc)
{
    if (!fast) {
        return zoedge_requantize_ref(acc, p->multiplier[oc], p->shift[oc], p->output_offset, p->act_min, p->act_max);
    }
    const int32_t v = zoedge_requantize_to_int8(acc, q.m2, q.r_minus_1, offset2);
    return (int8_t)(narrow ? zoedge_clamp(v, p->act_min, p->act_max) : v);
}

/* Every output channel of four positions from their columns, written at out[j] (position j's first
 * output channel). A position given twice (past the last one) computes and writes the same bytes twice.
 * `fast`, `narrow`: see output_value (constants where this is inlined). */
ZOEDGE_INLINE void columns_to_outputs(const zoedge_conv_params *p, const int16_t *cols, const int8_t *filter,
                                      const int32_t *bias, int32_t size, int fast, int narrow,
                                      int8_t *const out[COLUMNS])
{
    const int32_t offset2 = 2 * p->output_offset + 1;
    const int32_t groups = size >> 2, groups_end = size & ~3, tail = size - groups_end;
    const int16_t *tail_a = cols + 4 * groups_end;
    int8_t *out0 = out[0], *out1 = out[1], *out2 = out[2], *out3 = out[3];
    const int32_t out_c = p->out_c;
    for (int32_t oc = 0; oc < out_c; ++oc) {
        const int8_t *w = filter + oc * size;
        int32_t a0 = bias != NULL ? bias[oc] : 0;
        int32_t a1 = a0, a2 = a0, a3 = a0;
        dot_4x1_groups(cols, w, groups, &a0, &a1, &a2, &a3);
        for (int32_t k = 0; k < tail; ++k) {
            const int32_t wk = w[groups_end + k];
            a0 += wk * tail_a[k];
            a1 += wk * tail_a[tail + k];
            a2 += wk * tail_a[2 * tail + k];
            a3 += wk * tail_a[3 * tail + k];
        }
        const zoedge_channel_quant q = zoedge_channel_quant_of(p->multiplier, p->shift, oc);
        out0[oc] = output_value(p, a0, fast, narrow, q, offset2, oc);
        out1[oc] = output_value(p, a1, fast, narrow, q, offset2, oc);
        out2[oc] = output_value(p, a2, fast, narrow, q, offset2, oc);
        out3[oc] = output_value(p, a3, fast, narrow, q, offset2, oc);
    }
}

/* columns_to_outputs with its two flags as constants, so that each combination compiles to its own loop. */
static void columns_to_outputs_any(const zoedge_conv_params *p, const int16_t *cols, const int8_t *filter,
                                   const int32_t *bias, int32_t size, int8_t *const out[COLUMNS])
{
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int narrow = zoedge_act_narrower_than_int8(p->act_min, p->act_max);
    if (fast && !narrow) {
        columns_to_outputs(p, cols, filter, bias, size, 1, 0, out);
    } else if (fast) {
        columns_to_outputs(p, cols, filter, bias, size, 1, 1, out);
    } else {
        columns_to_outputs(p, cols, filter, bias, size, 0, 1, out);
    }
}

/* The four positions pos .. pos + 3 (the last one repeated past `positions`) and their outputs. */
ZOEDGE_INLINE void tile_positions(int32_t pos, int32_t positions, int32_t out_c, int8_t *output, int32_t index[COLUMNS],
                                  int8_t *out[COLUMNS])
{
    for (int32_t j = 0; j < COLUMNS; ++j) {
        index[j] = pos + j < positions ? pos + j : positions - 1;
        out[j] = output + index[j] * out_c;
    }
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        int8_t *out[COLUMNS];
        tile_positions(pos, positions, p->out_c, output, index, out);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_column(cols, j, p, input, index[j] / p->out_w, index[j] % p->out_w);
        }
        columns_to_outputs_any(p, cols, filter, bias, size, out);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int16_t *cols = (int16_t *)scratch;
    const int32_t groups_end = size & ~3, tail = size - groups_end;
    const int32_t positions = p->out_h * p->out_w;
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        int8_t *out[COLUMNS];
        tile_positions(pos, positions, p->out_c, output, index, out);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_run(cols, j, 0, input + index[j] * size, size, groups_end, tail, p->input_offset);
        }
        columns_to_outputs_any(p, cols, filter, bias, size, out);
    }
}

#else /* ZOEDGE_ISA_MVE */

/* The scratch: per output channel {effective bias, multiplier, shift} (int32; the bias is bias +
 * input_offset * the filter row's sum, computed per call, never kept: trainable filters change between
 * calls), then four im2col columns (four output positions) of int8 as stored, interleaved in 16-byte
 * chunks: chunk k of column j at (4k + j) * 16. A padded tap holds the input zero point, which with the
 * offset in the bias contributes 0. Sizes as kernel_spec's _conv_scratch. */
#define COLUMNS 4
#define CHANNEL_WORDS 3

static void channel_table(const zoedge_conv_params *p, const int8_t *filter, const int32_t *bias, int32_t size,
                          int32_t *table)
{
    for (int32_t oc = 0; oc < p->out_c; ++oc, table += CHANNEL_WORDS) {
        const int8_t *w = filter + oc * size;
        int32_t sum = 0;
        for (int32_t k = 0; k < size; k += 16) {
            const mve_pred16_t lanes = vctp8q((uint32_t)(size - k));
            sum = vaddvaq_p_s8(sum, vldrbq_z_s8(w + k, lanes), lanes);
        }
        table[0] = (bias != NULL ? bias[oc] : 0) + p->input_offset * sum;
        table[1] = p->multiplier[oc];
        table[2] = p->shift[oc];
    }
}

ZOEDGE_INLINE int8_t *columns_of(const zoedge_conv_params *p, void *scratch)
{
    return (int8_t *)scratch + ((CHANNEL_WORDS * 4 * p->out_c + 15) & ~15);
}
/* m <= 16 bytes from src to dst: one predicated load and store (in assembly: gcc moves a predicate
 * through general registers at every use; the memory operands name the bytes touched). */
ZOEDGE_INLINE void copy_piece(int8_t *dst, const int8_t *src, int32_t m)
{
    int8x16_t v;
    __asm("vctp.8 %[m]\n\t"
          "vpst\n\t"
          "vldrbt.8 %q[v], [%[src]]\n\t"
          "vpst\n\t"
          "vstrbt.8 %q[v], [%[dst]]"
          : [v] "=&w"(v), "=m"(*(int8_t(*)[16])dst)
          : [m] "r"(m), [src] "r"(src), [dst] "r"(dst), "m"(*(const int8_t(*)[16])src)
          : "cc");
}

/* n bytes from src to dst (any alignment): per 16 a predicated load and store. */
ZOEDGE_INLINE void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    for (int32_t i = 0; i < n; i += 16) {
        const mve_pred16_t lanes = vctp8q((uint32_t)(n - i));
        vstrbq_p_s8(dst + i, vldrbq_z_s8(src + i, lanes), lanes);
    }
}

ZOEDGE_INLINE void set_bytes(int8_t *dst, int8_t value, int32_t n)
{
    for (int32_t i = 0; i < n; i += 16) {
        vstrbq_p_s8(dst + i, vdupq_n_s8(value), vctp8q((uint32_t)(n - i)));
    }
}

/* The band of an output row: the (kernel_h - 1) * dilation_h + 1 input rows its windows read, each
 * padded to band_width pixels (the padding columns and the rows outside the input hold the input zero
 * point, which with the offset in the bias contributes 0), so that every window lies inside it. */
typedef struct {
    int32_t rows, width, row_bytes;
} conv_band;

ZOEDGE_INLINE conv_band band_of(const zoedge_conv_params *p)
{
    conv_band b;
    b.rows = (p->kernel_h - 1) * p->dilation_h + 1;
    b.width = (p->out_w - 1) * p->stride_w + (p->kernel_w - 1) * p->dilation_w + 1;
    b.row_bytes = b.width * p->in_c;
    return b;
}

static void fill_band(int8_t *band, const conv_band *b, const zoedge_conv_params *p, const int8_t *input, int32_t oy)
{
    const int32_t in_c = p->in_c, y0 = oy * p->stride_h - p->pad_top;
    const int8_t pad = (int8_t)(-p->input_offset);
    /* the band's columns that hold input pixels: [x_begin, x_end), from input column 0 */
    const int32_t x_begin = p->pad_left < b->width ? p->pad_left : b->width;
    const int32_t x_end = p->pad_left + p->in_w < b->width ? p->pad_left + p->in_w : b->width;
    for (int32_t r = 0; r < b->rows; ++r) {
        const int32_t iy = y0 + r;
        int8_t *row = band + r * b->row_bytes;
        if (iy < 0 || iy >= p->in_h) {
            set_bytes(row, pad, b->row_bytes);
            continue;
        }
        set_bytes(row, pad, x_begin * in_c);
        copy_bytes(row + x_begin * in_c, input + iy * p->in_w * in_c, (x_end - x_begin) * in_c);
        set_bytes(row + x_end * in_c, pad, (b->width - x_end) * in_c);
    }
}

/* A window's copies, the same for every position: piece i copies length[i] bytes from the window's
 * first byte in the band + src[i] to the column's chunks + dst[i] (within one 16-byte chunk). A kernel
 * row is one run of kernel_w * in_c bytes unless dilated (then one per pixel); a run crossing a chunk
 * boundary is two pieces. At most kernel_h * runs * (run / 16 + 2) pieces (kernel_spec). */
typedef struct {
    int32_t src, dst, length;
} conv_piece;

static int32_t window_pieces(const zoedge_conv_params *p, const conv_band *b, conv_piece *pieces)
{
    const int32_t in_c = p->in_c;
    const int contiguous = p->dilation_w == 1 || p->kernel_w == 1;
    const int32_t run = contiguous ? p->kernel_w * in_c : in_c, runs = contiguous ? 1 : p->kernel_w;
    int32_t count = 0, k = 0;
    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
        for (int32_t r = 0; r < runs; ++r) {
            int32_t src = ky * p->dilation_h * b->row_bytes + r * p->dilation_w * in_c, n = run;
            while (n > 0) {
                const int32_t room = 16 - (k & 15), m = n < room ? n : room;
                pieces[count].src = src;
                pieces[count].dst = 4 * (k & ~15) + (k & 15);
                pieces[count].length = m;
                ++count;
                src += m;
                k += m;
                n -= m;
            }
        }
    }
    return count;
}

/* Column j: the window of output column ox in the band, by its pieces. */
static void fill_column(int8_t *cols, int32_t column, const int8_t *window, const conv_piece *pieces, int32_t count)
{
    int8_t *chunks = cols + 16 * column;
    for (int32_t i = 0; i < count; ++i) {
        copy_piece(chunks + pieces[i].dst, window + pieces[i].src, pieces[i].length);
    }
}

/* The 1x1 path's column: one pixel's in_c bytes into the interleaved chunks. */
static void fill_pixel(int8_t *cols, int32_t column, const int8_t *pixel, int32_t in_c)
{
    for (int32_t k = 0; k < in_c; k += 16) {
        vstrbq_s8(cols + (4 * (k >> 4) + column) * 16, vldrbq_z_s8(pixel + k, vctp8q((uint32_t)(in_c - k))));
    }
}

/* The four lanes: effective bias + column j . filter row w. A tail-predicated low-overhead loop
 * (DLSTP/LETP): per 16 window elements one filter load, four column loads and four VMLADAVA (64
 * multiply-accumulates in 10 instructions); VMLADAVA accumulates in even registers only. */
ZOEDGE_INLINE int32x4_t dot_4x1(const int8_t *cols, const int8_t *w, int32_t size, int32_t bias)
{
    register int32_t a0 __asm("r0") = bias;
    register int32_t a1 __asm("r2") = bias;
    register int32_t a2 __asm("r4") = bias;
    register int32_t a3 __asm("r6") = bias;
    int32x4_t out;
    __asm volatile(
        "dlstp.8 lr, %[n]\n"
        "1:\n\t"
        "vldrb.8 q0, [%[w]], #16\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a0], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a1], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a2], q1, q0\n\t"
        "vldrb.8 q1, [%[c]], #16\n\t"
        "vmladava.s8 %[a3], q1, q0\n\t"
        "letp lr, 1b\n\t"
        "vmov %q[out][2], %q[out][0], %[a0], %[a2]\n\t"
        "vmov %q[out][3], %q[out][1], %[a1], %[a3]"
        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [c] "+r"(cols), [out] "=w"(out)
        : [n] "r"(size)
        : "q0", "q1", "lr", "memory");
    return out;
}

/* Every output channel of four positions, every shift negative: one assembly loop over the channels
 * (the channel table read in order, the filter rows one after another), each channel the dot_4x1 loop
 * and the short requantisation (TFLM's for a negative shift, zoedge_requantize_mve), stored at out +
 * offsets + oc. 21 instructions per channel besides the 10 per 16 window elements. Fourteen registers:
 * gcc allocates that many for an asm only when each is named. */
static void columns_to_outputs_fast(const zoedge_conv_params *p, const int8_t *cols, const int8_t *filter,
                                    const int32_t *table, int32_t size, int8_t *output, uint32x4_t offsets)
{
    register const int8_t *w __asm("r1") = filter;
    register const int8_t *c __asm("r3") = cols;
    register const int8_t *base __asm("r5") = cols;
    register const int32_t *t __asm("r7") = table;
    register int8_t *out __asm("r8") = output;
    register int32_t channels __asm("r9") = p->out_c;
    register int32_t n __asm("r10") = size;
    register int32_t back __asm("r11") = ((size + 15) & ~15) - size; /* the last chunk's overrun of a row */
    const int32x4_t zp = vdupq_n_s32(p->output_offset), act_min = vdupq_n_s32(p->act_min);
    const int32x4_t act_max = vdupq_n_s32(p->act_max);
    __asm volatile(
        "2:\n\t"
        "ldr r0, [%[t]], #4\n\t"
        "mov r2, r0\n\t"
        "mov r4, r0\n\t"
        "mov r6, r0\n\t"
        "mov %[c], %[base]\n\t"
        "dlstp.8 lr, %[n]\n"
        "1:\n\t"
        "vldrb.8 q1, [%[w]], #16\n\t"
        "vldrb.8 q2, [%[c]], #16\n\t"
        "vmladava.s8 r0, q2, q1\n\t"
        "vldrb.8 q2, [%[c]], #16\n\t"
        "vmladava.s8 r2, q2, q1\n\t"
        "vldrb.8 q2, [%[c]], #16\n\t"
        "vmladava.s8 r4, q2, q1\n\t"
        "vldrb.8 q2, [%[c]], #16\n\t"
        "vmladava.s8 r6, q2, q1\n\t"
        "letp lr, 1b\n\t"
        "sub %[w], %[w], %[back]\n\t"
        "vmov q0[2], q0[0], r0, r4\n\t"
        "vmov q0[3], q0[1], r2, r6\n\t"
        "ldrd r0, r2, [%[t]], #8\n\t"
        "vqrdmulh.s32 q0, q0, r0\n\t"
        "vshr.s32 q1, q0, #31\n\t"
        "vadd.i32 q0, q0, q1\n\t"
        "vrshl.s32 q0, r2\n\t"
        "vadd.i32 q0, q0, %q[zp]\n\t"
        "vmax.s32 q0, q0, %q[lo]\n\t"
        "vmin.s32 q0, q0, %q[hi]\n\t"
        "vstrb.32 q0, [%[out], %q[off]]\n\t"
        "adds %[out], #1\n\t"
        "subs %[channels], #1\n\t"
        "bne 2b"
        : [w] "+r"(w), [c] "+r"(c), [t] "+r"(t), [out] "+r"(out), [channels] "+r"(channels)
        : [base] "r"(base), [n] "r"(n), [back] "r"(back), [zp] "w"(zp), [lo] "w"(act_min), [hi] "w"(act_max),
          [off] "w"(offsets)
        : "r0", "r2", "r4", "r6", "lr", "q0", "q1", "q2", "cc", "memory");
}

/* The same for any shifts (TFLM's requantisation on four lanes, zoedge_requantize_mve). */
static void columns_to_outputs_general(const zoedge_conv_params *p, const int8_t *cols, const int8_t *filter,
                                       const int32_t *table, int32_t size, int8_t *out, const uint32x4_t offsets)
{
    const int32x4_t act_min = vdupq_n_s32(p->act_min), act_max = vdupq_n_s32(p->act_max);
    for (int32_t oc = 0; oc < p->out_c; ++oc, table += CHANNEL_WORDS) {
        const int32x4_t acc = dot_4x1(cols, filter + oc * size, size, table[0]);
        vstrbq_scatter_offset_s32(out + oc, offsets, zoedge_requantize_mve(acc, table[1], table[2], p->output_offset,
                                                                           act_min, act_max));
    }
}

static void columns_to_outputs_any(const zoedge_conv_params *p, const int8_t *cols, const int8_t *filter,
                                   const int32_t *table, int32_t size, int fast, int8_t *out,
                                   const uint32x4_t offsets)
{
    if (fast) {
        columns_to_outputs_fast(p, cols, filter, table, size, out, offsets);
    } else {
        columns_to_outputs_general(p, cols, filter, table, size, out, offsets);
    }
}

/* The positions pos .. pos + 3 (the last one repeated past `positions`) as output offsets. */
ZOEDGE_INLINE uint32x4_t position_offsets(int32_t pos, int32_t positions, int32_t out_c, int32_t index[COLUMNS])
{
    uint32_t lanes[COLUMNS];
    for (int32_t j = 0; j < COLUMNS; ++j) {
        index[j] = pos + j < positions ? pos + j : positions - 1;
        lanes[j] = (uint32_t)((index[j] - pos) * out_c);
    }
    return vld1q_u32(lanes);
}

void zoedge_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                    const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->kernel_h * p->kernel_w * p->in_c;
    int32_t *table = (int32_t *)scratch;
    int8_t *cols = columns_of(p, scratch), *band = cols + 4 * ((size + 15) & ~15);
    const conv_band b = band_of(p);
    conv_piece *pieces = (conv_piece *)(void *)(band + ((b.rows * b.row_bytes + 3) & ~3));
    const int32_t count = window_pieces(p, &b, pieces);
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    int32_t band_row = -1; /* the output row whose band is filled */
    channel_table(p, filter, bias, size, table);
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            const int32_t oy = index[j] / p->out_w;
            if (oy != band_row) { /* positions come in row order: a row's band is filled once */
                fill_band(band, &b, p, input, oy);
                band_row = oy;
            }
            fill_column(cols, j, band + (index[j] % p->out_w) * p->stride_w * p->in_c, pieces, count);
        }
        columns_to_outputs_any(p, cols, filter, table, size, fast, output + pos * p->out_c, offsets);
    }
}

void zoedge_conv_2d_1x1(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, int8_t *output, void *scratch)
{
    const int32_t size = p->in_c;
    int32_t *table = (int32_t *)scratch;
    int8_t *cols = columns_of(p, scratch);
    const int fast = zoedge_all_shifts_negative(p->shift, p->out_c);
    const int32_t positions = p->out_h * p->out_w;
    channel_table(p, filter, bias, size, table);
    for (int32_t pos = 0; pos < positions; pos += COLUMNS) {
        int32_t index[COLUMNS];
        const uint32x4_t offsets = position_offsets(pos, positions, p->out_c, index);
        for (int32_t j = 0; j < COLUMNS; ++j) {
            fill_pixel(cols, j, input + index[j] * size, size);
        }
        columns_to_outputs_any(p, cols, filter, table, size, fast, output + pos * p->out_c, offsets);
    }
}

#endif
