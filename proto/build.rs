//! Compiles every `.proto` under `protos/` with protox (pure Rust, no `protoc` needed),
//! generates the tonic clients and servers, and writes the encoded descriptor set that
//! the gateway (routes from `google.api.http`) and gRPC reflection read.

use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "orderflow/iam/v1/iam.proto",
    "orderflow/catalog/v1/catalog.proto",
    "orderflow/order/v1/order.proto",
    "orderflow/payment/v1/payment.proto",
    "orderflow/dte/v1/dte.proto",
    "orderflow/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["protos"])?;
    // Source info keeps the comments: the gateway's OpenAPI document describes routes,
    // messages and fields with them.
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    // Encoded by protox itself so custom options (google.api.http, access) survive:
    // decoding into prost_types would drop them as unknown extension fields.
    let encoded = compiler.encode_file_descriptor_set();
    fs::write(out.join("descriptor_set.bin"), &encoded)?;

    let fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect()` helpers: they would tie this crate to tonic's transport feature.
        .build_transport(false)
        // Type names (prost::Name) let event payloads pack into google.protobuf.Any.
        .compile_fds_with_config(fds, {
            let mut config = prost_build::Config::new();
            config.enable_type_names();
            config
        })?;
    Ok(())
}
