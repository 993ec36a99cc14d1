//! Probes of running services. `http` is a dependency-free HTTP/1.1 GET for the container
//! healthcheck, which runs in a `FROM scratch` image with no curl, shell or TLS; `https`
//! is deploy's pinned HTTPS GET; `timing` is a GET with a DNS/connect/TLS/TTFB breakdown
//! (`elior probe health`); `ssl`, `hello` and `grade` look at a server's TLS setup and
//! grade it (`elior probe ssl`).

pub mod grade;
pub mod hello;
pub mod http;
pub mod https;
pub mod ssl;
pub mod timing;
