//! Links the `procd` binary as a position-dependent executable.
//!
//! A PIE binary has its relocated read-only data (vtables, tables of
//! string pointers) written by the loader at start: about 1.4 MiB of
//! private dirty pages in every procd process, the daemon and its keeper
//! alike. Linked with `-no-pie`, those pages stay clean and shared with the
//! file. Only the binary is affected; libraries and proc macros are not.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
