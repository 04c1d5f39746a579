/*
 * Stand-in libfabric.so.1 for hpcc's test images.  NOT a real libfabric.
 * fi_version() reports API 1.0, so fabric-version shows "libfabric 1.0"
 * until the hook injects the host's real library.
 */
#include <stdint.h>

#define FI_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))

uint32_t fi_version(void)
{
    return FI_VERSION(1, 0);
}
