//! Schema and statements. The DDL differs only in column types; every statement is shared.
//!
//! Resources are stored as their Cloud KMS JSON (`resource` columns), so what a client set is
//! returned exactly; the columns beside it exist for lookups, scheduling and compare-and-set.

/// Schema version written by this build. A database with a newer version is refused.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// `{blob}` is replaced by the dialect's binary type.
const DDL_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    id      BIGINT PRIMARY KEY,
    counter BIGINT NOT NULL
);
INSERT INTO changes (id, counter) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS key_rings (
    name     TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS key_rings_by_location ON key_rings (location, name);
CREATE TABLE IF NOT EXISTS crypto_keys (
    name                TEXT PRIMARY KEY,
    key_ring            TEXT NOT NULL REFERENCES key_rings (name),
    resource            TEXT NOT NULL,
    primary_version     BIGINT,
    next_version_id     BIGINT NOT NULL,
    next_rotation_nanos BIGINT,
    revision            BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS crypto_keys_by_ring ON crypto_keys (key_ring, name);
CREATE INDEX IF NOT EXISTS crypto_keys_by_rotation ON crypto_keys (next_rotation_nanos);
CREATE TABLE IF NOT EXISTS crypto_key_versions (
    name          TEXT PRIMARY KEY,
    crypto_key    TEXT NOT NULL REFERENCES crypto_keys (name),
    version_id    BIGINT NOT NULL,
    resource      TEXT NOT NULL,
    material      {blob},
    destroy_nanos BIGINT,
    revision      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_key ON crypto_key_versions (crypto_key, version_id);
CREATE INDEX IF NOT EXISTS versions_by_destroy_time ON crypto_key_versions (destroy_nanos);
";

/// The DDL with the dialect's binary column type.
pub(crate) fn ddl(blob_type: &str) -> String {
    DDL_V1.replace("{blob}", blob_type)
}

pub(crate) const BUMP_CHANGES: &str = "UPDATE changes SET counter = counter + 1 WHERE id = 1";
pub(crate) const CHANGE_COUNTER: &str = "SELECT counter FROM changes WHERE id = 1";
pub(crate) const META_INSERT: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
pub(crate) const META_GET: &str = "SELECT value FROM meta WHERE key = $1";

pub(crate) const INSERT_KEY_RING: &str = "INSERT INTO key_rings (name, location, resource) VALUES ($1, $2, $3)";
pub(crate) const GET_KEY_RING: &str = "SELECT resource FROM key_rings WHERE name = $1";
pub(crate) const LIST_KEY_RINGS: &str = "SELECT resource FROM key_rings WHERE location = $1 ORDER BY name";

pub(crate) const INSERT_CRYPTO_KEY: &str = "INSERT INTO crypto_keys \
    (name, key_ring, resource, primary_version, next_version_id, next_rotation_nanos, revision) \
    VALUES ($1, $2, $3, $4, $5, $6, 1)";
pub(crate) const GET_CRYPTO_KEY: &str =
    "SELECT name, resource, primary_version, revision FROM crypto_keys WHERE name = $1";
pub(crate) const LIST_CRYPTO_KEYS: &str =
    "SELECT name, resource, primary_version, revision FROM crypto_keys WHERE key_ring = $1 ORDER BY name";
pub(crate) const UPDATE_CRYPTO_KEY: &str = "UPDATE crypto_keys \
    SET resource = $1, primary_version = $2, next_rotation_nanos = $3, revision = revision + 1 \
    WHERE name = $4 AND revision = $5 RETURNING revision";
pub(crate) const SET_PRIMARY: &str =
    "UPDATE crypto_keys SET primary_version = $1, revision = revision + 1 WHERE name = $2";
pub(crate) const ALLOCATE_VERSION_ID: &str = "UPDATE crypto_keys SET next_version_id = next_version_id + 1 \
    WHERE name = $1 RETURNING next_version_id - 1";
pub(crate) const KEYS_DUE_FOR_ROTATION: &str =
    "SELECT name FROM crypto_keys WHERE next_rotation_nanos IS NOT NULL AND next_rotation_nanos <= $1 ORDER BY name";

pub(crate) const INSERT_VERSION: &str = "INSERT INTO crypto_key_versions \
    (name, crypto_key, version_id, resource, material, destroy_nanos, revision) \
    VALUES ($1, $2, $3, $4, $5, $6, 1)";
pub(crate) const GET_VERSION: &str =
    "SELECT name, resource, material, revision FROM crypto_key_versions WHERE name = $1";
pub(crate) const LIST_VERSIONS: &str = "SELECT name, resource, material, revision FROM crypto_key_versions \
    WHERE crypto_key = $1 ORDER BY version_id";
pub(crate) const UPDATE_VERSION: &str = "UPDATE crypto_key_versions \
    SET resource = $1, material = $2, destroy_nanos = $3, revision = revision + 1 \
    WHERE name = $4 AND revision = $5 RETURNING revision";
pub(crate) const VERSIONS_DUE_FOR_DESTRUCTION: &str = "SELECT name FROM crypto_key_versions \
    WHERE destroy_nanos IS NOT NULL AND destroy_nanos <= $1 ORDER BY name";
