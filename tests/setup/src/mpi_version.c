/*
 * Prints which MPI library the dynamic linker gave us.  Built against the
 * host's real MPI headers; its DT_NEEDED is libmpich.so.12 (or libmpi.so.40),
 * so inside an image it shows the image's stand-in, and after the hook has
 * injected the host MPI it shows e.g. "MPICH Version: 4.0.2 ...".
 */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0, rank = -1, size = -1;

    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
        fprintf(stderr, "mpi-version: MPI_Init failed\n");
        return 1;
    }
    MPI_Get_library_version(version, &len);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    printf("%s\n", version);
    printf("rank %d of %d\n", rank, size);
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
