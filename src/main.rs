//! imgbuild: reproducible layered container images and bootable ISOs from Nix closures and
//! the workspace's own programs, natively in Rust. The modules live in the library
//! (src/lib.rs: declare new modules there, not here).

fn main() {
    imgbuild::main_entry()
}
