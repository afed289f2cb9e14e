//! The whole conformance suite on the CPU backend, stamped out by the one-line macro.

conformance::backend_tests!(cpu, ds_core::cpu::CpuBackend::new());
