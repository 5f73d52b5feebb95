/* zoedge_fully_connected.c: FULLY_CONNECTED (zoedge_kernels.h).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 */
#include "zoedge_kernels.h"

#include <stddef.h>

#include "zoedge_kernels_internal.h"

void zoedge_fully_connected(const zoedge_fully_connected_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output, void *scratch)
{
    (void)scratch;
    zoedge_ref_fully_connected(p, input, filter, bias, output);
}
