//! Integration tests of the module runtime, against the device simulators
//! over real TCP: drivers, transports, lifecycle, exec, status and the
//! containment of bad devices and bad drivers.

mod devices;
mod drivers;
mod lifecycle;
mod pjlink;
mod sandbox;
mod support;
