//! An imported private key split into the values a PKCS#11 token stores (PKCS#11 3.0, 2.3
//! and 2.9), for `C_CreateObject`: the HSM protection level keeps imported keys in the token.
//! AWS-LC parses and checks the key (as for SOFTWARE keys) and gives EC scalars and Ed25519
//! seeds; RSA's CRT values come from the `RSAPrivateKey` (RFC 8017, A.1.2) inside the PKCS#8,
//! read with the `pkcs8` and `der` crates.

use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::signature::KeyPair as _;
use der::asn1::UintRef;
use der::{Decode, Reader, SliceReader};

use super::{Inner, KeyError, KeySpec, LoadedKey};
use crate::secret::Secret;

/// The values of an imported private key, as a token's key objects hold them. Prints the
/// public values only.
#[derive(Debug)]
pub enum PrivateParts {
    /// An EC key: its private scalar (big-endian, as long as the curve's order) and its public
    /// key as an uncompressed point.
    Ec {
        /// `CKA_VALUE` of the private object.
        scalar: Secret,
        /// The uncompressed point (`04 || x || y`), for the public object's `CKA_EC_POINT`.
        point: Vec<u8>,
    },
    /// An Ed25519 key: its 32-byte private key (RFC 8032) and 32-byte public key.
    Ed25519 {
        /// `CKA_VALUE` of the private object.
        seed: Secret,
        /// The public key, for the public object's `CKA_EC_POINT`.
        public: Vec<u8>,
    },
    /// An RSA key.
    Rsa(RsaParts),
}

/// The values of an RSA private key (big-endian unsigned integers, no leading zeros).
#[derive(Debug)]
pub struct RsaParts {
    /// `CKA_MODULUS`.
    pub modulus: Vec<u8>,
    /// `CKA_PUBLIC_EXPONENT`.
    pub public_exponent: Vec<u8>,
    /// `CKA_PRIVATE_EXPONENT`.
    pub private_exponent: Secret,
    /// `CKA_PRIME_1`.
    pub prime_1: Secret,
    /// `CKA_PRIME_2`.
    pub prime_2: Secret,
    /// `CKA_EXPONENT_1`.
    pub exponent_1: Secret,
    /// `CKA_EXPONENT_2`.
    pub exponent_2: Secret,
    /// `CKA_COEFFICIENT`.
    pub coefficient: Secret,
}

impl PrivateParts {
    /// Splits `pkcs8`, a DER PKCS#8 `PrivateKeyInfo` that must be a key of `spec` (its kind,
    /// curve and size, checked by AWS-LC as for a SOFTWARE key).
    pub fn from_pkcs8(spec: KeySpec, pkcs8: &Secret) -> Result<Self, KeyError> {
        let key = LoadedKey::from_material(spec, pkcs8)?;
        let lib = |_| KeyError::Library("private key encoding");
        match &key.inner {
            Inner::Ecdsa(pair) => {
                let scalar = pair.private_key().as_be_bytes().map_err(lib)?;
                Ok(Self::Ec {
                    scalar: Secret::new(scalar.as_ref().to_vec()),
                    point: pair.public_key().as_ref().to_vec(),
                })
            }
            Inner::Ed25519(pair) => {
                // From the PKCS#8 itself: AWS-LC's `Seed` is not wiped on drop.
                let seed = ed25519_seed(pkcs8.expose()).map_err(|_| KeyError::Material(spec))?;
                Ok(Self::Ed25519 { seed, public: pair.public_key().as_ref().to_vec() })
            }
            Inner::RsaSign(_) | Inner::RsaOaep(..) => {
                rsa_parts(pkcs8.expose()).map(Self::Rsa).map_err(|_| KeyError::Material(spec))
            }
            _ => Err(KeyError::WrongKind),
        }
    }
}

/// The 32-byte private key of an Ed25519 PKCS#8 `PrivateKeyInfo` that AWS-LC has already read:
/// its `privateKey` holds a `CurvePrivateKey`, an OCTET STRING (RFC 8410, 7).
fn ed25519_seed(pkcs8: &[u8]) -> Result<Secret, der::Error> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8)?;
    let seed = <&der::asn1::OctetStringRef>::from_der(info.private_key.as_bytes())?;
    if seed.as_bytes().len() != 32 {
        return Err(der::Error::from(der::ErrorKind::Length { tag: der::Tag::OctetString }));
    }
    Ok(Secret::new(seed.as_bytes().to_vec()))
}

/// The `RSAPrivateKey` of a PKCS#8 `PrivateKeyInfo` that AWS-LC has already read as an RSA key:
/// a two-prime key (version 0), as AWS-LC accepts no other.
fn rsa_parts(pkcs8: &[u8]) -> Result<RsaParts, der::Error> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8)?;
    let mut reader = SliceReader::new(info.private_key.as_bytes())?;
    let parts = reader.sequence(|r| {
        let version = r.decode::<u8>()?;
        if version != 0 {
            return Err(der::Error::from(der::ErrorKind::Value { tag: der::Tag::Integer }));
        }
        let mut public = || r.decode::<UintRef<'_>>().map(|n| n.as_bytes().to_vec());
        let (modulus, public_exponent) = (public()?, public()?);
        let mut private = || r.decode::<UintRef<'_>>().map(|n| Secret::new(n.as_bytes().to_vec()));
        Ok(RsaParts {
            modulus,
            public_exponent,
            private_exponent: private()?,
            prime_1: private()?,
            prime_2: private()?,
            exponent_1: private()?,
            exponent_2: private()?,
            coefficient: private()?,
        })
    })?;
    reader.finish()?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Hash, RsaBits};

    #[test]
    fn ec_and_ed25519_keys_split_into_their_scalar_and_public_point() {
        for (spec, scalar_len, point_len) in
            [(KeySpec::EcdsaP256Sha256, 32, 65), (KeySpec::EcdsaP384Sha384, 48, 97), (KeySpec::Ed25519, 32, 32)]
        {
            let material = spec.generate().unwrap();
            let key = LoadedKey::from_material(spec, &material).unwrap();
            let spki = key.public_key_der().unwrap();
            match PrivateParts::from_pkcs8(spec, &material).unwrap() {
                PrivateParts::Ec { scalar, point } => {
                    assert_eq!((scalar.expose().len(), point.len()), (scalar_len, point_len), "{spec:?}");
                    assert_eq!(spec.ec_public_key_der(&point).unwrap(), spki, "{spec:?}");
                }
                PrivateParts::Ed25519 { seed, public } => {
                    assert_eq!((seed.expose().len(), public.len()), (scalar_len, point_len));
                    assert_eq!(spec.ed25519_public_key_der(&public).unwrap(), spki);
                    // The seed read from the PKCS#8 is the key's: it makes the same public key.
                    let again = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose()).unwrap();
                    assert_eq!(aws_lc_rs::signature::KeyPair::public_key(&again).as_ref(), public.as_slice());
                }
                PrivateParts::Rsa(_) => panic!("{spec:?} split as RSA"),
            }
        }
    }

    #[test]
    fn rsa_keys_split_into_crt_values_that_make_up_the_key() {
        let spec = KeySpec::RsaPss(RsaBits::B2048, Hash::Sha256);
        let material = spec.generate().unwrap();
        let PrivateParts::Rsa(p) = PrivateParts::from_pkcs8(spec, &material).unwrap() else { panic!("not RSA") };
        assert_eq!(p.modulus.len(), 256);
        assert_eq!(p.public_exponent, [1, 0, 1]);
        // The modulus's public key is the key's own.
        let spki = LoadedKey::from_material(spec, &material).unwrap().public_key_der().unwrap();
        assert_eq!(crate::keys::rsa_public_key_der(&p.modulus, &p.public_exponent).unwrap(), spki);
        for (what, v) in [
            ("d", &p.private_exponent),
            ("p", &p.prime_1),
            ("q", &p.prime_2),
            ("dp", &p.exponent_1),
            ("dq", &p.exponent_2),
            ("qinv", &p.coefficient),
        ] {
            let len = v.expose().len();
            assert!(len > 100 && v.expose()[0] != 0, "{what}: {len} bytes");
        }
        // An OAEP key's material splits too; a key of another size or kind does not.
        let oaep = KeySpec::RsaOaep(RsaBits::B2048, Hash::Sha256);
        assert!(matches!(PrivateParts::from_pkcs8(oaep, &material), Ok(PrivateParts::Rsa(_))));
        let bigger = KeySpec::RsaPss(RsaBits::B3072, Hash::Sha256);
        assert!(matches!(PrivateParts::from_pkcs8(bigger, &material), Err(KeyError::Material(_))));
        assert!(PrivateParts::from_pkcs8(KeySpec::EcdsaP256Sha256, &material).is_err());
        assert!(matches!(
            PrivateParts::from_pkcs8(KeySpec::Hmac(Hash::Sha256), &Secret::new(vec![7; 32])),
            Err(KeyError::WrongKind)
        ));
    }
}
