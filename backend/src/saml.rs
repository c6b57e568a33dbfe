//! The SAML 2.0 service provider behind tenants' `saml` connections, on
//! `samael` (XML signatures checked by libxmlsec1, no canonicalization of
//! our own): the identity provider's metadata read and checked, the
//! AuthnRequest sent by the redirect binding, and the response received by
//! the POST binding, reduced to what its signature covers and checked for
//! issuer, audience, recipient and destination, `InResponseTo`, and its
//! time conditions with a small skew. Our own SP metadata is written here.

use std::str::FromStr as _;

use samael::crypto::AllowedSignatureAlgorithm;
use samael::metadata::EntityDescriptor;
use samael::schema::Assertion;
use samael::service_provider::ServiceProvider;

/// Clock skew allowed between the provider and us.
const SKEW_SECS: i64 = 60;
/// How long after it was issued an assertion is still taken.
const MAX_ISSUE_DELAY_SECS: i64 = 300;
pub const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Why a provider's metadata or response is refused; the message goes to
/// the log and the audit trail, never to the browser.
#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    #[error("the metadata is not acceptable: {0}")]
    Metadata(String),
    #[error("the response is not acceptable: {0}")]
    Response(String),
}

/// A provider's metadata, checked: what the connection shows and uses.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    pub entity_id: String,
    /// The single sign-on endpoint of the redirect binding.
    pub sso_url: String,
    descriptor: EntityDescriptor,
}

impl IdpMetadata {
    /// Reads an `EntityDescriptor` with an IdP role that signs (a signing
    /// certificate) and takes requests by the redirect binding.
    pub fn parse(xml: &str) -> Result<Self, SamlError> {
        let descriptor = EntityDescriptor::from_str(xml).map_err(|e| SamlError::Metadata(e.to_string()))?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| SamlError::Metadata("no entityID".into()))?;
        let idp = descriptor
            .idp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| SamlError::Metadata("no IDPSSODescriptor".into()))?;
        let sso_url = idp
            .single_sign_on_services
            .iter()
            .find(|s| s.binding == REDIRECT_BINDING)
            .map(|s| s.location.clone())
            .ok_or_else(|| SamlError::Metadata("no SingleSignOnService with the HTTP-Redirect binding".into()))?;
        let url = reqwest::Url::parse(&sso_url).map_err(|_| SamlError::Metadata("the SSO URL is not a URL".into()))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(SamlError::Metadata("the SSO URL is not http(s)".into()));
        }
        let provider = ServiceProvider { idp_metadata: descriptor.clone(), ..ServiceProvider::default() };
        match provider.idp_signing_certs() {
            Ok(Some(certs)) if !certs.is_empty() => {}
            _ => return Err(SamlError::Metadata("no signing certificate".into())),
        }
        Ok(Self { entity_id, sso_url, descriptor })
    }
}

/// Who the provider says signed in, from a response that checked.
#[derive(Debug, Clone)]
pub struct SamlIdentity {
    /// The NameID.
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The assertion's id, for replay protection.
    pub assertion_id: String,
    /// Until when the assertion could be replayed (unix seconds).
    pub valid_until: i64,
}

/// Our side of one connection: our entity id and ACS, their metadata.
pub struct Sp<'a> {
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    pub idp: &'a IdpMetadata,
}

impl Sp<'_> {
    fn provider(&self) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(self.entity_id.to_owned()),
            acs_url: Some(self.acs_url.to_owned()),
            metadata_url: Some(self.entity_id.to_owned()),
            slo_url: None,
            idp_metadata: self.idp.descriptor.clone(),
            authn_name_id_format: Some(EMAIL_FORMAT.to_owned()),
            allow_idp_initiated: false,
            max_issue_delay: chrono::Duration::seconds(MAX_ISSUE_DELAY_SECS),
            max_clock_skew: chrono::Duration::seconds(SKEW_SECS),
            // No SHA-1, no DSA.
            allowed_signature_algorithms: Some(vec![
                AllowedSignatureAlgorithm::RsaSha256,
                AllowedSignatureAlgorithm::RsaSha384,
                AllowedSignatureAlgorithm::RsaSha512,
                AllowedSignatureAlgorithm::EcdsaSha256,
                AllowedSignatureAlgorithm::EcdsaSha384,
                AllowedSignatureAlgorithm::EcdsaSha512,
            ]),
            ..ServiceProvider::default()
        }
    }

    /// An AuthnRequest with id `request_id` by the redirect binding: the URL
    /// to send the browser to.
    pub fn authn_request(&self, request_id: &str, relay_state: &str) -> Result<String, SamlError> {
        let mut request = self
            .provider()
            .make_authentication_request(&self.idp.sso_url)
            .map_err(|e| SamlError::Metadata(e.to_string()))?;
        request.id = request_id.to_owned();
        request
            .redirect(relay_state)
            .map_err(|e| SamlError::Metadata(e.to_string()))?
            .map(|url| url.to_string())
            .ok_or_else(|| SamlError::Metadata("no SSO URL".into()))
    }

    /// Checks a base64 `SAMLResponse` answering request `request_id`, and
    /// reads the identity from its signed assertion: the email from the
    /// attribute `email_attribute` (or the NameID when it is an email
    /// address), the name from `name_attribute`.
    pub fn verify(
        &self,
        response: &str,
        request_id: &str,
        email_attribute: &str,
        name_attribute: &str,
    ) -> Result<SamlIdentity, SamlError> {
        let assertion = self
            .provider()
            .parse_base64_response(response, Some(&[request_id]))
            .map_err(|e| SamlError::Response(e.to_string()))?;
        // An assertion must name us as its audience (samael lets one
        // without an audience restriction through).
        let audiences: Vec<&str> = assertion
            .conditions
            .as_ref()
            .and_then(|c| c.audience_restrictions.as_ref())
            .map(|r| r.iter().flat_map(|a| a.audience.iter().map(String::as_str)).collect())
            .unwrap_or_default();
        if !audiences.contains(&self.entity_id) {
            return Err(SamlError::Response(format!("the audience is not `{}`", self.entity_id)));
        }
        identity(&assertion, email_attribute, name_attribute)
    }
}

fn identity(assertion: &Assertion, email_attribute: &str, name_attribute: &str) -> Result<SamlIdentity, SamlError> {
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .filter(|n| !n.value.trim().is_empty())
        .ok_or_else(|| SamlError::Response("no NameID".into()))?;
    let attribute = |wanted: &str| {
        assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| &s.attributes)
            .find(|a| a.name.as_deref() == Some(wanted) || a.friendly_name.as_deref() == Some(wanted))
            .and_then(|a| a.values.iter().find_map(|v| v.value.clone()))
    };
    let email = attribute(email_attribute)
        .or_else(|| (name_id.format.as_deref() == Some(EMAIL_FORMAT)).then(|| name_id.value.trim().to_owned()));
    let valid_until = assertion
        .conditions
        .as_ref()
        .and_then(|c| c.not_on_or_after)
        .map(|t| t.timestamp())
        .unwrap_or_else(|| assertion.issue_instant.timestamp() + MAX_ISSUE_DELAY_SECS)
        + SKEW_SECS;
    Ok(SamlIdentity {
        subject: name_id.value.trim().to_owned(),
        email,
        name: attribute(name_attribute),
        assertion_id: assertion.id.clone(),
        valid_until,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Our SP metadata: the entity id, the ACS (POST binding), unsigned
/// requests, signed assertions wanted, email NameIDs.
pub fn sp_metadata(entity_id: &str, acs_url: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>{EMAIL_FORMAT}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
        entity = escape(entity_id),
        acs = escape(acs_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_without_signing_certificates_or_redirect_binding_is_refused() {
        let without_cert = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;
        let err = IdpMetadata::parse(without_cert).unwrap_err();
        assert!(err.to_string().contains("signing certificate"), "{err}");
        let post_only = without_cert.replace("HTTP-Redirect", "HTTP-POST");
        let err = IdpMetadata::parse(&post_only).unwrap_err();
        assert!(err.to_string().contains("HTTP-Redirect"), "{err}");
        assert!(IdpMetadata::parse("<not-metadata/>").is_err());
        assert!(IdpMetadata::parse("").is_err());
    }

    #[test]
    fn sp_metadata_escapes_and_names_the_acs() {
        let xml = sp_metadata("https://t.example/a?b=1&c=2", "https://t.example/acs");
        assert!(xml.contains(r#"entityID="https://t.example/a?b=1&amp;c=2""#), "{xml}");
        assert!(xml.contains(r#"Location="https://t.example/acs""#), "{xml}");
        assert!(EntityDescriptor::from_str(&xml).is_ok(), "our own metadata parses");
    }
}
