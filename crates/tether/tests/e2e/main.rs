//! End-to-end tests: the real `tether` binary as gateway and as demo
//! upstream, on loopback, driven over HTTP.

#![allow(dead_code)]

mod caching;
mod connect;
mod durability;
mod eras;
mod federation;
mod harness;
mod isolation;
mod lifecycle;
mod listen;
mod protocol;
mod security;
mod sse_client;
mod sse_demo;
mod sse_gateway;
mod stdio;
mod streaming;
mod tasks;
mod virtual_servers;
