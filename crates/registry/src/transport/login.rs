//! `kiln login`'s check: the registry's challenge answered with the user's credential, the way
//! `docker login` does it, before anything is saved.

use super::*;

impl RegistryClient {
    /// Checks `credential` against `registry` the way `docker login` does: `GET /v2/`, answering
    /// the registry's challenge with the credential. Returns an identity token to store instead of
    /// the password when the registry's token server issued one.
    pub async fn login(
        &self,
        registry: &str,
        credential: &Credential,
    ) -> Result<Option<Credential>, RegistryError> {
        let api_host = crate::reference::api_host_of(registry);
        let repo = self.registry_repo(registry, &api_host)?;
        let object = "login";
        let base = repo.base.clone();
        let get_v2 = |http: &reqwest::Client| Ok(http.get(base.clone()));
        let response = self
            .with_retries(&repo, object, async || {
                self.send_once(&repo, object, &get_v2, None).await
            })
            .await?;
        if response.status().is_success() {
            return Ok(None); // The registry wants no credentials; Docker stores them anyway.
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            return Err(status_error(&repo, object, response).await);
        }
        let challenges = challenges_of(&response);
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            Challenge::Basic { .. } => None,
        });
        let (authorization, identity_token) = if let Some((realm, service, scope)) = bearer {
            let realm_url = Url::parse(realm).map_err(|e| RegistryError::Auth {
                registry: registry.to_owned(),
                message: format!("token realm {realm:?} is not a URL: {e}"),
            })?;
            let scopes: Vec<String> = scope.iter().cloned().collect();
            let token = fetch_token(
                &self.http_for(&realm_url)?,
                registry,
                &TokenRequest {
                    realm,
                    service: service.as_deref(),
                    scopes: &scopes,
                    credential: Some(credential),
                    offline: true,
                },
            )
            .await?;
            let identity = token.refresh_token.clone().map(Credential::IdentityToken);
            (Authorization::Bearer(token.value), identity)
        } else if let Credential::Basic { username, password } = credential {
            let authorization = Authorization::Basic {
                username: username.clone(),
                password: password.clone(),
            };
            (authorization, None)
        } else {
            return Err(unauthorized(registry, Some(credential)));
        };
        let response = self
            .send_once(&repo, object, &get_v2, Some(&authorization))
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(unauthorized(registry, Some(credential)));
        }
        check_status(&repo, object, response, &[StatusCode::OK]).await?;
        Ok(identity_token)
    }
}
