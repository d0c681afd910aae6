//! End-to-end tests: one test binary, one module per concern (see integration/src/lib.rs).

mod cli;
mod compat_node;
mod compat_python;
mod compat_testbed;
mod core;
mod deploy;
mod doctor;
mod fleet;
mod grpc_requests;
mod hostile;
mod limits;
mod observability;
mod otlp;
mod protocol;
mod put_storage;
mod reliability;
mod security;
mod sources;
mod tools;
mod tools_tls;
mod topology;
mod validation;
