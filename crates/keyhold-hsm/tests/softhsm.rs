//! Against a real SoftHSM2 token (no mocks). Every test makes its own token.

use std::path::PathBuf;
use std::time::Duration;

use keyhold_crypto::SecretString;
use keyhold_hsm::testing::SoftHsm;
use keyhold_hsm::testing::cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyhold_hsm::{HsmError, HsmKeyRef, HsmOptions, HsmToken, Pkcs11Config, format};

const BACKOFF: Duration = Duration::from_millis(50);

fn token(config: Pkcs11Config) -> HsmToken {
    HsmToken::with_options(config, HsmOptions { max_sessions: 4, reconnect_backoff: BACKOFF })
}

fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    keyhold_crypto::random_bytes(&mut b).unwrap();
    keyhold_crypto::hex(&b)
}

/// The key's object as the token sees it, read with cryptoki directly.
fn objects(hsm: &SoftHsm, key: &HsmKeyRef) -> usize {
    hsm.with_session(|s| {
        s.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(key.id().to_vec())]).unwrap().len()
    })
    .unwrap()
}

#[tokio::test]
async fn generate_encrypt_decrypt_round_trip() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let key = t.generate_key("projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1").await.unwrap();
    assert_eq!(key.id().len(), keyhold_hsm::KEY_ID_LEN);
    assert_eq!(key.to_string().parse::<HsmKeyRef>().unwrap(), key);

    let plaintext = b"attack at dawn";
    let ct = t.encrypt(&key, plaintext, b"aad").await.unwrap();
    assert_eq!(ct.len(), plaintext.len() + format::OVERHEAD);
    assert_eq!(ct[0], format::VERSION);
    assert!(!ct.windows(plaintext.len()).any(|w| w == plaintext), "the plaintext must not appear in the ciphertext");
    let pt = t.decrypt(&key, &ct, b"aad").await.unwrap();
    assert_eq!(pt.expose(), plaintext);

    // A fresh IV every time.
    let ct2 = t.encrypt(&key, plaintext, b"aad").await.unwrap();
    assert_ne!(ct[1..13], ct2[1..13]);
    assert_ne!(ct, ct2);

    // Empty plaintext and empty AAD (the token still gets a non-empty AAD).
    let ct = t.encrypt(&key, b"", b"").await.unwrap();
    assert_eq!(ct.len(), format::OVERHEAD);
    assert!(t.decrypt(&key, &ct, b"").await.unwrap().is_empty());

    // 64 KiB, Cloud KMS's largest plaintext.
    let big = vec![0x5a; 64 * 1024];
    let ct = t.encrypt(&key, &big, b"x").await.unwrap();
    assert_eq!(t.decrypt(&key, &ct, b"x").await.unwrap().expose(), &big[..]);

    // A reference parsed back from its string form works as well (what the database does).
    let stored: HsmKeyRef = key.to_string().parse().unwrap();
    let ct = t.encrypt(&stored, b"via stored ref", b"").await.unwrap();
    assert_eq!(t.decrypt(&key, &ct, b"").await.unwrap().expose(), b"via stored ref");
}

#[tokio::test]
async fn key_is_sensitive_non_extractable_and_its_value_cannot_be_read() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let key = t.generate_key("kv-attributes").await.unwrap();

    hsm.with_session(|s| {
        let found = s.find_objects(&[Attribute::Id(key.id().to_vec())]).unwrap();
        assert_eq!(found.len(), 1);
        let h = found[0];
        let attrs = s
            .get_attributes(
                h,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                    AttributeType::Modifiable,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Wrap,
                    AttributeType::Unwrap,
                    AttributeType::ValueLen,
                    AttributeType::Label,
                ],
            )
            .unwrap();
        let mut seen = 0;
        for a in attrs {
            seen += 1;
            match a {
                Attribute::Token(v) => assert!(v, "token object"),
                Attribute::Private(v) => assert!(v, "private"),
                Attribute::Sensitive(v) => assert!(v, "sensitive"),
                Attribute::Extractable(v) => assert!(!v, "not extractable"),
                Attribute::AlwaysSensitive(v) => assert!(v, "always sensitive"),
                Attribute::NeverExtractable(v) => assert!(v, "never extractable"),
                Attribute::Local(v) => assert!(v, "generated in the token"),
                Attribute::Modifiable(v) => assert!(!v, "not modifiable"),
                Attribute::Encrypt(v) => assert!(v),
                Attribute::Decrypt(v) => assert!(v),
                Attribute::Wrap(v) => assert!(!v),
                Attribute::Unwrap(v) => assert!(!v),
                Attribute::ValueLen(v) => assert_eq!(usize::from(v), 32, "AES-256"),
                Attribute::Label(v) => assert_eq!(v, b"kv-attributes"),
                other => panic!("unexpected attribute {other:?}"),
            }
        }
        assert_eq!(seen, 14, "every attribute was answered");

        // The value is refused: cryptoki leaves a sensitive attribute out of the answer.
        let value = s.get_attributes(h, &[AttributeType::Value]).unwrap();
        assert!(value.is_empty(), "CKA_VALUE must not be readable: {value:?}");
        // And the key cannot be made extractable.
        assert!(s.update_attributes(h, &[Attribute::Extractable(true)]).is_err());
        assert!(s.update_attributes(h, &[Attribute::Sensitive(false)]).is_err());
    })
    .unwrap();
}

#[tokio::test]
async fn tampered_ciphertext_wrong_aad_and_wrong_key_are_refused() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let key = t.generate_key("kv-tamper").await.unwrap();
    let other = t.generate_key("kv-other").await.unwrap();
    let ct = t.encrypt(&key, b"secret", b"context").await.unwrap();

    let is_decrypt = |r: Result<keyhold_crypto::Secret, HsmError>| match r {
        Err(HsmError::Decrypt { .. }) => true,
        other => panic!("expected a decrypt error, got {other:?}"),
    };
    // Every byte position: version, IV, body, tag.
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        assert!(is_decrypt(t.decrypt(&key, &bad, b"context").await), "byte {i}");
    }
    assert!(is_decrypt(t.decrypt(&key, &ct, b"contexT").await));
    assert!(is_decrypt(t.decrypt(&key, &ct, b"").await));
    assert!(is_decrypt(t.decrypt(&other, &ct, b"context").await));
    assert!(is_decrypt(t.decrypt(&key, &ct[..ct.len() - 1], b"context").await));
    assert!(is_decrypt(t.decrypt(&key, &ct[..format::OVERHEAD - 1], b"context").await));
    assert!(is_decrypt(t.decrypt(&key, &[], b"context").await));
    let mut longer = ct.clone();
    longer.push(0);
    assert!(is_decrypt(t.decrypt(&key, &longer, b"context").await));

    let e = t.decrypt(&key, &ct, b"x").await.unwrap_err();
    assert!(!e.is_unavailable());
    assert!(!e.to_string().contains("secret"));

    // The failures left the sessions usable.
    assert_eq!(t.decrypt(&key, &ct, b"context").await.unwrap().expose(), b"secret");
}

#[tokio::test]
async fn destroy_removes_the_token_object() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let key = t.generate_key("kv-destroy").await.unwrap();
    let keep = t.generate_key("kv-keep").await.unwrap();
    let ct = t.encrypt(&key, b"bye", b"").await.unwrap();
    assert_eq!(objects(&hsm, &key), 1);
    assert!(t.key_exists(&key).await.unwrap());

    t.destroy_key(&key).await.unwrap();

    assert_eq!(objects(&hsm, &key), 0, "a fresh find through cryptoki finds nothing");
    assert!(!t.key_exists(&key).await.unwrap());
    let missing = |r: Result<_, HsmError>| match r {
        Err(HsmError::KeyNotFound { key: k }) => k,
        other => panic!("expected KeyNotFound, got {other:?}"),
    };
    assert_eq!(missing(t.decrypt(&key, &ct, b"").await.map(|_| ())), key.to_string());
    missing(t.encrypt(&key, b"x", b"").await.map(|_| ()));
    missing(t.destroy_key(&key).await);

    // The other key is untouched, and a new token value agrees.
    assert_eq!(objects(&hsm, &keep), 1);
    let fresh = token(hsm.config());
    assert!(!fresh.key_exists(&key).await.unwrap());
    missing(fresh.decrypt(&key, &ct, b"").await.map(|_| ()));
    let ct = fresh.encrypt(&keep, b"still here", b"").await.unwrap();
    assert_eq!(t.decrypt(&keep, &ct, b"").await.unwrap().expose(), b"still here");
}

#[tokio::test]
async fn destroy_through_one_token_value_is_seen_by_another_with_a_cached_handle() {
    let hsm = SoftHsm::new();
    let a = token(hsm.config());
    let b = token(hsm.config());
    let key = a.generate_key("kv-shared").await.unwrap();
    let ct = a.encrypt(&key, b"x", b"").await.unwrap();
    // `b` caches the handle.
    assert_eq!(b.decrypt(&key, &ct, b"").await.unwrap().expose(), b"x");
    a.destroy_key(&key).await.unwrap();
    assert!(matches!(b.decrypt(&key, &ct, b"").await, Err(HsmError::KeyNotFound { .. })));
}

#[tokio::test]
async fn keys_survive_reopening_the_token() {
    let hsm = SoftHsm::new();
    let (key, ct) = {
        let t = token(hsm.config());
        let key = t.generate_key("kv-persist").await.unwrap();
        let ct = t.encrypt(&key, b"persistent", b"a").await.unwrap();
        (key, ct)
    };
    let stored = key.to_string();
    let survivor = token(hsm.config());
    let key: HsmKeyRef = stored.parse().unwrap();
    assert_eq!(survivor.decrypt(&key, &ct, b"a").await.unwrap().expose(), b"persistent");

    // Make SoftHSM forget everything and read the token directory again, as a restarted
    // server would: the key was written to disk.
    hsm.reload_module().unwrap();
    let reopened = token(hsm.config());
    assert!(reopened.key_exists(&key).await.unwrap());
    assert_eq!(reopened.decrypt(&key, &ct, b"a").await.unwrap().expose(), b"persistent");
    // The token value from before the reload reconnects by itself (its sessions and
    // handles belonged to the old initialization).
    assert_eq!(survivor.decrypt(&key, &ct, b"a").await.unwrap().expose(), b"persistent");
}

#[tokio::test]
async fn find_or_generate_returns_the_same_key() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let root = t.find_or_generate_key("keyhold-root-key").await.unwrap();
    let again = t.find_or_generate_key("keyhold-root-key").await.unwrap();
    assert_eq!(root, again);
    let fresh = token(hsm.config());
    assert_eq!(fresh.find_or_generate_key("keyhold-root-key").await.unwrap(), root);
    let ct = t.encrypt(&root, b"dek", b"").await.unwrap();
    assert_eq!(fresh.decrypt(&again, &ct, b"").await.unwrap().expose(), b"dek");

    // Two objects with the label: ambiguous, refused rather than guessed.
    t.generate_key("keyhold-root-key").await.unwrap();
    let e = fresh.find_or_generate_key("keyhold-root-key").await.unwrap_err();
    assert!(matches!(e, HsmError::Config { .. }), "{e:?}");
}

#[tokio::test]
async fn random_bytes_from_the_token() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    for n in [8, 9, 32, 1023, 1024] {
        assert_eq!(t.random_bytes(n).await.unwrap().len(), n);
    }
    let a = t.random_bytes(32).await.unwrap();
    let b = t.random_bytes(32).await.unwrap();
    assert!(!a.ct_eq(b.expose()));
    assert!(a.expose().iter().any(|&x| x != 0));
    for n in [0, 1, 7, 1025, usize::MAX] {
        let e = t.random_bytes(n).await.unwrap_err();
        assert!(matches!(e, HsmError::InvalidInput { .. }), "{n}: {e:?}");
    }
}

#[tokio::test]
async fn invalid_labels_are_refused() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    assert!(matches!(t.generate_key("").await, Err(HsmError::InvalidInput { .. })));
    assert!(matches!(
        t.generate_key(&"x".repeat(keyhold_hsm::MAX_LABEL_LEN + 1)).await,
        Err(HsmError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn missing_module_is_unavailable_and_recovers_when_it_appears() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("libpkcs11-later.so");
    let config = Pkcs11Config { module: link.clone(), ..hsm.config() };
    // Constructing never fails.
    let t = token(config);
    for _ in 0..2 {
        let e = t.random_bytes(16).await.unwrap_err();
        assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
        assert!(e.is_unavailable());
        assert!(e.to_string().contains("libpkcs11-later.so"), "{e}");
        assert!(!e.to_string().contains(hsm.pin().expose()), "{e}");
    }
    let e = t.generate_key("k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");

    // The module appears (package installed, volume mounted): no restart needed.
    std::os::unix::fs::symlink(hsm.module(), &link).unwrap();
    tokio::time::sleep(BACKOFF * 2).await;
    let key = t.generate_key("k").await.unwrap();
    let ct = t.encrypt(&key, b"back", b"").await.unwrap();
    assert_eq!(t.decrypt(&key, &ct, b"").await.unwrap().expose(), b"back");
}

#[tokio::test]
async fn a_file_that_is_not_a_pkcs11_module_is_unavailable() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("not-a-module.so");
    std::fs::write(&fake, b"definitely not ELF").unwrap();
    let t = token(Pkcs11Config { module: fake, ..hsm.config() });
    let e = t.info().await.unwrap_err();
    assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
    let t = token(Pkcs11Config { module: PathBuf::from("/nonexistent/libpkcs11.so"), ..hsm.config() });
    assert!(matches!(t.info().await, Err(HsmError::Unavailable { .. })));
}

#[tokio::test]
async fn missing_token_is_unavailable_and_recovers_when_it_is_inserted() {
    let label = format!("kh-late-{}-{}", std::process::id(), rand_suffix());
    let pin = "late-pin-1234";
    let module = keyhold_hsm::testing::softhsm_module().unwrap();
    let t = token(Pkcs11Config::new(module, label.clone(), SecretString::new(pin.into())));
    let e = t.random_bytes(8).await.unwrap_err();
    assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains(&label), "{e}");

    let _hsm = SoftHsm::new_with(&label, pin);
    tokio::time::sleep(BACKOFF * 2).await;
    assert_eq!(t.random_bytes(8).await.unwrap().len(), 8);
}

#[tokio::test]
async fn removed_token_is_unavailable_not_missing_keys_and_recovers_when_put_back() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let key = t.generate_key("kv-removal").await.unwrap();
    let ct = t.encrypt(&key, b"survives", b"").await.unwrap();

    let removed = hsm.remove_token().unwrap();
    for _ in 0..3 {
        let e = t.encrypt(&key, b"x", b"").await.unwrap_err();
        assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
        let e = t.decrypt(&key, &ct, b"").await.unwrap_err();
        assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
        let e = t.key_exists(&key).await.unwrap_err();
        assert!(matches!(e, HsmError::Unavailable { .. }), "{e:?}");
        tokio::time::sleep(BACKOFF).await;
    }

    removed.restore().unwrap();
    tokio::time::sleep(BACKOFF * 2).await;
    assert_eq!(t.decrypt(&key, &ct, b"").await.unwrap().expose(), b"survives");
    assert!(t.key_exists(&key).await.unwrap());
}

#[tokio::test]
async fn wrong_pin_is_a_clear_error_without_the_pin() {
    let hsm = SoftHsm::new();
    let wrong = "wrong-pin-0815";
    let t = token(Pkcs11Config { pin: SecretString::new(wrong.into()), ..hsm.config() });
    let e = t.random_bytes(8).await.unwrap_err();
    assert!(matches!(e, HsmError::Login { .. }), "{e:?}");
    assert!(e.is_unavailable());
    let text = e.to_string();
    assert!(text.contains("CKR_PIN_INCORRECT"), "{text}");
    assert!(text.contains(hsm.label()), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!format!("{e:?}").contains(wrong));
    // Not tried again (an HSM would lock the PIN): the same error, at once, even after the
    // back-off.
    tokio::time::sleep(BACKOFF * 2).await;
    assert_eq!(t.generate_key("k").await.unwrap_err(), e);

    // The right PIN on another token value works.
    let good = token(hsm.config());
    assert_eq!(good.random_bytes(8).await.unwrap().len(), 8);
}

#[tokio::test]
async fn config_debug_does_not_print_the_pin() {
    let hsm = SoftHsm::new();
    let config = hsm.config();
    let pin = hsm.pin().expose().to_owned();
    let shown = format!("{config:?} {:?} {hsm:?}", token(config.clone()));
    assert!(!shown.contains(&pin), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(shown.contains(hsm.label()), "{shown}");
}

#[tokio::test]
async fn info_describes_softhsm_honestly() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let info = t.info().await.unwrap();
    assert_eq!(info.token_label, hsm.label());
    assert_eq!(info.serial_number, hsm.serial());
    assert!(info.model.contains("SoftHSM"), "{info:?}");
    assert!(!info.library_version.is_empty());
    assert!(info.is_software_token(), "{info:?}");
    let d = info.description();
    assert!(d.contains("software token, not a certified hardware security module"), "{d}");
    assert!(d.contains("SoftHSM"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_encrypts_from_many_tasks() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let keys = [t.generate_key("kv-c1").await.unwrap(), t.generate_key("kv-c2").await.unwrap()];
    let mut tasks = Vec::new();
    for task in 0..12u32 {
        let t = t.clone();
        let key = keys[task as usize % 2].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40u32 {
                let msg = format!("task {task} message {i}");
                let aad = task.to_be_bytes();
                let ct = t.encrypt(&key, msg.as_bytes(), &aad).await.unwrap();
                let pt = t.decrypt(&key, &ct, &aad).await.unwrap();
                assert_eq!(pt.expose(), msg.as_bytes());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[test]
fn token_is_send_and_sync_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let t = HsmToken::new(Pkcs11Config::new("/nonexistent.so", "t", SecretString::new("p".into())));
    send_sync(&t);
    let key = HsmKeyRef::new("k", vec![1]).unwrap();
    send(t.encrypt(&key, b"", b""));
    send(t.decrypt(&key, b"", b""));
    send(t.generate_key("k"));
    send(t.random_bytes(8));
    send(t.info());
}

#[tokio::test]
async fn two_token_values_on_one_token_share_the_module() {
    // Two in-process servers in one test: same module, same token, both work.
    let hsm = SoftHsm::new();
    let a = token(hsm.config());
    let b = token(hsm.config());
    let other_hsm = SoftHsm::new();
    let c = token(other_hsm.config());
    let ka = a.generate_key("kv-a").await.unwrap();
    let kc = c.generate_key("kv-c").await.unwrap();
    let ct = a.encrypt(&ka, b"from a", b"").await.unwrap();
    assert_eq!(b.decrypt(&ka, &ct, b"").await.unwrap().expose(), b"from a");
    // A key of another token is not found in this one.
    assert!(matches!(a.decrypt(&kc, &ct, b"").await, Err(HsmError::KeyNotFound { .. })));
    assert!(!a.key_exists(&kc).await.unwrap());
    assert!(c.key_exists(&kc).await.unwrap());
}

#[tokio::test]
async fn an_empty_token_label_is_a_configuration_error() {
    // SoftHSM's free slot has an empty label; logging in there must not even be tried.
    let hsm = SoftHsm::new();
    let t = token(Pkcs11Config { token_label: "  ".into(), ..hsm.config() });
    let e = t.random_bytes(8).await.unwrap_err();
    assert!(matches!(e, HsmError::Config { .. }), "{e:?}");
}

// Finding 10 (issue 15): reconciliation lists the token's version objects by label prefix.
#[tokio::test]
async fn list_keys_finds_objects_by_label_prefix() {
    let hsm = SoftHsm::new();
    let t = token(hsm.config());
    let a =
        t.generate_key("keyhold:projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1:aa").await.unwrap();
    let b =
        t.generate_key("keyhold:projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2:bb").await.unwrap();
    let other = t.generate_key("keyhold-root").await.unwrap();
    let listed = t.list_keys("keyhold:").await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    assert_eq!(t.list_keys("").await.unwrap().len(), 3);
    assert!(t.list_keys("").await.unwrap().contains(&other));
    t.destroy_key(&a).await.unwrap();
    assert_eq!(t.list_keys("keyhold:").await.unwrap(), vec![b]);
}
