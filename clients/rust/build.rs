//! Generates the client from the committed spec, so the client can never
//! drift from what the server documents (the server's own test keeps the
//! spec equal to the code).

use std::error::Error;
use std::path::PathBuf;

const SPEC: &str = "../../openapi/kv-store.json";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={SPEC}");
    let spec = serde_json::from_reader(std::fs::File::open(SPEC)?)?;
    let tokens = progenitor::Generator::default().generate_tokens(&spec)?;
    let code = prettyplease::unparse(&syn::parse2(tokens)?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("codegen.rs");
    std::fs::write(out, code)?;
    Ok(())
}
