/* MPI constants that are C macros (not link-time symbols) and so invisible to bindgen.
 * MPI_IN_PLACE is ((void *) 1) in Open MPI and ((void *) -1) in MPICH: ask the header. */
#include <mpi.h>

void *ds_mpi_in_place(void) { return MPI_IN_PLACE; }
