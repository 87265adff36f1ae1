// OpenMPI defines its handles as casts of globals, which Swift cannot import; these getters expose them.
#include <mpi.h>
static inline MPI_Comm kd_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm kd_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype kd_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype kd_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype kd_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype kd_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op kd_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op kd_mpi_max(void) { return MPI_MAX; }
static inline void *kd_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *kd_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Request kd_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Errhandler kd_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int kd_mpi_success(void) { return MPI_SUCCESS; }
static inline int kd_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int kd_mpi_any_source(void) { return MPI_ANY_SOURCE; }
