// OpenMPI defines its handles as casts of globals, which Swift cannot import; these getters expose them.
#include <mpi.h>
static inline MPI_Comm kd_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype kd_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype kd_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype kd_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op kd_mpi_sum(void) { return MPI_SUM; }
static inline void *kd_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int kd_mpi_success(void) { return MPI_SUCCESS; }
