//! Link the herald binary with packed relative relocations (DT_RELR) on Linux.
//!
//! herald is position-independent (ASLR), so the loader patches every pointer in its
//! read-only-after-relocation data at start. As classic RELA entries that table is 1.5 MB,
//! read in full at every start and resident for good; as RELR it is 25 KB. Supported by
//! binutils ≥ 2.38 and lld, glibc ≥ 2.36 and musl ≥ 1.2.4 (Rust's own musl is newer); a
//! loader without it refuses the binary at once, it never misbehaves.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
