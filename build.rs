//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates:
//! - server code in which `flagd.sync.v1.SyncFlagsResponse` is our own pre-encoded
//!   message type (`crate::wire::EncodedSyncFlagsResponse`), so a snapshot is encoded
//!   once and shared by every stream;
//! - plain client code (for `watch`, the tests and the benchmarks);
//! - a file descriptor set for gRPC server reflection.
//!
//! It also exports `FLAGD_SCHEMA_VERSION` (the vendored flagd schemas' release, from
//! `src/flags/schemas/version.txt`) for `--version` and the strict checks.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/flagd/sync/v1/sync.proto",
        "proto/sync/v1/sync_service.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let schema_version = "src/flags/schemas/version.txt";
    println!("cargo:rerun-if-changed={schema_version}");
    let version = std::fs::read_to_string(schema_version)?;
    println!("cargo:rustc-env=FLAGD_SCHEMA_VERSION={}", version.trim());

    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let server_out = out.join("server");
    std::fs::create_dir_all(&server_out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_out)
        .extern_path(
            ".flagd.sync.v1.SyncFlagsResponse",
            "crate::wire::EncodedSyncFlagsResponse",
        )
        .extern_path(
            ".sync.v1.SyncFlagsResponse",
            "crate::wire::EncodedLegacySyncFlagsResponse",
        )
        .compile_fds(fds.clone())?;

    let client_out = out.join("client");
    std::fs::create_dir_all(&client_out)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .out_dir(&client_out)
        .compile_fds(fds)?;
    Ok(())
}
