//! Compiles proto/chatbot.proto into the gRPC server and client (in OUT_DIR) with `protox`,
//! a protobuf compiler in Rust: no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/chatbot.proto");
    let descriptors = protox::compile(["proto/chatbot.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
