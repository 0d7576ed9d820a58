//! Console benchmark (written below).
fn main() {}
