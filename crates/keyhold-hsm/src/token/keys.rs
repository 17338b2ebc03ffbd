//! The keys of the other Cloud KMS purposes inside the token (issue 19): EC, Ed25519 and RSA key
//! pairs that sign and decrypt, HMAC keys, and raw AES keys. The private (or secret) object is
//! sensitive and never extractable; a pair's public object carries the same label and `CKA_ID`.
//! The token signs the digest the KMS hands it (`CKM_ECDSA`, `CKM_RSA_PKCS` over a `DigestInfo`,
//! `CKM_RSA_PKCS_PSS`) or the data (`CKM_EDDSA`, HMAC) and returns raw values, which
//! `keyhold_crypto` turns into Cloud KMS's encodings.

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki_sys::CK_AES_CTR_PARAMS;
use keyhold_crypto::Secret;
use keyhold_crypto::keys::{
    AES_BLOCK_LEN, AesMode, GCM_NONCE_LEN, GCM_TAG_LEN, Hash, KeySpec, PrivateParts, RawCiphertext,
};

use super::{Call, HsmToken, lock, wipe};
use crate::error::{classify, is_stale_handle};
use crate::key_ref::validate_label;
use crate::{HsmError, HsmKeyRef};

/// Whether the token holds keys of `spec` (what [`HsmToken::generate_key_of`] makes).
/// RSA-OAEP only with SHA-1: SoftHSM2 (the token Keyhold is tested against) refuses the OAEP
/// parameters of SHA-256 and SHA-512 (`CKR_ARGUMENTS_BAD`), so those keys are not offered
/// rather than failing at their first use.
pub fn supports(spec: KeySpec) -> bool {
    matches!(
        spec,
        KeySpec::EcdsaP256Sha256
            | KeySpec::EcdsaP384Sha384
            | KeySpec::EcdsaSecp256k1Sha256
            | KeySpec::Ed25519
            | KeySpec::RsaPss(..)
            | KeySpec::RsaPkcs1(..)
            | KeySpec::RsaRawPkcs1(_)
            | KeySpec::RsaOaep(_, Hash::Sha1)
            | KeySpec::Hmac(_)
            | KeySpec::Aes(..)
    )
}

/// Where a key's object of `class` sits in [`KeyParts`].
fn part_slot(class: ObjectClass) -> Option<usize> {
    match class {
        ObjectClass::PRIVATE_KEY => Some(0),
        ObjectClass::PUBLIC_KEY => Some(1),
        ObjectClass::SECRET_KEY => Some(2),
        _ => None,
    }
}

/// The cached handles of one key's objects: its private half, public half and secret key.
pub(super) type KeyParts = [Option<ObjectHandle>; 3];

fn unsupported(spec: KeySpec) -> HsmError {
    HsmError::invalid(format!("keys of kind {spec:?} are not made in the token"))
}

fn hash_mechanism(h: Hash) -> MechanismType {
    match h {
        Hash::Sha1 => MechanismType::SHA1,
        Hash::Sha224 => MechanismType::SHA224,
        Hash::Sha256 => MechanismType::SHA256,
        Hash::Sha384 => MechanismType::SHA384,
        Hash::Sha512 => MechanismType::SHA512,
    }
}

fn mgf(h: Hash) -> PkcsMgfType {
    match h {
        Hash::Sha1 => PkcsMgfType::MGF1_SHA1,
        Hash::Sha224 => PkcsMgfType::MGF1_SHA224,
        Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
        Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
        Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}

fn hmac_mechanism_type(h: Hash) -> MechanismType {
    match h {
        Hash::Sha1 => MechanismType::SHA1_HMAC,
        Hash::Sha224 => MechanismType::SHA224_HMAC,
        Hash::Sha256 => MechanismType::SHA256_HMAC,
        Hash::Sha384 => MechanismType::SHA384_HMAC,
        Hash::Sha512 => MechanismType::SHA512_HMAC,
    }
}

/// The one mechanism a key of `spec` is used with (`CKA_ALLOWED_MECHANISMS`): a key that signs
/// with PSS cannot be used for a raw RSA operation, nor an OAEP key as a PKCS#1 v1.5 oracle.
fn allowed_mechanism(spec: KeySpec) -> Option<MechanismType> {
    Some(match spec {
        KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 => MechanismType::ECDSA,
        KeySpec::Ed25519 => MechanismType::EDDSA,
        KeySpec::Aes(_, AesMode::Gcm) => MechanismType::AES_GCM,
        KeySpec::Aes(_, AesMode::Cbc) => MechanismType::AES_CBC,
        KeySpec::Aes(_, AesMode::Ctr) => MechanismType::AES_CTR,
        KeySpec::RsaPkcs1(..) | KeySpec::RsaRawPkcs1(_) => MechanismType::RSA_PKCS,
        KeySpec::RsaPss(..) => MechanismType::RSA_PKCS_PSS,
        KeySpec::RsaOaep(..) => MechanismType::RSA_PKCS_OAEP,
        KeySpec::Hmac(h) => hmac_mechanism_type(h),
        _ => return None,
    })
}

/// `CKM_AES_CTR`'s parameters (PKCS#11 3.0, 2.10.5): the IV is the whole 16-byte counter block,
/// incremented as one 128-bit big-endian number, as Cloud KMS's (and OpenSSL's) AES-CTR does.
fn ctr_params(iv: &[u8]) -> Result<CK_AES_CTR_PARAMS, HsmError> {
    let cb: [u8; AES_BLOCK_LEN] = iv.try_into().map_err(|_| HsmError::invalid("the IV is 16 bytes"))?;
    Ok(CK_AES_CTR_PARAMS { ulCounterBits: 128, cb })
}

/// The `CKM_AES_CTR` mechanism with `params`. `cryptoki` 0.12 has no typed `AesCtr` mechanism;
/// its generic constructor passes the PKCS#11 structure (from `cryptoki-sys`) as it is.
fn ctr_mechanism(params: &CK_AES_CTR_PARAMS) -> Mechanism<'_> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(MechanismType::AES_CTR, Some(params)))
}

/// A malformed answer of the token (a signature or public key the KMS cannot encode): the
/// token's fault, not the caller's.
fn token_answer(e: keyhold_crypto::keys::KeyError) -> HsmError {
    HsmError::Unsupported { detail: format!("the token's answer cannot be used: {e}") }
}

fn hmac_mechanism(h: Hash) -> Mechanism<'static> {
    match h {
        Hash::Sha1 => Mechanism::Sha1Hmac,
        Hash::Sha224 => Mechanism::Sha224Hmac,
        Hash::Sha256 => Mechanism::Sha256Hmac,
        Hash::Sha384 => Mechanism::Sha384Hmac,
        Hash::Sha512 => Mechanism::Sha512Hmac,
    }
}

/// The templates of a key's objects, generated or imported alike: a token object labelled and
/// identified as `key`, usable with its one mechanism; the private (or secret) object private,
/// sensitive and never extractable, signing or decrypting only; the public object verifying or
/// encrypting only.
struct Templates {
    named: [Attribute; 3],
    signs: bool,
    spec: KeySpec,
}

impl Templates {
    fn new(key: &HsmKeyRef, spec: KeySpec) -> Result<Self, HsmError> {
        let allowed = allowed_mechanism(spec).ok_or_else(|| unsupported(spec))?;
        let named = [
            Attribute::Label(key.label().as_bytes().to_vec()),
            Attribute::Id(key.id().to_vec()),
            Attribute::AllowedMechanisms(vec![allowed]),
        ];
        let signs = !matches!(spec, KeySpec::RsaOaep(..) | KeySpec::Aes(..));
        Ok(Self { named, signs, spec })
    }

    fn private(&self) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Sign(self.signs),
            Attribute::Decrypt(!self.signs),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        t.extend_from_slice(&self.named);
        t
    }

    /// A pair's public and private templates, with the key type and curve where they are
    /// needed (`None` for a secret key).
    fn pair(&self) -> Option<(Vec<Attribute>, Vec<Attribute>)> {
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Modifiable(false),
            Attribute::Verify(self.signs),
            Attribute::VerifyRecover(false),
            Attribute::Encrypt(!self.signs),
            Attribute::Wrap(false),
        ];
        public.extend_from_slice(&self.named);
        let mut private = self.private();
        private.push(Attribute::SignRecover(false));
        let key_type = match self.spec {
            KeySpec::Ed25519 => KeyType::EC_EDWARDS,
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 => KeyType::EC,
            KeySpec::RsaPss(..) | KeySpec::RsaPkcs1(..) | KeySpec::RsaRawPkcs1(_) | KeySpec::RsaOaep(..) => {
                KeyType::RSA
            }
            _ => return None,
        };
        private.push(Attribute::KeyType(key_type));
        if let Some(params) = self.spec.ec_params_der() {
            public.push(Attribute::EcParams(params.to_vec()));
        }
        Some((public, private))
    }

    /// A secret key's template (an AES key, or an HMAC key that signs and verifies), without
    /// its length or value; `None` for a pair.
    fn secret(&self) -> Option<Vec<Attribute>> {
        let (key_type, encrypts) = match self.spec {
            KeySpec::Aes(..) => (KeyType::AES, true),
            KeySpec::Hmac(_) => (KeyType::GENERIC_SECRET, false),
            _ => return None,
        };
        // Secret keys have no CKA_SIGN_RECOVER (the token refuses it in the template).
        let mut t = self.private();
        t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Encrypt(encrypts),
            Attribute::Verify(!encrypts),
            Attribute::Wrap(false),
        ]);
        Some(t)
    }
}

impl HsmToken {
    /// Generates a key of `spec` inside the token (an EC, Ed25519 or RSA pair, an HMAC key as
    /// long as its hash's output, or a raw AES key), labelled `label`, with a random `CKA_ID`.
    /// Returns the reference to store; [`HsmToken::destroy_key`] removes every object of it.
    pub async fn generate_key_of(&self, spec: KeySpec, label: &str) -> Result<HsmKeyRef, HsmError> {
        validate_label(label)?;
        if !supports(spec) {
            return Err(unsupported(spec));
        }
        let label = label.to_owned();
        self.run("generate_key_of", move |call| call.generate_of(spec, &label)).await
    }

    /// Puts an imported key of `spec` into the token (`C_CreateObject`) as objects like the ones
    /// [`HsmToken::generate_key_of`] makes, labelled `label`, with a random `CKA_ID`:
    /// `material` is the raw key of an HMAC or raw AES key, or the DER PKCS#8 `PrivateKeyInfo`
    /// of a pair (whose public object is made from it too). The copies handed to the token are
    /// wiped once it has them.
    pub async fn import_key_of(&self, spec: KeySpec, label: &str, material: &Secret) -> Result<HsmKeyRef, HsmError> {
        validate_label(label)?;
        if !supports(spec) {
            return Err(unsupported(spec));
        }
        let label = label.to_owned();
        let material = material.clone();
        self.run("import_key_of", move |call| call.import_of(spec, &label, &material)).await
    }

    /// Signs with the key's private (or HMAC) object: `input` is the digest of the algorithm's
    /// hash for EC and RSA keys, the data for Ed25519 and HMAC keys. The answer is Cloud KMS's
    /// encoding (a DER `ECDSA-Sig-Value`, an RSA or Ed25519 signature, the MAC).
    pub async fn sign(&self, key: &HsmKeyRef, spec: KeySpec, input: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        let input = Secret::new(input.to_vec());
        self.run("sign", move |call| call.sign(&key, spec, input.expose())).await
    }

    /// RSA-OAEP decryption (MGF1 with the key's hash, empty label) inside the token.
    pub async fn decrypt_oaep(&self, key: &HsmKeyRef, spec: KeySpec, ciphertext: &[u8]) -> Result<Secret, HsmError> {
        let KeySpec::RsaOaep(_, hash) = spec else { return Err(unsupported(spec)) };
        let key = key.clone();
        let ciphertext = ciphertext.to_vec();
        self.run("decrypt_oaep", move |call| call.decrypt_oaep(&key, hash, &ciphertext)).await
    }

    /// The public key of an EC, Ed25519 or RSA pair, as DER `SubjectPublicKeyInfo`.
    pub async fn public_key(&self, key: &HsmKeyRef, spec: KeySpec) -> Result<Vec<u8>, HsmError> {
        let key = key.clone();
        self.run("public_key", move |call| call.public_key(&key, spec)).await
    }

    /// Raw AES encryption inside the token (`rawEncrypt`): AES-GCM under a nonce drawn from the
    /// token, with `aad` and a 16-byte tag appended; AES-CBC without padding, or AES-CTR (a
    /// 128-bit counter), under `iv` (16 bytes) or one drawn from the token. The caller has
    /// checked the shapes.
    pub async fn raw_encrypt(
        &self,
        key: &HsmKeyRef,
        spec: KeySpec,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, HsmError> {
        let KeySpec::Aes(_, mode) = spec else { return Err(unsupported(spec)) };
        let key = key.clone();
        let plaintext = Secret::new(plaintext.to_vec());
        let (aad, iv) = (aad.to_vec(), iv.map(<[u8]>::to_vec));
        self.run("raw_encrypt", move |call| call.raw_encrypt(&key, mode, plaintext.expose(), &aad, iv)).await
    }

    /// Raw AES decryption inside the token of what [`HsmToken::raw_encrypt`] made with `iv`
    /// and `aad`; a GCM ciphertext that does not authenticate is [`HsmError::Decrypt`].
    pub async fn raw_decrypt(
        &self,
        key: &HsmKeyRef,
        spec: KeySpec,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, HsmError> {
        let KeySpec::Aes(_, mode) = spec else { return Err(unsupported(spec)) };
        let key = key.clone();
        let (ciphertext, aad, iv) = (ciphertext.to_vec(), aad.to_vec(), iv.to_vec());
        self.run("raw_decrypt", move |call| call.raw_decrypt(&key, mode, &ciphertext, &aad, &iv)).await
    }
}

impl Call<'_> {
    fn generate_of(&self, spec: KeySpec, label: &str) -> Result<HsmKeyRef, HsmError> {
        let key = self.new_key_ref(label)?;
        let t = Templates::new(&key, spec)?;
        let what = format!("generating a {spec:?} key in the token");
        match spec {
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 | KeySpec::Ed25519 => {
                let mechanism = match spec {
                    KeySpec::Ed25519 => Mechanism::EccEdwardsKeyPairGen,
                    _ => Mechanism::EccKeyPairGen,
                };
                let (public, private) = t.pair().ok_or_else(|| unsupported(spec))?;
                self.session.generate_key_pair(&mechanism, &public, &private).map_err(|e| classify(&e, &what))?;
            }
            KeySpec::RsaPss(bits, _)
            | KeySpec::RsaPkcs1(bits, _)
            | KeySpec::RsaRawPkcs1(bits)
            | KeySpec::RsaOaep(bits, _) => {
                let (mut public, private) = t.pair().ok_or_else(|| unsupported(spec))?;
                public.push(Attribute::ModulusBits(((bits.modulus_len() * 8) as u64).into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                self.session
                    .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                    .map_err(|e| classify(&e, &what))?;
            }
            KeySpec::Aes(..) | KeySpec::Hmac(_) => {
                let (mechanism, len) = match spec {
                    KeySpec::Aes(bits, _) => (Mechanism::AesKeyGen, bits.key_len()),
                    KeySpec::Hmac(h) => (Mechanism::GenericSecretKeyGen, h.output_len()),
                    other => return Err(unsupported(other)),
                };
                let mut secret = t.secret().ok_or_else(|| unsupported(spec))?;
                secret.push(Attribute::ValueLen((len as u64).into()));
                self.session.generate_key(&mechanism, &secret).map_err(|e| classify(&e, &what))?;
            }
            other => return Err(unsupported(other)),
        }
        tracing::info!(key = %key, ?spec, "generated a key in the HSM token");
        Ok(key)
    }

    fn import_of(&self, spec: KeySpec, label: &str, material: &Secret) -> Result<HsmKeyRef, HsmError> {
        let key = self.new_key_ref(label)?;
        let t = Templates::new(&key, spec)?;
        let what = format!("importing a {spec:?} key into the token");
        // The private (or secret) object's template with its secret values, and the public
        // object's.
        let (mut private, public) = match spec {
            KeySpec::Aes(..) | KeySpec::Hmac(_) => {
                let mut secret = t.secret().ok_or_else(|| unsupported(spec))?;
                secret.push(Attribute::Value(material.expose().to_vec()));
                (secret, None)
            }
            _ => {
                let (mut public, mut private) = t.pair().ok_or_else(|| unsupported(spec))?;
                let parts = PrivateParts::from_pkcs8(spec, material).map_err(|e| HsmError::invalid(e.to_string()))?;
                let key_type = match &parts {
                    PrivateParts::Ec { .. } => KeyType::EC,
                    PrivateParts::Ed25519 { .. } => KeyType::EC_EDWARDS,
                    PrivateParts::Rsa(_) => KeyType::RSA,
                };
                public.extend([Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::KeyType(key_type)]);
                private.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
                // A generated pair's private object takes its curve from the public template;
                // a created one names it.
                if let Some(params) = spec.ec_params_der() {
                    private.push(Attribute::EcParams(params.to_vec()));
                }
                match parts {
                    PrivateParts::Ec { scalar: value, point }
                    | PrivateParts::Ed25519 { seed: value, public: point } => {
                        // CKA_EC_POINT is the DER OCTET STRING of the point (PKCS#11 3.0).
                        let len =
                            u8::try_from(point.len()).ok().filter(|l| *l < 0x80).ok_or_else(|| unsupported(spec))?;
                        public.push(Attribute::EcPoint([&[0x04, len][..], &point].concat()));
                        private.push(Attribute::Value(value.expose().to_vec()));
                    }
                    PrivateParts::Rsa(rsa) => {
                        public.extend([
                            Attribute::Modulus(rsa.modulus.clone()),
                            Attribute::PublicExponent(rsa.public_exponent.clone()),
                        ]);
                        private.extend([
                            Attribute::Modulus(rsa.modulus),
                            Attribute::PublicExponent(rsa.public_exponent),
                            Attribute::PrivateExponent(rsa.private_exponent.expose().to_vec()),
                            Attribute::Prime1(rsa.prime_1.expose().to_vec()),
                            Attribute::Prime2(rsa.prime_2.expose().to_vec()),
                            Attribute::Exponent1(rsa.exponent_1.expose().to_vec()),
                            Attribute::Exponent2(rsa.exponent_2.expose().to_vec()),
                            Attribute::Coefficient(rsa.coefficient.expose().to_vec()),
                        ]);
                    }
                }
                (private, Some(public))
            }
        };
        let created = self.session.create_object(&private);
        wipe(&mut private);
        let handle = created.map_err(|e| classify(&e, &what))?;
        if let Some(public) = public
            && let Err(e) = self.session.create_object(&public)
        {
            // No half pair is left behind (best effort: reconcile finds it otherwise).
            if let Err(d) = self.session.destroy_object(handle) {
                tracing::error!(key = %key, error = %d, "cannot remove the private half of a key whose import failed");
            }
            return Err(classify(&e, &what));
        }
        tracing::info!(key = %key, ?spec, "imported a key into the HSM token");
        Ok(key)
    }

    /// Runs `f` with the handle of `key`'s object of `class` (a pair's private or public half,
    /// or a secret key), cached for the connection. A cached handle the token no longer knows
    /// (the object destroyed, or the handles renumbered after the token's sessions all closed)
    /// is forgotten, looked up again and tried once more, as [`Call::with_key`] does for AES
    /// keys. `f`'s own failure comes back as it is, for the caller to map.
    fn with_object<T>(
        &self,
        key: &HsmKeyRef,
        class: ObjectClass,
        mut f: impl FnMut(ObjectHandle) -> Result<T, cryptoki::error::Error>,
    ) -> Result<Result<T, cryptoki::error::Error>, HsmError> {
        let slot = part_slot(class);
        if let Some(handle) = slot.and_then(|i| lock(&self.conn.parts).get(key).and_then(|parts| parts[i])) {
            match f(handle) {
                Err(e) if is_stale_handle(&e) => lock(&self.conn.parts).remove(key),
                answer => return Ok(answer),
            };
        }
        let handle = self.object(key, class)?;
        Ok(f(handle))
    }

    /// Looks up the object of `key` of `class` and caches its handle.
    fn object(&self, key: &HsmKeyRef, class: ObjectClass) -> Result<ObjectHandle, HsmError> {
        let slot = part_slot(class);
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(key.id().to_vec()),
                Attribute::Label(key.label().as_bytes().to_vec()),
            ])
            .map_err(|e| classify(&e, "looking up a key"))?;
        match found.as_slice() {
            [handle] => {
                if let Some(i) = slot {
                    lock(&self.conn.parts).entry(key.clone()).or_default()[i] = Some(*handle);
                }
                Ok(*handle)
            }
            [] => Err(self.not_found(key)),
            many => Err(HsmError::config(format!("{} objects in the token match {key}; expected one", many.len()))),
        }
    }

    /// A handle of `key` the token no longer knows even when just looked up: the object was
    /// destroyed (by another node, or by hand). Forgets the key's cached handles; the key is
    /// missing unless the token is.
    fn stale(&self, key: &HsmKeyRef) -> HsmError {
        lock(&self.conn.parts).remove(key);
        self.not_found(key)
    }

    fn sign(&self, key: &HsmKeyRef, spec: KeySpec, input: &[u8]) -> Result<Vec<u8>, HsmError> {
        let info;
        let (class, mechanism, signed) = match spec {
            KeySpec::Hmac(h) => (ObjectClass::SECRET_KEY, hmac_mechanism(h), input),
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 => {
                (ObjectClass::PRIVATE_KEY, Mechanism::Ecdsa, input)
            }
            KeySpec::Ed25519 => {
                (ObjectClass::PRIVATE_KEY, Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), input)
            }
            KeySpec::RsaPkcs1(_, h) => {
                info = KeySpec::digest_info(h, input).map_err(|e| HsmError::invalid(e.to_string()))?;
                (ObjectClass::PRIVATE_KEY, Mechanism::RsaPkcs, info.as_slice())
            }
            KeySpec::RsaRawPkcs1(bits) => {
                // Type-1 padding of the data as given (the caller's own encoding, if any).
                if input.len() > bits.modulus_len() - 11 {
                    return Err(HsmError::invalid(format!(
                        "the data is {} bytes; PKCS#1 v1.5 signs at most {} with this key",
                        input.len(),
                        bits.modulus_len() - 11
                    )));
                }
                (ObjectClass::PRIVATE_KEY, Mechanism::RsaPkcs, input)
            }
            KeySpec::RsaPss(_, h) => {
                let params =
                    PkcsPssParams { hash_alg: hash_mechanism(h), mgf: mgf(h), s_len: (h.output_len() as u64).into() };
                (ObjectClass::PRIVATE_KEY, Mechanism::RsaPkcsPss(params), input)
            }
            other => return Err(unsupported(other)),
        };
        let signature = self
            .with_object(key, class, |handle| self.session.sign(&mechanism, handle, signed))?
            .map_err(|e| if is_stale_handle(&e) { self.stale(key) } else { classify(&e, "signing in the token") })?;
        match spec {
            // The token answers r || s; Cloud KMS, DER.
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 => {
                spec.ecdsa_signature_der(&signature).map_err(token_answer)
            }
            _ => Ok(signature),
        }
    }

    fn decrypt_oaep(&self, key: &HsmKeyRef, hash: Hash, ciphertext: &[u8]) -> Result<Secret, HsmError> {
        let params = PkcsOaepParams::new(hash_mechanism(hash), mgf(hash), PkcsOaepSource::empty());
        let oaep = Mechanism::RsaPkcsOaep(params);
        match self
            .with_object(key, ObjectClass::PRIVATE_KEY, |handle| self.session.decrypt(&oaep, handle, ciphertext))?
        {
            Ok(plaintext) => Ok(Secret::new(plaintext)),
            Err(e) if is_stale_handle(&e) => Err(self.stale(key)),
            Err(e) => {
                // A ciphertext the key does not open: refused by the token with one of these.
                let bad = matches!(
                    &e,
                    cryptoki::error::Error::Pkcs11(
                        cryptoki::error::RvError::EncryptedDataInvalid
                            | cryptoki::error::RvError::EncryptedDataLenRange
                            | cryptoki::error::RvError::DataInvalid
                            | cryptoki::error::RvError::DataLenRange
                            | cryptoki::error::RvError::GeneralError
                            | cryptoki::error::RvError::FunctionFailed,
                        cryptoki::context::Function::Decrypt
                    )
                );
                match (bad, self.probe()) {
                    (true, Ok(())) => Err(HsmError::Decrypt { reason: "RSA-OAEP decryption failed" }),
                    (_, Err(unavailable)) => Err(unavailable),
                    (false, Ok(())) => Err(classify(&e, "decrypting in the token")),
                }
            }
        }
    }

    fn public_key(&self, key: &HsmKeyRef, spec: KeySpec) -> Result<Vec<u8>, HsmError> {
        let missing = |what: &str| HsmError::Unsupported { detail: format!("the public key has no {what}") };
        let read = |types: &[AttributeType]| {
            self.with_object(key, ObjectClass::PUBLIC_KEY, |handle| self.session.get_attributes(handle, types))?
                .map_err(|e| if is_stale_handle(&e) { self.stale(key) } else { classify(&e, "reading a public key") })
        };
        match spec {
            KeySpec::EcdsaP256Sha256 | KeySpec::EcdsaP384Sha384 | KeySpec::EcdsaSecp256k1Sha256 | KeySpec::Ed25519 => {
                let point = read(&[AttributeType::EcPoint])?.into_iter().find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                });
                let point = point.ok_or_else(|| missing("CKA_EC_POINT"))?;
                let ed25519 = spec == KeySpec::Ed25519;
                // CKA_EC_POINT is the DER OCTET STRING of the point, or of Ed25519's 32-byte key
                // (PKCS#11 2.40, 3.0); some tokens give the point itself (an uncompressed EC
                // point starts with 0x04 too, hence its second 0x04 checked).
                let raw = match point.as_slice() {
                    [0x04, len, rest @ ..]
                        if usize::from(*len) == rest.len() && (ed25519 || rest.first() == Some(&0x04)) =>
                    {
                        rest
                    }
                    other => other,
                };
                if ed25519 { spec.ed25519_public_key_der(raw) } else { spec.ec_public_key_der(raw) }
                    .map_err(token_answer)
            }
            KeySpec::RsaPss(..) | KeySpec::RsaPkcs1(..) | KeySpec::RsaRawPkcs1(_) | KeySpec::RsaOaep(..) => {
                let (mut n, mut e) = (None, None);
                for a in read(&[AttributeType::Modulus, AttributeType::PublicExponent])? {
                    match a {
                        Attribute::Modulus(m) => n = Some(m),
                        Attribute::PublicExponent(x) => e = Some(x),
                        _ => {}
                    }
                }
                let (n, e) = n.zip(e).ok_or_else(|| missing("modulus or public exponent"))?;
                keyhold_crypto::keys::rsa_public_key_der(&n, &e).map_err(token_answer)
            }
            other => Err(unsupported(other)),
        }
    }

    fn raw_encrypt(
        &self,
        key: &HsmKeyRef,
        mode: AesMode,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<Vec<u8>>,
    ) -> Result<RawCiphertext, HsmError> {
        // The shapes the KMS checks first, checked again here for any other caller: a GCM nonce
        // is never the caller's (a reused one breaks GCM), and CBC authenticates no AAD.
        match mode {
            AesMode::Gcm if iv.is_some() => return Err(HsmError::invalid("AES-GCM chooses its own nonce")),
            AesMode::Cbc | AesMode::Ctr if !aad.is_empty() => {
                return Err(HsmError::invalid("AES-CBC and AES-CTR take no additional authenticated data"));
            }
            _ => {}
        }
        let fail = |e: &cryptoki::error::Error| {
            if is_stale_handle(e) { self.stale(key) } else { classify(e, "encrypting in the token") }
        };
        let mut iv = match iv {
            Some(given) => given,
            None => self
                .session
                .generate_random_vec(mode.iv_len() as u32)
                .map_err(|e| classify(&e, "drawing an IV from the token"))?,
        };
        let ciphertext = match mode {
            AesMode::Gcm => self
                .with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    // A token that makes its own IVs (FIPS mode) writes it back into the
                    // buffer: the nonce answered is the one the token used.
                    let params = GcmParams::new(&mut iv, aad, ((GCM_TAG_LEN * 8) as u64).into())?;
                    self.session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)
                })?
                .map_err(|e| fail(&e))?,
            AesMode::Cbc => {
                let block: [u8; AES_BLOCK_LEN] =
                    iv.as_slice().try_into().map_err(|_| HsmError::invalid("the IV is 16 bytes"))?;
                self.with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    self.session.encrypt(&Mechanism::AesCbc(block), handle, plaintext)
                })?
                .map_err(|e| fail(&e))?
            }
            AesMode::Ctr => {
                let params = ctr_params(&iv)?;
                self.with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    self.session.encrypt(&ctr_mechanism(&params), handle, plaintext)
                })?
                .map_err(|e| fail(&e))?
            }
        };
        if ciphertext.len() != plaintext.len() + mode.tag_len() || iv.len() != mode.iv_len() {
            return Err(HsmError::Unsupported {
                detail: format!(
                    "the token returned {} bytes of {mode:?} output for {} bytes of plaintext",
                    ciphertext.len(),
                    plaintext.len()
                ),
            });
        }
        Ok(RawCiphertext { ciphertext, iv })
    }

    fn raw_decrypt(
        &self,
        key: &HsmKeyRef,
        mode: AesMode,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, HsmError> {
        let answer = match mode {
            AesMode::Gcm => {
                let nonce: [u8; GCM_NONCE_LEN] =
                    iv.try_into().map_err(|_| HsmError::invalid("the nonce is 12 bytes"))?;
                self.with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    let mut nonce = nonce;
                    let params = GcmParams::new(&mut nonce, aad, ((GCM_TAG_LEN * 8) as u64).into())?;
                    self.session.decrypt(&Mechanism::AesGcm(params), handle, ciphertext)
                })?
            }
            AesMode::Cbc => {
                let block: [u8; AES_BLOCK_LEN] = iv.try_into().map_err(|_| HsmError::invalid("the IV is 16 bytes"))?;
                self.with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    self.session.decrypt(&Mechanism::AesCbc(block), handle, ciphertext)
                })?
            }
            AesMode::Ctr => {
                let params = ctr_params(iv)?;
                self.with_object(key, ObjectClass::SECRET_KEY, |handle| {
                    self.session.decrypt(&ctr_mechanism(&params), handle, ciphertext)
                })?
            }
        };
        match answer {
            Ok(plaintext) => Ok(Secret::new(plaintext)),
            Err(e) if is_stale_handle(&e) => Err(self.stale(key)),
            Err(e) => Err(self.decrypt_error(&e)),
        }
    }

    /// Whether the token holds the usable object of `key` of another kind than AES: its
    /// private half, or its (HMAC) secret key.
    pub(super) fn holds_key_of_other_kind(&self, key: &HsmKeyRef) -> Result<bool, HsmError> {
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
            let found = self
                .session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::Id(key.id().to_vec()),
                    Attribute::Label(key.label().as_bytes().to_vec()),
                ])
                .map_err(|e| classify(&e, "looking up a key"))?;
            if !found.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every object of `key`, whatever its class (a pair's two halves, or one secret key).
    pub(super) fn objects_of(&self, key: &HsmKeyRef) -> Result<Vec<ObjectHandle>, HsmError> {
        lock(&self.conn.handles).remove(key);
        lock(&self.conn.parts).remove(key);
        self.session
            .find_objects(&[Attribute::Id(key.id().to_vec()), Attribute::Label(key.label().as_bytes().to_vec())])
            .map_err(|e| classify(&e, "looking up a key"))
    }
}
