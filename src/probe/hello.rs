//! A hand-made TLS ClientHello, to ask a server whether it still speaks what rustls
//! refuses to: TLS 1.0 and 1.1 (RFC 8996 deprecates them; rustls cannot offer them), and
//! TLS 1.2 with only RSA key exchange or only CBC ciphers. We send one ClientHello over
//! TCP and read the first record back: a ServerHello means "accepted", an alert or a
//! closed connection means "refused". The handshake never goes further, so no keys are
//! made and nothing is sent encrypted.
//!
//! Building and reading the bytes is pure (`client_hello`, `read_answer`); `offer` does
//! the network round trip.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TLS1_0: u16 = 0x0301;
pub const TLS1_1: u16 = 0x0302;
pub const TLS1_2: u16 = 0x0303;

/// ECDHE and plain-RSA suites with CBC and SHA-1, as TLS 1.0/1.1 clients offered them.
pub const LEGACY_SUITES: &[u16] = &[
    0xC009, 0xC00A, // ECDHE-ECDSA-AES128/256-SHA
    0xC013, 0xC014, // ECDHE-RSA-AES128/256-SHA
    0x0033, 0x0039, // DHE-RSA-AES128/256-SHA
    0x002F, 0x0035, // AES128/256-SHA (RSA key exchange)
    0x000A, // DES-CBC3-SHA
];
/// TLS 1.2 suites without forward secrecy (RSA key exchange).
pub const RSA_KX_SUITES: &[u16] = &[0x009C, 0x009D, 0x003C, 0x003D, 0x002F, 0x0035];
/// TLS 1.2 suites that are not AEAD (CBC with HMAC).
pub const CBC_SUITES: &[u16] = &[
    0xC023, 0xC024, 0xC027, 0xC028, 0xC009, 0xC00A, 0xC013, 0xC014, 0x002F, 0x0035,
];

/// What the server answered to one ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// A ServerHello for this version and suite.
    Accepted { version: u16, suite: u16 },
    /// A TLS alert (its description code, e.g. 70 protocol_version, 40 handshake_failure).
    Alert { description: u8 },
    /// The server closed the connection or sent something that is not TLS.
    Closed,
}

impl Answer {
    pub fn accepted(&self) -> bool {
        matches!(self, Answer::Accepted { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Answer::Accepted { version, suite } => {
                format!("accepted ({}, suite 0x{suite:04X})", version_name(*version))
            }
            Answer::Alert { description } => {
                format!("refused (alert {})", alert_name(*description))
            }
            Answer::Closed => "refused (connection closed)".into(),
        }
    }
}

pub fn version_name(version: u16) -> &'static str {
    match version {
        TLS1_0 => "TLS 1.0",
        TLS1_1 => "TLS 1.1",
        TLS1_2 => "TLS 1.2",
        0x0304 => "TLS 1.3",
        0x0300 => "SSL 3.0",
        _ => "unknown version",
    }
}

fn alert_name(code: u8) -> String {
    match code {
        40 => "handshake_failure".into(),
        47 => "illegal_parameter".into(),
        70 => "protocol_version".into(),
        71 => "insufficient_security".into(),
        80 => "internal_error".into(),
        112 => "unrecognized_name".into(),
        other => other.to_string(),
    }
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    push_u16(out, kind);
    push_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// A ClientHello record offering `version` and `suites`, with SNI `server_name` (unless
/// it is an IP address), the usual curves, and signature algorithms for TLS 1.2.
pub fn client_hello(version: u16, server_name: &str, suites: &[u16], random: [u8; 32]) -> Vec<u8> {
    let mut body = Vec::new();
    push_u16(&mut body, version);
    body.extend_from_slice(&random);
    body.push(0); // no session id
    push_u16(&mut body, (suites.len() * 2) as u16);
    for s in suites {
        push_u16(&mut body, *s);
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    let mut ext = Vec::new();
    if server_name.parse::<std::net::IpAddr>().is_err() {
        let name = server_name.as_bytes();
        let mut sni = Vec::new();
        push_u16(&mut sni, (name.len() + 3) as u16);
        sni.push(0); // host_name
        push_u16(&mut sni, name.len() as u16);
        sni.extend_from_slice(name);
        extension(&mut ext, 0x0000, &sni);
    }
    // supported_groups: x25519, secp256r1, secp384r1
    extension(
        &mut ext,
        0x000a,
        &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
    );
    // ec_point_formats: uncompressed
    extension(&mut ext, 0x000b, &[1, 0]);
    if version >= TLS1_2 {
        let algorithms: [u16; 8] = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0201, 0x0203,
        ];
        let mut data = Vec::new();
        push_u16(&mut data, (algorithms.len() * 2) as u16);
        for a in algorithms {
            push_u16(&mut data, a);
        }
        extension(&mut ext, 0x000d, &data);
    }
    // renegotiation_info, empty: a secure-renegotiation-aware client
    extension(&mut ext, 0xff01, &[0]);
    push_u16(&mut body, ext.len() as u16);
    body.extend_from_slice(&ext);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16];
    push_u16(&mut record, TLS1_0); // record layer version, as clients send it
    push_u16(&mut record, handshake.len() as u16);
    record.extend_from_slice(&handshake);
    record
}

/// Reads the first record of the server's answer. `None` when more bytes are needed.
pub fn read_answer(bytes: &[u8]) -> Option<Answer> {
    let (&kind, rest) = bytes.split_first()?;
    match kind {
        0x15 => rest.get(5).map(|d| Answer::Alert { description: *d }),
        0x16 => {
            // record header (5) | type (1) | length (3) | version (2) | random (32) | sid
            let msg = bytes.get(5..)?;
            if *msg.first()? != 2 {
                return Some(Answer::Closed);
            }
            let version = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
            let sid_len = *msg.get(38)? as usize;
            let at = 39 + sid_len;
            let suite = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
            Some(Answer::Accepted { version, suite })
        }
        _ => Some(Answer::Closed),
    }
}

/// Sends one ClientHello to `addr` and reads whether the server accepts it.
pub async fn offer(
    addr: SocketAddr,
    server_name: &str,
    version: u16,
    suites: &[u16],
    timeout: Duration,
) -> Result<Answer> {
    let round_trip = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let random: [u8; 32] = rand::random();
        tcp.write_all(&client_hello(version, server_name, suites, random))
            .await
            .context("failed to send the ClientHello")?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(answer) = read_answer(&got) {
                return Ok(answer);
            }
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(Answer::Closed),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, round_trip)
        .await
        .unwrap_or(Ok(Answer::Closed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_well_formed_client_hello() {
        let hello = client_hello(TLS1_0, "fit.example.com", &[0xC013, 0x002F], [7; 32]);
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        let record_len = u16::from_be_bytes([hello[3], hello[4]]) as usize;
        assert_eq!(hello.len(), 5 + record_len);
        assert_eq!(hello[5], 1);
        let hs_len = u32::from_be_bytes([0, hello[6], hello[7], hello[8]]) as usize;
        assert_eq!(hs_len, record_len - 4);
        assert_eq!(&hello[9..11], &[0x03, 0x01]);
        assert_eq!(&hello[11..43], &[7; 32]);
        assert_eq!(&hello[43..48], &[0, 0, 4, 0xC0, 0x13]);
        let name = b"fit.example.com";
        assert!(hello.windows(name.len()).any(|w| w == name));
        // No SNI for an address, and signature_algorithms only from TLS 1.2.
        let by_ip = client_hello(TLS1_1, "127.0.0.1", &[0x002F], [0; 32]);
        assert!(!by_ip.windows(9).any(|w| w == b"127.0.0.1"));
        let v12 = client_hello(TLS1_2, "a", &[0x009C], [0; 32]);
        assert!(v12.windows(2).any(|w| w == [0x00, 0x0d]));
    }

    #[test]
    fn reads_server_hellos_and_alerts() {
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x00, 0x2a, 0x02, 0x00, 0x00, 0x26, 0x03, 0x01,
        ];
        hello.extend_from_slice(&[9; 32]);
        hello.push(0); // no session id
        hello.extend_from_slice(&[0xC0, 0x13, 0x00]);
        assert_eq!(
            read_answer(&hello),
            Some(Answer::Accepted {
                version: TLS1_0,
                suite: 0xC013
            })
        );
        assert_eq!(read_answer(&hello[..20]), None);
        assert_eq!(
            read_answer(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]),
            Some(Answer::Alert { description: 70 })
        );
        assert_eq!(read_answer(b"HTTP/1.1 400"), Some(Answer::Closed));
        assert!(Answer::Alert { description: 70 }
            .describe()
            .contains("protocol_version"));
    }
}
