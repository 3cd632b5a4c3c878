//! How a peer's certificate is judged. Two separate checks, made in two places:
//!
//! - during the TLS handshake, the chain: the peer's certificate must chain to the cluster's CA
//!   (rustls' `WebPkiClientVerifier` on the accepting side, [`CaVerifier`] on the connecting side);
//! - during the token handshake that follows inside TLS, the name: the certificate must name the
//!   node the peer claims in its `Hello` ([`certificate_names`], through
//!   [`crate::handshake::HandshakeStream::check_peer_name`]).
//!
//! The connecting side cannot let rustls check the name as a web client would (against the host
//! it dialled), because whom it reached is only known from the `Hello`: a producer dials a
//! bootstrap address, and every side must apply the same rule. So [`CaVerifier`] checks the chain
//! only, and the name check that follows is the same on both sides.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// True when `cert` is a certificate whose subject alternative names include the DNS name `node`.
pub fn certificate_names(cert: &CertificateDer<'_>, node: &str) -> bool {
    let (Ok(parsed), Ok(name)) = (
        ParsedCertificate::try_from(cert),
        ServerName::try_from(node),
    ) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The connecting side's verifier: the accepting side's certificate must chain to the CA; its
/// name is checked in the token handshake (see the module docs).
#[derive(Debug)]
pub(crate) struct CaVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl CaVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, algs: WebPkiSupportedAlgorithms) -> CaVerifier {
        CaVerifier { roots, algs }
    }
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
