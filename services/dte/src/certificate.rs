//! The development signing certificate: when no company certificate is configured, a
//! self-signed one is generated once, kept in the `dte` schema, and used with a warning.

use std::{str::FromStr as _, time::Duration};

use rsa::{
    RsaPrivateKey,
    pkcs1v15::SigningKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding},
};
use sha2::Sha256;
use x509_cert::{
    builder::{Builder as _, CertificateBuilder, Profile},
    der::Encode as _,
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoOwned,
    time::Validity,
};

use crate::xml::signature::SigningIdentity;

/// A fresh RSA-2048 key and a self-signed certificate for `holder` (its RUT goes in the
/// common name), valid for ten years. Returns the key as PKCS#8 PEM and the certificate DER.
pub fn self_signed(holder: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, 2048)?;
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let subject = Name::from_str(&format!(
        "CN=orderflow development signer {holder},O=NOT A REAL CERTIFICATE,C=CL"
    ))?;
    let serial = SerialNumber::new(&rand::random::<[u8; 8]>()[..])?;
    let validity = Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600))?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)?;
    let certificate = builder.build::<rsa::pkcs1v15::Signature>()?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?;
    Ok((pem.to_string(), certificate.to_der()?))
}

/// The identity of a PKCS#8 PEM key and certificate DER, as [`self_signed`] makes them.
pub fn identity(key_pem: &str, certificate_der: Vec<u8>) -> anyhow::Result<SigningIdentity> {
    // Checked here so a corrupt stored key is reported as such, not as a signing failure.
    RsaPrivateKey::from_pkcs8_pem(key_pem)?;
    Ok(SigningIdentity::from_pem(
        key_pem.as_bytes(),
        certificate_der,
    )?)
}
