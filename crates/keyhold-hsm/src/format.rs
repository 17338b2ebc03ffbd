//! The ciphertext format of [`HsmToken::encrypt`](crate::HsmToken::encrypt), version 1.
//!
//! ```text
//! offset  length  field
//! 0       1       format version, 0x01
//! 1       12      IV (96 bits), from the token's generator (C_GenerateRandom)
//! 13      n       AES-256-GCM ciphertext, as long as the plaintext
//! 13+n    16      GCM tag (128 bits)
//! ```
//!
//! The additional authenticated data given to the token is [`AAD_DOMAIN`] followed by the
//! caller's AAD. The fixed-length prefix separates these ciphertexts from any other use of the
//! same key and binds the format version, and it keeps the token's AAD non-empty: upstream
//! SoftHSM has crashed on empty AAD with GCM (the cryptoki test suite skips that case).
//!
//! IVs are random, so one key should seal fewer than 2^32 messages (NIST SP 800-38D); a Cloud
//! KMS key version is rotated long before.

use crate::HsmError;

/// The format version this crate writes.
pub const VERSION: u8 = 1;
/// IV length in bytes.
pub const IV_LEN: usize = 12;
/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes added to the plaintext: version, IV and tag.
pub const OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;
/// Prefix of the AAD passed to the token (it includes the format version).
pub const AAD_DOMAIN: &[u8] = b"keyhold-hsm/aes-256-gcm/v1\0";

/// The AAD the token authenticates for the caller's `aad`.
pub(crate) fn token_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_DOMAIN.len() + aad.len());
    out.extend_from_slice(AAD_DOMAIN);
    out.extend_from_slice(aad);
    out
}

/// Frames the token's output (`ciphertext || tag`).
pub(crate) fn frame(iv: &[u8; IV_LEN], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(iv);
    out.extend_from_slice(sealed);
    out
}

/// Splits a framed ciphertext into IV and `ciphertext || tag`.
pub(crate) fn parse(data: &[u8]) -> Result<([u8; IV_LEN], &[u8]), HsmError> {
    let Some((&version, rest)) = data.split_first() else {
        return Err(HsmError::Decrypt { reason: "the ciphertext is empty" });
    };
    if version != VERSION {
        return Err(HsmError::Decrypt { reason: "unknown ciphertext format version" });
    }
    if rest.len() < IV_LEN + TAG_LEN {
        return Err(HsmError::Decrypt { reason: "the ciphertext is too short" });
    }
    let (iv, sealed) = rest.split_at(IV_LEN);
    let mut iv_arr = [0u8; IV_LEN];
    iv_arr.copy_from_slice(iv);
    Ok((iv_arr, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_parse_agree() {
        let iv = [7u8; IV_LEN];
        let sealed = [9u8; 20];
        let framed = frame(&iv, &sealed);
        assert_eq!(framed.len(), 1 + IV_LEN + 20);
        assert_eq!(framed[0], VERSION);
        let (iv2, sealed2) = parse(&framed).unwrap();
        assert_eq!(iv2, iv);
        assert_eq!(sealed2, &sealed);
    }

    #[test]
    fn parse_refuses_short_or_foreign_input() {
        assert!(matches!(parse(&[]), Err(HsmError::Decrypt { .. })));
        assert!(matches!(parse(&[2; 64]), Err(HsmError::Decrypt { .. })));
        let mut short = vec![VERSION];
        short.extend_from_slice(&[0; IV_LEN + TAG_LEN - 1]);
        assert!(matches!(parse(&short), Err(HsmError::Decrypt { .. })));
        short.push(0);
        assert!(parse(&short).is_ok(), "an empty plaintext is valid");
    }

    #[test]
    fn token_aad_is_never_empty_and_prefixed() {
        assert_eq!(token_aad(b""), AAD_DOMAIN);
        assert_eq!(&token_aad(b"x")[AAD_DOMAIN.len()..], b"x");
    }
}
