/*
 * Stand-in MPI library for hpcc's test images.  NOT a real MPI.
 *
 * It lets an image carry "its own" MPI (libmpich.so.12 or libmpi.so.40) whose
 * version string is recognisable, so a test can tell whether the hook replaced
 * it with the host's real library: the string below vs "MPICH Version: ...".
 *
 * Built twice by build-fixtures.sh, against the host's real headers so the
 * signatures are checked by the compiler:
 *   MPICH flavour  (default):         -I.../mpich,   SONAME libmpich.so.12
 *   Open MPI flavour (-DSTANDIN_OPENMPI): -I.../openmpi/include, SONAME libmpi.so.40
 * and once more as a deliberately broken "host" MPICH (-DSTANDIN_BROKEN): its
 * MPI_Init aborts, for the test that hpcc verify catches a broken injection.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STANDIN_OPENMPI
#define STANDIN_NAME "hpcc stand-in Open MPI 0.0 (not a real MPI)"
/* Open MPI's MPI_COMM_WORLD is the address of this exported object. */
struct ompi_predefined_communicator_t { char opaque[512]; };
struct ompi_predefined_communicator_t ompi_mpi_comm_world;
#else
#define STANDIN_NAME "hpcc stand-in MPICH 0.0 (not a real MPI)"
#endif

static int initialized;

/* Rank/size from the launcher's environment, so srun -n2 looks plausible. */
static int env_int(const char *const names[], int dflt)
{
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v)
            return atoi(v);
    }
    return dflt;
}

int MPI_Init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
#ifdef STANDIN_BROKEN
    fprintf(stderr, "hpcc stand-in: MPI_Init is deliberately broken\n");
    abort();
#endif
    initialized = 1;
    return MPI_SUCCESS;
}

int MPI_Finalize(void)
{
    initialized = 0;
    return MPI_SUCCESS;
}

int MPI_Comm_rank(MPI_Comm comm, int *rank)
{
    static const char *const names[] = {"PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", NULL};
    (void)comm;
    *rank = env_int(names, 0);
    return MPI_SUCCESS;
}

int MPI_Comm_size(MPI_Comm comm, int *size)
{
    static const char *const names[] = {"PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", NULL};
    (void)comm;
    *size = env_int(names, 1);
    return MPI_SUCCESS;
}

int MPI_Get_library_version(char *version, int *resultlen)
{
    /* version has room for MPI_MAX_LIBRARY_VERSION_STRING bytes (8192 MPICH, 256 Open MPI). */
    int n = snprintf(version, MPI_MAX_LIBRARY_VERSION_STRING, "%s", STANDIN_NAME);
    *resultlen = n;
    return MPI_SUCCESS;
}
