/*
 * Prints the libfabric API version (major.minor) of whichever libfabric.so.1
 * the dynamic linker loads: the image's stand-in says 1.0, the host's real
 * one (Debian 12: 1.17) shows that the hook injected it.
 * dlopen() rather than linking, so it also runs where no libfabric exists
 * (exit status 2) and needs no libfabric headers.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

int main(void)
{
    void *h = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "fabric-version: %s\n", dlerror());
        return 2;
    }
    uint32_t (*fi_version)(void) = (uint32_t (*)(void))dlsym(h, "fi_version");
    if (!fi_version) {
        fprintf(stderr, "fabric-version: %s\n", dlerror());
        return 3;
    }
    uint32_t v = fi_version();
    /* FI_MAJOR(v) = v >> 16, FI_MINOR(v) = v & 0xffff (rdma/fabric.h) */
    printf("libfabric %u.%u\n", v >> 16, v & 0xffffu);
    return 0;
}
