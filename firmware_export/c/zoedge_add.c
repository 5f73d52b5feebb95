/* zoedge_add.c: ADD (zoedge_kernels.h), with broadcasting.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 *
 * ADD's three multipliers are all below one (TFLM's PrepareGeneralSubOp): MultiplyByQuantizedMultiplier
 * with a shift of 0 is the doubling high multiply alone, with a negative shift the rounding shift
 * follows, both by SMMLAR (zoedge_kernels_internal.h).
 *
 * DSP (Cortex-M4/M7/M33): an input's rescaled value depends on its int8 value only, so for rows long
 * enough (size >= ZOEDGE_ADD_TABLES_FROM) the call first tabulates both inputs' rescaled values for all
 * 256 int8 values (2 KiB of scratch); an output is then two loads, an add and the output's requantisation.
 * MVE (Cortex-M55): four elements per vector, the three requantisations in int32 lanes.
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

#if ZOEDGE_ISA == ZOEDGE_ISA_REF

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch)
{
    (void)scratch;
    zoedge_ref_add(p, input1, input2, output);
}

#else

/* One call's constants: the multipliers doubled and the shifts complemented for SMMLAR (m2 = 2 * multiplier,
 * r_minus_1 = ~shift), and the DSP's tables (NULL: compute each input). */
typedef struct {
    const zoedge_add_params *p;
    int32_t m1, r1, m2, r2, mo, ro;
    const int32_t *table1, *table2; /* [256]: the rescaled value of int8 value v at v + 128 */
} add_call;

/* MultiplyByQuantizedMultiplier for a multiplier below one (shift <= 0). */
ZOEDGE_INLINE int32_t scale_below_one(int32_t x, int32_t m2, int32_t shift, int32_t r_minus_1)
{
    const int32_t high = zoedge_smmlar(x, m2, x);
    if (shift == 0) {
        return high;
    }
    return (((high + (x >> 31)) >> r_minus_1) + 1) >> 1;
}

ZOEDGE_INLINE int32_t scaled_input(int32_t v, int32_t offset, int32_t left_shift, int32_t m2, int32_t shift,
                                   int32_t r_minus_1)
{
    return scale_below_one((int32_t)((uint32_t)(v + offset) << left_shift), m2, shift, r_minus_1);
}

ZOEDGE_INLINE int8_t output_of(const add_call *c, int32_t raw_sum)
{
    const zoedge_add_params *p = c->p;
    return (int8_t)zoedge_clamp(scale_below_one(raw_sum, c->mo, p->output_shift, c->ro) + p->output_offset, p->act_min,
                                p->act_max);
}

/* Any strides, element by element (the scalar DSP instructions; the M55 has them too). */
static void add_row_scalar(const add_call *c, const int8_t *input1, int32_t stride1, const int8_t *input2,
                           int32_t stride2, int8_t *output, int32_t n)
{
    const zoedge_add_params *p = c->p;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t a = c->table1 != NULL ? c->table1[input1[i * stride1] + 128]
                                            : scaled_input(input1[i * stride1], p->input1_offset, p->left_shift, c->m1,
                                                           p->input1_shift, c->r1);
        const int32_t b = c->table2 != NULL ? c->table2[input2[i * stride2] + 128]
                                            : scaled_input(input2[i * stride2], p->input2_offset, p->left_shift, c->m2,
                                                           p->input2_shift, c->r2);
        output[i] = output_of(c, a + b);
    }
}

#if ZOEDGE_ISA == ZOEDGE_ISA_DSP

/* The table loop; `narrow` a constant where this is inlined. Constants are locals: an int8 store may
 * alias anything, so a compiler reloads what it reads through pointers after every output. */
ZOEDGE_INLINE void add_row_tables(const add_call *c, const int8_t *input1, const int8_t *input2, int8_t *output,
                                  int32_t n, int narrow)
{
    const int32_t *t1 = c->table1 + 128, *t2 = c->table2 + 128;
    const int32_t mo = c->mo, ro = c->ro, zp = c->p->output_offset, offset2 = 2 * zp + 1;
    const int32_t act_min = c->p->act_min, act_max = c->p->act_max;
    if (c->p->output_shift < 0) {
        for (int32_t i = 0; i < n; ++i) {
            const int32_t v = zoedge_requantize_to_int8(t1[input1[i]] + t2[input2[i]], mo, ro, offset2);
            output[i] = (int8_t)(narrow ? zoedge_clamp(v, act_min, act_max) : v);
        }
    } else {
        for (int32_t i = 0; i < n; ++i) {
            const int32_t x = t1[input1[i]] + t2[input2[i]];
            output[i] = (int8_t)zoedge_clamp(zoedge_smmlar(x, mo, x) + zp, act_min, act_max);
        }
    }
}

static void add_row(const void *call, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const add_call *c = (const add_call *)call;
    (void)scratch;
    if (c->table1 != NULL && stride1 == 1 && stride2 == 1) {
        if (zoedge_act_narrower_than_int8(c->p->act_min, c->p->act_max)) {
            add_row_tables(c, input1, input2, output, n, 1);
        } else {
            add_row_tables(c, input1, input2, output, n, 0);
        }
        return;
    }
    add_row_scalar(c, input1, stride1, input2, stride2, output, n);
}

#else /* ZOEDGE_ISA_MVE */

/* MultiplyByQuantizedMultiplier below one on four lanes: VQRDMULH is the doubling high multiply; for a
 * negative shift the rounding shift follows (the negative-value fixup where `negative` is all ones). */
ZOEDGE_INLINE int32x4_t scale_below_one_mve(int32x4_t x, int32_t multiplier, int32_t shift, int32x4_t negative)
{
    const int32x4_t high = vqrdmulhq_n_s32(x, multiplier);
    return vrshlq_n_s32(vaddq_s32(high, vandq_s32(vshrq_n_s32(high, 31), negative)), shift);
}

/* The constants of a call, as locals and vectors (an int8 store may alias anything, so a compiler reloads
 * what it reads through pointers after every output). */
typedef struct {
    int32_t lift1, lift2, m1, s1, m2, s2, mo, so, zp;
    int32x4_t lift, n1, n2, no, act_min, act_max;
} add_lanes_k;

ZOEDGE_INLINE int32x4_t add_lanes(const add_lanes_k *k, int32x4_t a, int32x4_t b)
{
    a = scale_below_one_mve(vmlasq_n_s32(a, k->lift, k->lift1), k->m1, k->s1, k->n1);
    b = scale_below_one_mve(vmlasq_n_s32(b, k->lift, k->lift2), k->m2, k->s2, k->n2);
    const int32x4_t out = vaddq_n_s32(scale_below_one_mve(vaddq_s32(a, b), k->mo, k->so, k->no), k->zp);
    return vminq_s32(vmaxq_s32(out, k->act_min), k->act_max);
}

static void add_row(const void *call, const int8_t *input1, int32_t stride1, const int8_t *input2, int32_t stride2,
                    int8_t *output, int32_t n, void *scratch)
{
    const add_call *c = (const add_call *)call;
    const zoedge_add_params *p = c->p;
    (void)scratch;
    if (stride1 != 1 || stride2 != 1) {
        add_row_scalar(c, input1, stride1, input2, stride2, output, n);
        return;
    }
    const add_lanes_k k = {
        p->input1_offset * (1 << p->left_shift), p->input2_offset * (1 << p->left_shift), p->input1_multiplier,
        p->input1_shift, p->input2_multiplier, p->input2_shift, p->output_multiplier, p->output_shift,
        p->output_offset, vdupq_n_s32(1 << p->left_shift), vdupq_n_s32(p->input1_shift < 0 ? -1 : 0),
        vdupq_n_s32(p->input2_shift < 0 ? -1 : 0), vdupq_n_s32(p->output_shift < 0 ? -1 : 0),
        vdupq_n_s32(p->act_min), vdupq_n_s32(p->act_max)};
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        vstrbq_s32(output + i, add_lanes(&k, vldrbq_s32(input1 + i), vldrbq_s32(input2 + i)));
    }
    if (i < n) {
        const mve_pred16_t lanes = vctp32q((uint32_t)(n - i));
        vstrbq_p_s32(output + i, add_lanes(&k, vldrbq_z_s32(input1 + i, lanes), vldrbq_z_s32(input2 + i, lanes)),
                     lanes);
    }
}

#endif

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                void *scratch)
{
    if (p->input1_shift > 0 || p->input2_shift > 0 || p->output_shift > 0 || p->input1_multiplier == 0 ||
        p->input2_multiplier == 0 || p->output_multiplier == 0) {
        zoedge_ref_add(p, input1, input2, output); /* not what TFLM's ADD preparation makes */
        return;
    }
    add_call c;
    c.p = p;
    c.m1 = (int32_t)((uint32_t)p->input1_multiplier << 1);
    c.r1 = ~p->input1_shift;
    c.m2 = (int32_t)((uint32_t)p->input2_multiplier << 1);
    c.r2 = ~p->input2_shift;
    c.mo = (int32_t)((uint32_t)p->output_multiplier << 1);
    c.ro = ~p->output_shift;
    c.table1 = c.table2 = NULL;
#if ZOEDGE_ISA == ZOEDGE_ISA_DSP
    if (p->size >= ZOEDGE_ADD_TABLES_FROM) {
        int32_t *t1 = (int32_t *)scratch, *t2 = t1 + 256;
        for (int32_t v = -128; v < 128; ++v) {
            t1[v + 128] = scaled_input(v, p->input1_offset, p->left_shift, c.m1, p->input1_shift, c.r1);
            t2[v + 128] = scaled_input(v, p->input2_offset, p->left_shift, c.m2, p->input2_shift, c.r2);
        }
        c.table1 = t1;
        c.table2 = t2;
    }
#endif
    zoedge_for_each_row(p->shape, p->input1_strides, p->input2_strides, add_row, &c, input1, input2, output, scratch);
}

#endif
