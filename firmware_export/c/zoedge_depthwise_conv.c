/* zoedge_depthwise_conv.c: the DEPTHWISE_CONV_2D paths of zoedge_kernels.h (general, 3x3).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

void zoedge_depthwise_conv_2d(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    zoedge_ref_depthwise_conv_2d(p, input, filter, bias, output);
}

void zoedge_depthwise_conv_2d_3x3(const zoedge_conv_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    zoedge_ref_depthwise_conv_2d(p, input, filter, bias, output);
}
