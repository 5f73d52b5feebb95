/* zoedge_add.c: ADD (zoedge_kernels.h).
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 */
#include "zoedge_kernels.h"

#include "zoedge_kernels_internal.h"

void zoedge_add(const zoedge_add_params *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    zoedge_ref_add(p, input1, input2, output);
}
