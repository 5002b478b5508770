//! The `meshguard` binary: the gateway (`serve`) and the admin commands.

fn main() {}
