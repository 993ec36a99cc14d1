//! What a TLS server actually serves: connect to an address with SNI, complete the
//! handshake and return the presented chain. Used to confirm that nginx serves the
//! certificate on disk after a reload.
//!
//! A TLS handshake of its own, not an HTTP request: the chain is what it wants. Requests
//! go through [`crate::http`].
//!
//! The handshake accepts any certificate on purpose: this module reports what is
//! served and never decides trust (`inspect::verify_chain` does that). It must not be
//! used to send secrets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Fetches the chain served at `addr` for `server_name` (sent as SNI).
pub async fn served_chain(
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>> {
    let stream = connect(addr, server_name, timeout).await?;
    let (_, session) = stream.get_ref();
    let chain = session
        .peer_certificates()
        .ok_or_else(|| anyhow!("{addr} presented no certificate"))?;
    Ok(chain.iter().map(|c| c.clone().into_owned()).collect())
}

/// Sends `GET path` over HTTPS to `addr` with SNI and Host `server_name`, and returns
/// the status code. For checks that a TLS listener answers requests; like the chain above
/// it accepts any certificate.
pub async fn https_get_status(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16> {
    let client = crate::http::ClientBuilder::new(crate::http::Trust::Insecure)
        .connect_to(addr.ip())
        .connect_timeout(timeout)
        .response_timeout(timeout)
        .fresh_connections()
        .build()?;
    let url = format!("https://{server_name}:{}{path}", addr.port());
    let reply = client
        .get(&url)
        .await
        .with_context(|| format!("https://{server_name}{path} at {addr}"))?;
    Ok(reply.status.as_u16())
}

async fn connect(
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let config = observing_config(rustls::DEFAULT_VERSIONS, ObserveOnly::any())?;
    connect_with(config, addr, server_name, timeout).await
}

/// TCP connect plus TLS handshake with `config`, SNI `server_name`, bounded by `timeout`.
pub async fn connect_with(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| anyhow!("{server_name:?} is not a server name: {e}"))?;
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr} (SNI {server_name}) failed"))
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result,
        Err(_) => bail!("TLS handshake with {addr} did not finish within {timeout:?}"),
    }
}

/// A client config (ring, the given protocol versions) that trusts by `verifier`.
pub fn observing_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
    verifier: Arc<ObserveOnly>,
) -> Result<rustls::ClientConfig> {
    Ok(
        rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
            .with_protocol_versions(versions)
            .context("TLS setup failed")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

/// A verifier that decides no trust, for looking at what a server presents: it accepts
/// any certificate, or with a pin exactly one (deploy's proof that nginx serves the file
/// on disk). Handshake signatures are still checked, so the server must hold the key of
/// the certificate it presents.
#[derive(Debug)]
pub struct ObserveOnly {
    pin: Option<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ObserveOnly {
    pub fn any() -> Arc<Self> {
        Self::new(None)
    }

    pub fn pinned(leaf: CertificateDer<'static>) -> Arc<Self> {
        Self::new(Some(leaf))
    }

    fn new(pin: Option<CertificateDer<'static>>) -> Arc<Self> {
        Arc::new(ObserveOnly {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

impl ServerCertVerifier for ObserveOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            Some(leaf) if leaf.as_ref() != end_entity.as_ref() => Err(rustls::Error::General(
                "the served certificate is not the one in nginx/ssl/ (a reload pending, or another server on the port?)".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
