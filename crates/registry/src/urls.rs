//! URL rules of the distribution protocol as Docker applies them: `http` or `https` for a
//! host, `host[:port]` names, which URLs share an origin (credentials go only there), and upload
//! `Location`s.

use std::net::IpAddr;

use reqwest::Url;

/// `host[:port]` of a URL as Docker names registries (and their certs.d directories): the port
/// only when it is not the scheme's default.
pub(crate) fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `http` for loopback registries and those configured insecure, unless they have TLS material
/// in certs.d; `https` for every other registry.
pub(crate) fn scheme_for(
    host: &str,
    insecure_registries: &[String],
    has_certs_dir: bool,
) -> &'static str {
    let is_listed = insecure_registries
        .iter()
        .any(|entry| entry == host || (!entry.contains(':') && host_without_port(host) == entry));
    if (is_listed || is_loopback(host)) && !has_certs_dir {
        "http"
    } else {
        "https"
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split_once(']').map_or(host, |(addr, _)| addr);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback(host: &str) -> bool {
    let name = host_without_port(host);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves an upload `Location` header (absolute, or relative to the request) to a URL.
pub(crate) fn resolve_location(request_url: &Url, location: &str) -> Result<Url, String> {
    request_url
        .join(location)
        .map_err(|e| format!("Location {location:?} is not a valid URL: {e}"))
}

/// The URL that completes an upload: the location with `digest=<digest>` added to its query,
/// keeping the upload state parameters registries put there.
pub(crate) fn upload_completion_url(location: &Url, digest: &kiln_image::Digest) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> kiln_image::Digest {
        kiln_image::Digest::of(b"x")
    }

    #[test]
    fn loopback_and_listed_registries_use_http() {
        let none: &[String] = &[];
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert_eq!(scheme_for(host, none, false), "http", "{host}");
            assert_eq!(scheme_for(host, none, true), "https", "{host} with certs.d");
        }
        for host in [
            "registry-1.docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert_eq!(scheme_for(host, none, false), "https", "{host}");
        }
        let listed = vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()];
        assert_eq!(scheme_for("reg.lan:5000", &listed, false), "http");
        assert_eq!(
            scheme_for("reg.lan:6000", &listed, false),
            "https",
            "a listed port is exact"
        );
        assert_eq!(
            scheme_for("other.lan:7000", &listed, false),
            "http",
            "an entry without port covers all ports"
        );
    }

    #[test]
    fn credentials_go_only_to_the_registry_origin() {
        let base = Url::parse("https://reg.lan:5000/v2/").unwrap();
        let same = Url::parse("https://reg.lan:5000/v2/a/blobs/uploads/1?x=y").unwrap();
        assert!(same_origin(&same, &base));
        for other in [
            "https://storage.example.com/upload/1",
            "http://reg.lan:5000/v2/",
            "https://reg.lan:5001/v2/",
            "https://reg.lan/v2/",
        ] {
            assert!(!same_origin(&Url::parse(other).unwrap(), &base), "{other}");
        }
        let default_port = Url::parse("https://reg.lan/v2/").unwrap();
        assert!(same_origin(
            &Url::parse("https://reg.lan:443/x").unwrap(),
            &default_port
        ));
        assert_eq!(host_port(&base), "reg.lan:5000");
        assert_eq!(host_port(&default_port), "reg.lan");
    }

    #[test]
    fn locations_resolve_relative_and_absolute() {
        let request = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let rel = resolve_location(&request, "/v2/a/b/blobs/uploads/abc?_state=xyz").unwrap();
        assert_eq!(
            rel.as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/abc?_state=xyz"
        );
        let abs = resolve_location(&request, "https://upload.example.com/u/1").unwrap();
        assert_eq!(abs.as_str(), "https://upload.example.com/u/1");
        assert!(resolve_location(&request, "http://[bad").is_err());
    }

    #[test]
    fn completion_url_appends_digest_to_any_existing_query() {
        let d = digest();
        let plain = Url::parse("http://r/v2/a/blobs/uploads/u1").unwrap();
        assert_eq!(
            upload_completion_url(&plain, &d).as_str(),
            format!("http://r/v2/a/blobs/uploads/u1?digest=sha256%3A{}", d.hex())
        );
        let with_state = Url::parse("http://r/v2/a/blobs/uploads/u1?_state=s%3D").unwrap();
        assert_eq!(
            upload_completion_url(&with_state, &d).as_str(),
            format!(
                "http://r/v2/a/blobs/uploads/u1?_state=s%3D&digest=sha256%3A{}",
                d.hex()
            )
        );
    }
}
