//! Compiles `fedx/v1/*.proto` with the vendored protoc, so building needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut protos: Vec<PathBuf> = std::fs::read_dir("fedx/v1")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();

    tonic_prost_build::configure()
        // Unimplemented RPCs answer UNIMPLEMENTED; the gateway's method table gives the clear message.
        .generate_default_stubs(true)
        .file_descriptor_set_path(out_dir.join("fedx_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from(".")])?;

    println!("cargo:rerun-if-changed=fedx/v1");
    Ok(())
}
