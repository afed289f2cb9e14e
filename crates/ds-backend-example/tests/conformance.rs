//! The whole conformance suite on the example backend: the one line a vendor adds. Its f16
//! cells are expected to refuse (the backend declares f16 unsupported), every other cell to
//! match the oracle.

conformance::backend_tests!(example, ds_backend_example::ExampleBackend::new());
