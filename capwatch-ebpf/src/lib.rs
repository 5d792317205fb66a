#![no_std]
// The programs are the `capwatch` binary (src/main.rs); this library target exists so that
// `capwatch` can list this crate as a build-dependency and be rebuilt when it changes.
