/* zoedge_pool.c: MEAN and AVERAGE_POOL_2D (zoedge_kernels.h); MAX_POOL_2D is zoedge_kernels_ref.c's.
 *
 * Part of the zo-edge firmware library (firmware_export/c/, copied verbatim into every export).
 */
#include "zoedge_kernels.h"

#include "zoedge_kernels_internal.h"

void zoedge_mean(const zoedge_mean_params *p, const int8_t *input, int8_t *output)
{
    zoedge_ref_mean(p, input, output);
}

void zoedge_average_pool_2d(const zoedge_pool_params *p, const int8_t *input, int8_t *output)
{
    zoedge_ref_average_pool_2d(p, input, output);
}
