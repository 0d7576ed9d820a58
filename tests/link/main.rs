//! Integration tests of the master–edge link: real TLS on loopback sockets
//! (certificates from `certs::init_dev` in a temporary directory), plus
//! in-memory duplex streams for the multiplexer's edge cases.

mod adversarial;
mod fuzz;
mod liveness;
mod repository;
mod requests;
mod support;
