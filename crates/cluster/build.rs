//! Compiles the cluster's internal proto (`proto/latentdb/cluster/v1/cluster.proto`) and the
//! subset of etcd's v3 API it calls (`proto/etcd/rpc.proto`) with protox: no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let cluster_root = manifest.join("../../proto");
    let cluster = cluster_root.join("latentdb/cluster/v1/cluster.proto");
    let etcd_root = manifest.join("proto");
    let etcd = etcd_root.join("etcd/rpc.proto");
    println!("cargo:rerun-if-changed={}", cluster.display());
    println!("cargo:rerun-if-changed={}", etcd.display());
    let fds = protox::compile([&cluster, &etcd], [&cluster_root, &etcd_root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
