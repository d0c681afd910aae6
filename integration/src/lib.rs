//! Test support: real redis-server processes and the service binary.
