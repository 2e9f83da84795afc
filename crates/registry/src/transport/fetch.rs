//! GETs of URLs that are not registry APIs (`ADD <url>` in a Dockerfile), over the same
//! transport as every registry request, so a download behaves like a pull on the same network:
//! the URL host's certs.d CAs and client certificate, the proxy variables (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read by reqwest when the client is built), the
//! connect and stall timeouts, the user agent, and the retry policy (connection failures,
//! resets, `429` and `5xx`, with backoff or `Retry-After`).
//!
//! No credentials are sent: the URL is not a registry, and config.json's entries are keyed by
//! registry, not by any host a Dockerfile may name.

use super::*;

impl RegistryClient {
    /// GETs `url` (`http` or `https`), retrying what a registry request would retry. Returns the
    /// response whatever its final status; a retryable status on the last try is an error.
    /// Errors name the host as their `registry` and the URL as their object.
    pub async fn get_url(&self, url: &Url) -> Result<Response, RegistryError> {
        let repo = Repo {
            registry: host_port(url),
            repository: String::new(),
            base: url.clone(),
            scopes: Vec::new(),
        };
        let object = url.as_str();
        self.with_retries(&repo, object, async || {
            let http = self.http_for(url)?;
            http.get(url.clone()).send().await.map_err(|e| {
                if e.is_connect() {
                    RegistryError::Unreachable {
                        registry: repo.registry.clone(),
                        url: object.to_owned(),
                        detail: error_chain(&e),
                    }
                } else {
                    repo.transfer(object, &e)
                }
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::ScriptedHttp;

    fn client(certs_dir: &std::path::Path) -> RegistryClient {
        RegistryClient::new(RegistryConfig {
            credentials: None,
            certs_dir: certs_dir.to_owned(),
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(1),
            ..RegistryConfig::default()
        })
        .unwrap()
    }

    const UNAVAILABLE: &str =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[tokio::test]
    async fn server_errors_are_retried_and_then_reported() {
        let none = tempfile::tempdir().unwrap();
        let base = ScriptedHttp::in_order(vec![UNAVAILABLE.into(), UNAVAILABLE.into(), OK.into()]);
        let url = Url::parse(&format!("{base}/file")).unwrap();
        let response = client(none.path()).get_url(&url).await.unwrap();
        assert_eq!(response.text().await.unwrap(), "ok");

        let base = ScriptedHttp::in_order(vec![UNAVAILABLE.into(); 3]);
        let url = Url::parse(&format!("{base}/file")).unwrap();
        let error = client(none.path()).get_url(&url).await.unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, RegistryError::GaveUp { attempts: 3, .. }),
            "{text}"
        );
        assert!(text.contains("/file") && text.contains("503"), "{text}");
    }

    #[tokio::test]
    async fn https_urls_trust_the_hosts_certs_d_ca() {
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("data.txt"), "over tls\n").unwrap();
        let server = kiln_testkit::HttpsFileServer::start(files.path()).unwrap();
        let url = Url::parse(&server.url("/data.txt")).unwrap();

        // Without certs.d the server's CA is unknown: the handshake fails, naming the URL.
        let empty = tempfile::tempdir().unwrap();
        let error = client(empty.path()).get_url(&url).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains(url.as_str()), "{text}");
        assert!(text.to_lowercase().contains("certificate"), "{text}");

        let response = client(server.certs_dir.path()).get_url(&url).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(response.text().await.unwrap(), "over tls\n");
    }
}
