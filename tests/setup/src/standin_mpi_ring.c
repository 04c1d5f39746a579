/*
 * More of the stand-in MPI (see standin_mpi.c), linked into the same library
 * for the MPI rig images (build-mpi-fixtures.sh), so that ring and pingpong
 * load with the image's own "MPI". It is a singleton MPI: Allreduce copies,
 * Send/Recv fail. A ring run on it prints "... sum 1 BAD ... lib=hpcc stand-in"
 * (or "sum 1 ok" with size 1): proof that the host MPI was NOT injected.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef STANDIN_OPENMPI
/* Handles are addresses of these exported objects (sizes as in Open MPI 4.1). */
struct ompi_predefined_datatype_t { char opaque[512]; };
struct ompi_predefined_op_t { char opaque[2048]; };
struct ompi_predefined_datatype_t ompi_mpi_long, ompi_mpi_byte, ompi_mpi_char, ompi_mpi_double;
struct ompi_predefined_op_t ompi_mpi_op_sum;
static int dt_size(MPI_Datatype t)
{
    if (t == MPI_LONG || t == MPI_DOUBLE)
        return 8;
    return 1;
}
#else
/* MPICH builtin datatype handles carry their size in bits 8..15. */
static int dt_size(MPI_Datatype t) { return ((int)t >> 8) & 0xff; }
#endif

int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype t, MPI_Op op,
                  MPI_Comm comm)
{
    (void)op;
    (void)comm;
    if (sendbuf != MPI_IN_PLACE)
        memcpy(recvbuf, sendbuf, (size_t)count * dt_size(t));
    return MPI_SUCCESS;
}

int MPI_Barrier(MPI_Comm comm)
{
    (void)comm;
    return MPI_SUCCESS;
}

int MPI_Send(const void *buf, int count, MPI_Datatype t, int dest, int tag, MPI_Comm comm)
{
    (void)buf; (void)count; (void)t; (void)tag; (void)comm;
    fprintf(stderr, "hpcc stand-in MPI: MPI_Send to rank %d: not a real MPI\n", dest);
    return MPI_ERR_RANK;
}

int MPI_Recv(void *buf, int count, MPI_Datatype t, int src, int tag, MPI_Comm comm,
             MPI_Status *st)
{
    (void)buf; (void)count; (void)t; (void)tag; (void)comm; (void)st;
    fprintf(stderr, "hpcc stand-in MPI: MPI_Recv from rank %d: not a real MPI\n", src);
    return MPI_ERR_RANK;
}

double MPI_Wtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int MPI_Abort(MPI_Comm comm, int code)
{
    (void)comm;
    exit(code);
}
