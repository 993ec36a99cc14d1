//! Probes of running services. `http` is a dependency-free HTTP/1.1 GET for the container
//! healthcheck, which runs in a `FROM scratch` image with no curl, shell or TLS.

pub mod http;
pub mod https;
pub mod timing;
