//! TLS for the decision service's listener: the server certificate, the
//! CA that callers' certificates must chain to, and the identities a
//! verified caller certificate names.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{CertificateIdentity, TlsConfig};
use crate::error::GatewayError;

/// ring's provider. rustls marks it deprecated for lacking post-quantum
/// key exchange; it needs no C toolchain beyond what the workspace already
/// has, and its signatures and ciphers are what these listeners need.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// The CA certificates of a PEM file; an error names the file.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let certificates = read_certificates(path)?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!(
            "`{}` holds no usable CA certificate",
            path.display()
        ));
    }
    Ok(roots)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|err| format!("cannot read `{}`: {err}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("`{}`: {err}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

/// The listener's TLS configuration. With a client CA, a certificate is
/// asked for and must chain to it when sent; callers that authenticate
/// with a bearer credential may still connect without one.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let failed = |message: String| GatewayError::Field(format!("`pdp.tls`: {message}"));
    let chain = read_certificates(&tls.certificate).map_err(failed)?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|err| {
        failed(format!(
            "`{}` holds no usable private key: {err}",
            tls.private_key.display()
        ))
    })?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| failed(err.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let roots = read_roots(ca).map_err(failed)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|err| failed(format!("`client_ca`: {err}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| failed(format!("the certificate and key do not fit: {err}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS and URI subject alternative names of a certificate that rustls
/// has already verified against the client CA.
pub fn certificate_identities(certificate: &CertificateDer<'_>) -> Vec<CertificateIdentity> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(names)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(CertificateIdentity::DnsName((*dns).to_owned())),
            GeneralName::URI(uri) => Some(CertificateIdentity::Uri((*uri).to_owned())),
            _ => None,
        })
        .collect()
}

impl CertificateIdentity {
    /// Whether a certificate's name is this identity: DNS names without
    /// regard to case, URIs exactly.
    pub fn matches(&self, presented: &Self) -> bool {
        match (self, presented) {
            (Self::DnsName(wanted), Self::DnsName(name)) => wanted.eq_ignore_ascii_case(name),
            (Self::Uri(wanted), Self::Uri(uri)) => wanted == uri,
            _ => false,
        }
    }
}
