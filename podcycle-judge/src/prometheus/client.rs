//! The HTTP client's connector: plain HTTP, or (with the `tls` feature) rustls with the
//! system's roots or a `--ca-file`.

use hyper_util::client::legacy::connect::HttpConnector;

use super::PrometheusError;

#[cfg(feature = "tls")]
pub(super) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
pub(super) type Connector = HttpConnector;

/// The connector for `url`'s scheme: rustls with the system's roots (or
/// `ca_file`) for https.
#[cfg(feature = "tls")]
pub(super) fn connector(
    https: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Connector, PrometheusError> {
    use hyper_rustls::ConfigBuilderExt;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let config_error = |m: String| PrometheusError::Config(m);
    // An explicit provider: the workspace may enable more than one.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS: {e}")))?;
    let tls = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                config_error(format!("cannot read --ca-file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    config_error(format!(
                        "--ca-file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    config_error(format!(
                        "--ca-file {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(config_error(format!(
                    "--ca-file {} holds no certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        // Only an https URL needs the system's roots (a container may have none).
        None if https => builder
            .with_native_roots()
            .map_err(|e| {
                config_error(format!(
                    "no trusted root certificates for https ({e}); install the system's CA \
                     bundle or pass --ca-file"
                ))
            })?
            .with_no_client_auth(),
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

#[cfg(not(feature = "tls"))]
pub(super) fn connector(
    https: bool,
    _ca_file: Option<&std::path::Path>,
) -> Result<Connector, PrometheusError> {
    if https {
        return Err(PrometheusError::Config(
            "https needs podcycle-judge built with the `tls` feature (on by default)".to_owned(),
        ));
    }
    Ok(HttpConnector::new())
}
