//! Compiles `csrc/constants.c` against the MPI found the same way rsmpi finds it, so the
//! crate can use MPI's macro-only constants (`MPI_IN_PLACE`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/constants.c");
    let lib = match build_probe_mpi::probe() {
        Ok(lib) => lib,
        Err(errors) => {
            for error in errors {
                println!("cargo:warning={error}");
            }
            // rsmpi's own build fails first with the full explanation; this is a fallback.
            println!(
                "cargo:warning=no MPI library found: install OpenMPI (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
            );
            std::process::exit(1);
        }
    };
    let mut build = cc::Build::new();
    build.file("csrc/constants.c");
    match lib.mpicc {
        Some(mpicc) => {
            build.compiler(mpicc);
        }
        None => {
            for dir in &lib.include_paths {
                build.include(dir);
            }
        }
    }
    build.compile("ds_mpi_constants");
}
