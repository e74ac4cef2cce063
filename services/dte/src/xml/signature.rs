//! XMLDSig as the SII wants it: RSA-SHA1, inclusive C14N 1.0, a `Reference` to an `ID`, and
//! `KeyInfo` with the key value and the certificate. Signing goes through bergshamra; this
//! module only builds the template and puts the signed `Signature` back in place, so the
//! bytes around it stay exactly as written.

use base64::Engine as _;
use bergshamra::{DsigContext, Key, KeysManager};
use rsa::{
    RsaPrivateKey,
    pkcs8::{EncodePrivateKey as _, LineEnding},
};

/// The SII's namespace for DTEs and envelopes.
pub const SII_NS: &str = "http://www.sii.cl/SiiDte";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// A `Signature` template referencing `#id`, placed as the last child of the element it
/// closes; `key_value` is the signer's `RSAKeyValue`.
pub fn template(id: &str, key_value: &str) -> String {
    format!(
        "<Signature xmlns=\"{DSIG_NS}\"><SignedInfo>\
<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\
<SignatureMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"/>\
<Reference URI=\"#{id}\"><Transforms>\
<Transform Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/></Transforms>\
<DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/>\
<DigestValue></DigestValue></Reference></SignedInfo><SignatureValue></SignatureValue>\
<KeyInfo><KeyValue>{key_value}</KeyValue><X509Data/></KeyInfo></Signature>"
    )
}

/// An enveloped `Signature` template over the whole document (`Reference URI=""`, the
/// enveloped-signature transform), as the SII's token request (`getToken`) is signed.
pub fn enveloped_template(key_value: &str) -> String {
    format!(
        "<Signature xmlns=\"{DSIG_NS}\"><SignedInfo>\
<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\
<SignatureMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"/>\
<Reference URI=\"\"><Transforms>\
<Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/></Transforms>\
<DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/>\
<DigestValue></DigestValue></Reference></SignedInfo><SignatureValue></SignatureValue>\
<KeyInfo><KeyValue>{key_value}</KeyValue><X509Data/></KeyInfo></Signature>"
    )
}

/// The company's signing key and certificate.
#[derive(Clone)]
pub struct SigningIdentity {
    certificate_der: Vec<u8>,
    /// The key, with the certificate as its chain, as bergshamra holds them.
    dsig_key: Key,
    /// `RSAKeyValue` of the public key, for `KeyInfo/KeyValue`.
    key_value: String,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity").finish_non_exhaustive()
    }
}

/// Why a document could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("signing: {0}")]
pub struct SignError(String);

impl From<String> for SignError {
    fn from(problem: String) -> Self {
        Self(problem)
    }
}

impl SigningIdentity {
    /// A key with its X.509 certificate (DER).
    pub fn new(key: &RsaPrivateKey, certificate_der: Vec<u8>) -> Result<Self, SignError> {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SignError(e.to_string()))?;
        Self::from_pem(pem.as_bytes(), certificate_der)
    }

    /// A PEM private key (PKCS#8 or PKCS#1) with its X.509 certificate (DER).
    pub fn from_pem(key_pem: &[u8], certificate_der: Vec<u8>) -> Result<Self, SignError> {
        let mut dsig_key = bergshamra::keys::loader::load_rsa_private_pem(key_pem)
            .map_err(|e| SignError(format!("the private key: {e}")))?;
        dsig_key.x509_chain = vec![certificate_der.clone()];
        Self::with_key(dsig_key, certificate_der)
    }

    /// A PKCS#12 file holding the key and its certificate.
    pub fn from_pkcs12(bytes: &[u8], password: &str) -> Result<Self, SignError> {
        let dsig_key = bergshamra::keys::loader::load_pkcs12(bytes, password)
            .map_err(|e| SignError(format!("the PKCS#12 file: {e}")))?;
        let certificate_der = dsig_key
            .x509_chain
            .first()
            .cloned()
            .ok_or_else(|| SignError("the PKCS#12 file holds no certificate".into()))?;
        Self::with_key(dsig_key, certificate_der)
    }

    fn with_key(dsig_key: Key, certificate_der: Vec<u8>) -> Result<Self, SignError> {
        let key_value = dsig_key
            .to_key_value_xml("")
            .ok_or_else(|| SignError("the key has no public RSA value".into()))?;
        Ok(Self {
            certificate_der,
            dsig_key,
            key_value,
        })
    }

    /// A `Signature` template referencing `#id` for this signer.
    pub fn template(&self, id: &str) -> String {
        template(id, &self.key_value)
    }

    /// Signs `<root>…</root>` (no declaration) whole, with an enveloped signature appended
    /// as the root's last child.
    pub fn sign_enveloped(&self, xml: &str) -> Result<String, SignError> {
        let close = xml
            .rfind("</")
            .ok_or_else(|| SignError("not an element".into()))?;
        let template = format!(
            "{}{}{}",
            &xml[..close],
            enveloped_template(&self.key_value),
            &xml[close..]
        );
        self.sign_last(&template)
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The certificate, PEM (what `xmlsec1 --pubkey-cert-pem` takes).
    pub fn certificate_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.certificate_der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn context(&self) -> DsigContext {
        let mut keys = KeysManager::new();
        keys.add_key(self.dsig_key.clone());
        DsigContext::new(keys)
    }

    /// Signs `xml` (no XML declaration), whose root element's last child is a [`template`]:
    /// returns `xml` with that `Signature` filled in and every other byte unchanged.
    pub fn sign_last(&self, xml: &str) -> Result<String, SignError> {
        let mut doc = uppsala::parse(xml).map_err(|e| SignError(e.to_string()))?;
        let root = doc
            .document_element()
            .ok_or_else(|| SignError("no root element".into()))?;
        let signature = doc
            .children(root)
            .into_iter()
            .rev()
            .find(|&c| doc.element(c).is_some())
            .filter(|&c| {
                doc.element(c)
                    .is_some_and(|e| e.name.local_name == "Signature")
            })
            .ok_or_else(|| SignError("the root's last element is not a Signature".into()))?;
        let range = doc
            .node_range(signature)
            .ok_or_else(|| SignError("the Signature template has no position".into()))?;
        bergshamra::dsig::sign::sign_document_node(&self.context(), &mut doc, signature)
            .map_err(|e| SignError(e.to_string()))?;
        let signed = doc.node_to_xml(signature);
        Ok(format!(
            "{}{}{}",
            &xml[..range.start],
            signed,
            &xml[range.end..]
        ))
    }
}
