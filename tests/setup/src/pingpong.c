/*
 * pingpong.c - 2-rank latency/bandwidth probe for hpcc's MPI rig.
 *
 * Rank 0 and rank 1 bounce a message ITERS times per size (after WARMUP
 * untimed rounds). Rank 0 prints one machine-readable line per size:
 *   pingpong bytes=8 iters=2000 lat_us=3.21 bw_MBps=2.49
 *   pingpong bytes=1048576 iters=50 lat_us=210.00 bw_MBps=4993.0
 *   pingpong bytes=4194304 iters=20 lat_us=900.00 bw_MBps=4660.1
 * lat_us is half the round trip; bw_MBps = bytes / lat_us (10^6 B/s).
 * Sizes and iterations: defaults above; "pingpong SCALE" multiplies the
 * iteration counts by SCALE (a float, e.g. 0.1 for a quick check).
 * Ranks beyond 1 only take part in the final barrier. Exit 2 if size < 2.
 * Rank 0 first prints the MPI library that runs (hpcc verify reads it):
 *   pingpong library=MPICH Version:	4.0.2
 * It is linked dynamically against the MPI (libmpich.so.12, libmpi.so.40):
 * in a container, the library hpcc injected is the one that runs.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    static const struct { int bytes, iters; } runs[] = {
        {8, 2000}, {1 << 20, 50}, {4 << 20, 20},
    };
    int rank, size;
    double scale = argc > 1 ? atof(argv[1]) : 1.0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) {
        char version[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(version, &len);
        version[strcspn(version, "\n")] = 0;
        printf("pingpong library=%s\n", version);
        fflush(stdout);
    }
    if (size < 2) {
        if (rank == 0)
            printf("pingpong error=need-2-ranks size=%d\n", size);
        MPI_Finalize();
        return 2;
    }
    char *buf = malloc(4 << 20);
    memset(buf, rank + 1, 4 << 20);

    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        int n = runs[r].bytes, iters = (int)(runs[r].iters * scale);
        int warm = iters / 10 + 1;
        if (iters < 1)
            iters = 1;
        double t0 = 0;
        MPI_Barrier(MPI_COMM_WORLD);
        for (int i = 0; i < warm + iters; i++) {
            if (i == warm)
                t0 = MPI_Wtime();
            if (rank == 0) {
                MPI_Send(buf, n, MPI_BYTE, 1, 7, MPI_COMM_WORLD);
                MPI_Recv(buf, n, MPI_BYTE, 1, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else if (rank == 1) {
                MPI_Recv(buf, n, MPI_BYTE, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(buf, n, MPI_BYTE, 0, 7, MPI_COMM_WORLD);
            }
        }
        double half_us = (MPI_Wtime() - t0) / iters / 2 * 1e6;
        if (rank == 0) {
            printf("pingpong bytes=%d iters=%d lat_us=%.2f bw_MBps=%.1f\n", n, iters, half_us,
                   n / half_us);
            fflush(stdout);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    free(buf);
    MPI_Finalize();
    return 0;
}
