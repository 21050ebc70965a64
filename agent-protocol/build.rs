//! Generates the agent protocol's Rust code (messages and the ttrpc service/client) from
//! proto/agent.proto with ttrpc-codegen (pure Rust, no protoc).

use std::path::PathBuf;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("proto");
    std::fs::create_dir_all(&out).expect("creating OUT_DIR/proto");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    Codegen::new()
        .inputs(["proto/agent.proto"])
        .include("proto")
        .rust_protobuf()
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .customize(Customize::default())
        .out_dir(&out)
        .run()
        .expect("generating the agent protocol");
    // `include!` cannot take inner attributes or inner doc comments.
    for entry in std::fs::read_dir(&out).expect("reading OUT_DIR/proto") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("reading generated code");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#!") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("writing generated code");
    }
}
