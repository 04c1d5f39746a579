/*
 * ring.c - smallest real MPI job for hpcc's MPI rig (tests/setup/MPI-RIG.md).
 *
 * Every rank contributes rank+1 to an MPI_Allreduce(SUM); the expected total is
 * size*(size+1)/2. Each rank prints ONE line (machine-readable, grep-able):
 *   rank 0 of 2 sum 3 ok node=n1 pid=123 lib=MPICH Version: 4.0.2
 * "ok" or "BAD" compares the sum; node= is SLURMD_NODENAME, else the hostname.
 * Exit status 0 only when the sum is right. A job that fell apart into
 * singletons prints "rank 0 of 1 sum 1 ok" on every node.
 * Built with Debian's mpicc.mpich (-> ring-mpich) and mpicc.openmpi (-> ring-ompi).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int rank = -1, size = -1, len = 0;
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    char host[256] = "";
    const char *node = getenv("SLURMD_NODENAME");

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n\r")] = '\0'; /* first line only */
    if (!node || !*node) {
        gethostname(host, sizeof host - 1);
        node = host;
    }

    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    long want = (long)size * (size + 1) / 2;
    int ok = (sum == want);

    printf("rank %d of %d sum %ld %s node=%s pid=%d lib=%s\n", rank, size, sum,
           ok ? "ok" : "BAD", node, (int)getpid(), lib);
    fflush(stdout);
    MPI_Finalize();
    return ok ? 0 : 1;
}
