// OpenBLAS through its CBLAS header; openblas_set_num_threads comes with it.
#include <cblas.h>
