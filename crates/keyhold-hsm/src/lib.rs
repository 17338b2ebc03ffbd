//! PKCS#11 tokens (HSMs) for Keyhold.
