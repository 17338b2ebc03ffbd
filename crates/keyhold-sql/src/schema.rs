//! Schema and statements. The DDL differs only in column types and collations; every statement
//! is shared, except the audit reads' resource comparisons, which name PostgreSQL's byte-order
//! collation (see [`AuditRead`]).
//!
//! Resources are stored as their Cloud KMS JSON (`resource` columns), so what a client set is
//! returned exactly; the columns beside it exist for lookups, scheduling and compare-and-set.

use crate::sql::Dialect;

/// Schema version written by this build. A database with a newer version is refused.
pub(crate) const SCHEMA_VERSION: i64 = 4;

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
CREATE TABLE IF NOT EXISTS change_log (
    seq      BIGINT PRIMARY KEY,
    kind     TEXT NOT NULL,
    resource TEXT NOT NULL
);
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

/// Version 2: IAM policies, projects, tokens, service identities, the audit log ([K8]-[K10]).
const DDL_V2: &str = "
CREATE TABLE IF NOT EXISTS iam_policies (
    resource TEXT PRIMARY KEY,
    policy   TEXT NOT NULL,
    revision BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    project_id     TEXT PRIMARY KEY,
    project_number BIGINT NOT NULL UNIQUE,
    create_nanos   BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    principal    TEXT NOT NULL,
    description  TEXT NOT NULL,
    create_nanos BIGINT NOT NULL,
    expire_nanos BIGINT NOT NULL,
    revoke_nanos BIGINT
);
CREATE TABLE IF NOT EXISTS service_identities (
    project_id   TEXT NOT NULL,
    service      TEXT NOT NULL,
    email        TEXT NOT NULL UNIQUE,
    unique_id    TEXT NOT NULL,
    create_nanos BIGINT NOT NULL,
    PRIMARY KEY (project_id, service)
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq        BIGINT PRIMARY KEY,
    time_nanos BIGINT NOT NULL,
    project    TEXT NOT NULL,
    principal  TEXT NOT NULL,
    method     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    entry      TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT (id) DO NOTHING;
";

/// Version 3: organization policies ([C12]) and the store ([C1]-[C7]). Nullable texts are
/// stored as '' (the generic driver binds no typed NULL for text).
const DDL_V3: &str = "
CREATE TABLE IF NOT EXISTS org_policies (
    name         TEXT PRIMARY KEY,
    project      TEXT NOT NULL,
    policy       TEXT NOT NULL,
    update_nanos BIGINT NOT NULL,
    revision     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS org_policies_by_project ON org_policies (project, name);
CREATE TABLE IF NOT EXISTS store_instances (
    name         TEXT PRIMARY KEY,
    parent       TEXT NOT NULL,
    kms_key      TEXT NOT NULL,
    labels       TEXT NOT NULL,
    create_nanos BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_instances_by_parent ON store_instances (parent, name);
CREATE TABLE IF NOT EXISTS store_keks (
    instance     TEXT NOT NULL,
    id           BIGINT NOT NULL,
    wrapped      {blob} NOT NULL,
    key_version  TEXT NOT NULL,
    create_nanos BIGINT NOT NULL,
    PRIMARY KEY (instance, id)
);
CREATE TABLE IF NOT EXISTS store_objects (
    instance     TEXT NOT NULL,
    name         TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    chunk_count  BIGINT NOT NULL,
    kek_id       BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    create_nanos BIGINT NOT NULL,
    update_nanos BIGINT NOT NULL,
    PRIMARY KEY (instance, name)
);
CREATE TABLE IF NOT EXISTS store_chunks (
    instance    TEXT NOT NULL,
    object      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    wrapped_dek {blob} NOT NULL,
    data        {blob} NOT NULL,
    PRIMARY KEY (instance, object, generation, idx)
);
CREATE TABLE IF NOT EXISTS store_uploads (
    instance    TEXT NOT NULL,
    object      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    start_nanos BIGINT NOT NULL,
    PRIMARY KEY (instance, object, generation)
);
";

/// Version 4: copies that keep their keys ([C8]-[C11]): backups, snapshots (pins) held while a
/// copy is taken, replicas, the exports written, and the names of instances and backups
/// (`BUILDING` while a restore, clone, import, replica or backup fills one; `LIVE` after), so
/// that a name is claimed by one resource at a time and an interrupted build can be found.
const DDL_V4: &str = "
CREATE TABLE IF NOT EXISTS store_backups (
    name          TEXT PRIMARY KEY,
    instance      TEXT NOT NULL,
    kms_key       TEXT NOT NULL,
    state         TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    object_count  BIGINT NOT NULL,
    version_nanos BIGINT NOT NULL,
    create_nanos  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_backups_by_instance ON store_backups (instance, name);
CREATE INDEX IF NOT EXISTS store_backups_by_key ON store_backups (kms_key);
CREATE TABLE IF NOT EXISTS store_pins (
    pin          TEXT NOT NULL,
    instance     TEXT NOT NULL,
    name         TEXT NOT NULL,
    generation   BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    chunk_count  BIGINT NOT NULL,
    kek_id       BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    create_nanos BIGINT NOT NULL,
    update_nanos BIGINT NOT NULL,
    PRIMARY KEY (pin, name)
);
CREATE INDEX IF NOT EXISTS store_pins_by_object ON store_pins (instance, name, generation);
CREATE TABLE IF NOT EXISTS store_names (
    resource    TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    start_nanos BIGINT NOT NULL
);
INSERT INTO store_names (resource, state, start_nanos)
    SELECT name, 'LIVE', create_nanos FROM store_instances WHERE true ON CONFLICT (resource) DO NOTHING;
CREATE TABLE IF NOT EXISTS store_replicas (
    replica          TEXT PRIMARY KEY,
    primary_instance TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_replicas_by_primary ON store_replicas (primary_instance, replica);
CREATE TABLE IF NOT EXISTS store_replica_sources (
    instance          TEXT NOT NULL,
    object            TEXT NOT NULL,
    source_generation BIGINT NOT NULL,
    PRIMARY KEY (instance, object)
);
CREATE TABLE IF NOT EXISTS store_exports (
    name         TEXT PRIMARY KEY,
    instance     TEXT NOT NULL,
    kms_key      TEXT NOT NULL,
    key_version  TEXT NOT NULL,
    destination  TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    object_count BIGINT NOT NULL,
    create_nanos BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_exports_by_key ON store_exports (kms_key);
";

/// Who is doing the store's unfinished work (hardening finding 6), so that a node starting
/// after a crash deletes what the crash left at once without touching an upload or build that
/// another node is still writing. Each store process is a node (a random ID per start) that
/// records a heartbeat every few seconds; each upload and build records its node. Work whose
/// node is gone (no heartbeat within the lease) is what a crash left. Additive tables: older
/// builds keep working on a database that has them (their work has no owner row, and is then
/// cleaned up only after an hour, the rule they follow themselves), so no version bump.
const DDL_V5_OWNERS: &str = "
CREATE TABLE IF NOT EXISTS store_nodes (
    node            TEXT PRIMARY KEY,
    heartbeat_nanos BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_exports_missing (
    name        TEXT PRIMARY KEY,
    since_nanos BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS store_work_owners (
    resource   TEXT NOT NULL,
    object     TEXT NOT NULL,
    generation BIGINT NOT NULL,
    node       TEXT NOT NULL,
    PRIMARY KEY (resource, object, generation)
);
";

/// The store's long-running operations (issue 18, finding 7): copies that answer at once and
/// run on. A running one (`done` 0) belongs to `node`; when that node's heartbeat lapses,
/// another takes it over and runs its `request` again as `caller`. Additive, so no version
/// bump.
const DDL_OPERATIONS: &str = "
CREATE TABLE IF NOT EXISTS store_operations (
    name             TEXT PRIMARY KEY,
    parent           TEXT NOT NULL,
    target           TEXT NOT NULL,
    request          TEXT NOT NULL,
    caller           TEXT NOT NULL,
    node             TEXT NOT NULL,
    done             BIGINT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    objects_done     BIGINT NOT NULL,
    objects_total    BIGINT NOT NULL,
    bytes_done       BIGINT NOT NULL,
    result           TEXT NOT NULL,
    create_nanos     BIGINT NOT NULL,
    end_nanos        BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_operations_by_parent ON store_operations (parent, name);
CREATE INDEX IF NOT EXISTS store_operations_running ON store_operations (done, node);
CREATE INDEX IF NOT EXISTS store_operations_by_end ON store_operations (done, end_nanos);
";

/// Import jobs (issue 19): the resource, and the private half of its wrapping key sealed by the
/// root key until the job expires (`expire_nanos`; then NULL). Imported versions' fingerprints
/// (an HMAC of their material under a key sealed by the root key), so that a destroyed imported
/// version takes back only its own material. Additive, so no version bump.
const DDL_IMPORT_JOBS: &str = "
CREATE TABLE IF NOT EXISTS import_jobs (
    name         TEXT PRIMARY KEY,
    key_ring     TEXT NOT NULL REFERENCES key_rings (name),
    resource     TEXT NOT NULL,
    wrapping_key {blob},
    expire_nanos BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS import_jobs_by_ring ON import_jobs (key_ring, name);
CREATE INDEX IF NOT EXISTS import_jobs_by_expiry ON import_jobs (expire_nanos);
CREATE TABLE IF NOT EXISTS import_fingerprints (
    version     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
";

/// Deletion (issue 19): the retired resources deleted crypto keys leave (their names are never
/// used again: `crypto_keys` inserts check `original`), and the long-running operations of the
/// deletions, finished when recorded. Additive, so no version bump.
const DDL_DELETION: &str = "
CREATE TABLE IF NOT EXISTS retired_resources (
    name     TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    original TEXT NOT NULL UNIQUE,
    resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS retired_resources_by_location ON retired_resources (location, name);
CREATE TABLE IF NOT EXISTS kms_operations (
    name     TEXT PRIMARY KEY,
    resource TEXT NOT NULL
);
";

/// How far each node's audit journal (`--audit-sync INTERVAL`) has been moved into the audit
/// log: entries `1..=ingested_through` of `journal` are in `audit_log`, committed with this row,
/// so that a replay after a crash appends exactly the rest. Additive, so no version bump.
const DDL_AUDIT_JOURNALS: &str = "
CREATE TABLE IF NOT EXISTS audit_journals (
    journal          TEXT PRIMARY KEY,
    ingested_through BIGINT NOT NULL
);
";

/// The audit log's read indexes (added to version 4's schema without a version change: they
/// are only created and dropped, and the resource index's table is filled from the log). Every
/// audit read has a `kind` and a time range and is ordered by (time, seq); each index but
/// `audit_tail` ends in those columns after the equality it serves, so a page is one index
/// range read in order, whatever the log's size (issue 18). `{bytes}` is the collation that
/// orders the resource column byte by byte (PostgreSQL's "C"; SQLite's default already does),
/// so that a resource prefix is an index range under any database collation.
///
/// The resource index is not kept by the appends (issue 18, seventh part): with load spread over
/// many keys every entry lands on its own key's page of it, so a commit of N entries wrote up
/// to N pages of it. It is the table `audit_resources`, which the node fills behind the log in
/// large windows sorted by resource (`crate::audit_index`): entries `1..=indexed_through` of
/// `audit_resources_mark` are in it. A read by resource takes those from the table and the
/// entries after the mark from the log through `audit_tail`, a right-edge index whose
/// columns are the ones that read tests.
const DDL_AUDIT_INDEXES: &str = "
DROP INDEX IF EXISTS audit_by_project;
CREATE INDEX IF NOT EXISTS audit_by_project_kind ON audit_log (project, kind, time_nanos, seq);
CREATE INDEX IF NOT EXISTS audit_by_kind ON audit_log (kind, time_nanos, seq);
DROP INDEX IF EXISTS audit_by_resource;
CREATE INDEX IF NOT EXISTS audit_tail ON audit_log (seq, kind, resource{bytes});
CREATE TABLE IF NOT EXISTS audit_resources (
    kind       TEXT NOT NULL,
    resource   TEXT{bytes} NOT NULL,
    time_nanos BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (kind, resource, time_nanos, seq)
){without_rowid};
CREATE TABLE IF NOT EXISTS audit_resources_mark (
    id              BIGINT PRIMARY KEY,
    indexed_through BIGINT NOT NULL,
    claimed_through BIGINT NOT NULL DEFAULT 0,
    claim_nanos     BIGINT NOT NULL DEFAULT 0
);
INSERT INTO audit_resources_mark (id, indexed_through) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE INDEX IF NOT EXISTS audit_by_principal ON audit_log (principal, kind, time_nanos, seq);
CREATE INDEX IF NOT EXISTS audit_by_project_principal ON audit_log (project, principal, kind, time_nanos, seq);
DROP INDEX IF EXISTS audit_by_method;
CREATE INDEX IF NOT EXISTS audit_by_project_method ON audit_log (project, method, kind, time_nanos, seq);
CREATE INDEX IF NOT EXISTS audit_by_method_kind ON audit_log (method, kind, time_nanos, seq);
";

/// The audit log refuses updates and deletes (tampering then needs a deliberate `DROP TRIGGER`,
/// and still breaks the hash chain).
pub(crate) const SQLITE_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
";
/// The in-memory database's: entries are never changed, and the oldest are deleted as new ones
/// arrive (`--in-memory-audit-entries`). Nothing outside the process can reach it.
pub(crate) const SQLITE_IN_MEMORY_TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
";

/// PostgreSQL spelling of [`SQLITE_TRIGGERS`].
pub(crate) const POSTGRES_TRIGGERS: &str = "
CREATE OR REPLACE FUNCTION keyhold_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION keyhold_audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION keyhold_audit_log_append_only();
";

/// The DDL in the dialect's types; with `audit_read_indexes`, the audit log's read indexes
/// (every database but the in-memory one, whose log is bounded by its retention: there a read
/// scans at most that many entries, and appends skip seven index inserts and as many deletes).
pub(crate) fn ddl(dialect: Dialect, audit_read_indexes: bool) -> String {
    let blob = dialect.blob_type();
    let indexes = if audit_read_indexes { DDL_AUDIT_INDEXES } else { "DROP INDEX IF EXISTS audit_by_project;" };
    format!(
        "{}{}{}{}{}{}{}{}{}{}",
        DDL_V1.replace("{blob}", blob),
        DDL_V2,
        DDL_V3.replace("{blob}", blob),
        DDL_V4,
        DDL_V5_OWNERS,
        DDL_OPERATIONS,
        DDL_AUDIT_JOURNALS,
        DDL_IMPORT_JOBS.replace("{blob}", blob),
        DDL_DELETION,
        indexes.replace("{bytes}", dialect.bytes_collation()).replace("{without_rowid}", dialect.without_rowid()),
    )
}

/// Records the schema version after migrating an older database.
pub(crate) const SCHEMA_VERSION_UPDATE: &str =
    "UPDATE meta SET value = $1 WHERE key = 'schema_version' AND CAST(value AS BIGINT) < $2";

pub(crate) const BUMP_CHANGES: &str = "UPDATE changes SET counter = counter + 1 WHERE id = 1";
pub(crate) const CHANGE_COUNTER: &str = "SELECT counter FROM changes WHERE id = 1";
/// After [`BUMP_CHANGES`], in the same transaction: what changed, under the new counter value.
pub(crate) const LOG_CHANGE: &str =
    "INSERT INTO change_log (seq, kind, resource) SELECT counter, $1, $2 FROM changes WHERE id = 1";
/// After [`LOG_CHANGE`]: the entry that fell out of the kept window (`$1` = CHANGE_LOG_KEPT).
pub(crate) const PRUNE_CHANGES: &str =
    "DELETE FROM change_log WHERE seq <= (SELECT counter FROM changes WHERE id = 1) - $1";
pub(crate) const CHANGES_SINCE: &str =
    "SELECT seq, kind, resource FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2";
pub(crate) const META_INSERT: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
pub(crate) const META_GET: &str = "SELECT value FROM meta WHERE key = $1";

pub(crate) const INSERT_KEY_RING: &str = "INSERT INTO key_rings (name, location, resource) VALUES ($1, $2, $3)";
pub(crate) const GET_KEY_RING: &str = "SELECT resource FROM key_rings WHERE name = $1";
pub(crate) const LIST_KEY_RINGS: &str =
    "SELECT resource FROM key_rings WHERE location = $1 AND name > $2 ORDER BY name LIMIT $3";
pub(crate) const COUNT_KEY_RINGS: &str = "SELECT count(*) FROM key_rings WHERE location = $1";

pub(crate) const INSERT_IMPORT_JOB: &str =
    "INSERT INTO import_jobs (name, key_ring, resource, wrapping_key, expire_nanos) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const COUNT_EXPIRED_WRAPPING_KEYS: &str =
    "SELECT count(*) FROM import_jobs WHERE expire_nanos <= $1 AND wrapping_key IS NOT NULL";
pub(crate) const ERASE_EXPIRED_WRAPPING_KEYS: &str =
    "UPDATE import_jobs SET wrapping_key = NULL WHERE expire_nanos <= $1 AND wrapping_key IS NOT NULL";
pub(crate) const INSERT_IMPORT_FINGERPRINT: &str =
    "INSERT INTO import_fingerprints (version, fingerprint) VALUES ($1, $2)";
pub(crate) const GET_IMPORT_FINGERPRINT: &str = "SELECT fingerprint FROM import_fingerprints WHERE version = $1";
pub(crate) const GET_IMPORT_JOB: &str = "SELECT name, resource, wrapping_key FROM import_jobs WHERE name = $1";
pub(crate) const LIST_IMPORT_JOBS: &str = "SELECT name, resource, wrapping_key FROM import_jobs \
    WHERE key_ring = $1 AND name > $2 ORDER BY name LIMIT $3";
pub(crate) const COUNT_IMPORT_JOBS: &str = "SELECT count(*) FROM import_jobs WHERE key_ring = $1";

/// Inserts nothing (0 rows) for the name of a deleted key: retired names are never used again.
pub(crate) const INSERT_CRYPTO_KEY: &str = "INSERT INTO crypto_keys \
    (name, key_ring, resource, primary_version, next_version_id, next_rotation_nanos, revision) \
    SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS BIGINT), CAST($5 AS BIGINT), \
    CAST($6 AS BIGINT), 1 WHERE NOT EXISTS (SELECT 1 FROM retired_resources WHERE original = $1)";
pub(crate) const DELETE_CRYPTO_KEY: &str = "DELETE FROM crypto_keys WHERE name = $1 AND revision = $2 \
    AND NOT EXISTS (SELECT 1 FROM crypto_key_versions WHERE crypto_key = $1)";
pub(crate) const LOCK_CRYPTO_KEY: &str = "UPDATE crypto_keys SET revision = revision WHERE name = $1";
pub(crate) const RETIRED_EXISTS: &str = "SELECT 1 FROM retired_resources WHERE original = $1";
pub(crate) const DELETE_VERSION: &str = "DELETE FROM crypto_key_versions WHERE name = $1 AND revision = $2";
pub(crate) const CLEAR_PRIMARY_IF: &str = "UPDATE crypto_keys SET primary_version = NULL, revision = revision + 1 \
    WHERE name = $1 AND primary_version = $2";
pub(crate) const DELETE_IMPORT_FINGERPRINT: &str = "DELETE FROM import_fingerprints WHERE version = $1";
pub(crate) const DELETE_POLICY: &str = "DELETE FROM iam_policies WHERE resource = $1";
pub(crate) const INSERT_RETIRED: &str =
    "INSERT INTO retired_resources (name, location, original, resource) VALUES ($1, $2, $3, $4)";
pub(crate) const GET_RETIRED: &str = "SELECT resource FROM retired_resources WHERE name = $1";
pub(crate) const GET_RETIRED_OF: &str = "SELECT resource FROM retired_resources WHERE original = $1";
pub(crate) const LIST_RETIRED: &str =
    "SELECT resource FROM retired_resources WHERE location = $1 AND name > $2 ORDER BY name LIMIT $3";
pub(crate) const COUNT_RETIRED: &str = "SELECT count(*) FROM retired_resources WHERE location = $1";
pub(crate) const INSERT_KMS_OPERATION: &str = "INSERT INTO kms_operations (name, resource) VALUES ($1, $2)";
pub(crate) const GET_KMS_OPERATION: &str = "SELECT resource FROM kms_operations WHERE name = $1";
pub(crate) const GET_CRYPTO_KEY: &str =
    "SELECT name, resource, primary_version, revision FROM crypto_keys WHERE name = $1";
/// A page of a ring's keys with their primary versions (columns 4-7, NULL without one).
pub(crate) const LIST_CRYPTO_KEYS: &str = "SELECT k.name, k.resource, k.primary_version, k.revision, \
    v.name, v.resource, v.material, v.revision FROM crypto_keys k \
    LEFT JOIN crypto_key_versions v ON v.crypto_key = k.name AND v.version_id = k.primary_version \
    WHERE k.key_ring = $1 AND k.name > $2 ORDER BY k.name LIMIT $3";
pub(crate) const COUNT_CRYPTO_KEYS: &str = "SELECT count(*) FROM crypto_keys WHERE key_ring = $1";
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
    WHERE crypto_key = $1 AND version_id > $2 ORDER BY version_id LIMIT $3";
pub(crate) const COUNT_VERSIONS: &str = "SELECT count(*) FROM crypto_key_versions WHERE crypto_key = $1";
pub(crate) const LIST_ALL_VERSIONS: &str =
    "SELECT name, resource, material, revision FROM crypto_key_versions ORDER BY name";
pub(crate) const UPDATE_VERSION: &str = "UPDATE crypto_key_versions \
    SET resource = $1, material = $2, destroy_nanos = $3, revision = revision + 1 \
    WHERE name = $4 AND revision = $5 RETURNING revision";
/// `destroy_nanos` holds `VersionRecord::due_time`: a destruction or a pending generation.
pub(crate) const VERSIONS_DUE: &str = "SELECT name FROM crypto_key_versions \
    WHERE destroy_nanos IS NOT NULL AND destroy_nanos <= $1 ORDER BY name";

pub(crate) const GET_POLICY: &str = "SELECT policy, revision FROM iam_policies WHERE resource = $1";
pub(crate) const INSERT_POLICY: &str = "INSERT INTO iam_policies (resource, policy, revision) VALUES ($1, $2, 1)";
pub(crate) const UPSERT_POLICY: &str = "INSERT INTO iam_policies (resource, policy, revision) VALUES ($1, $2, 1) \
    ON CONFLICT (resource) DO UPDATE SET policy = excluded.policy, revision = iam_policies.revision + 1 \
    RETURNING revision";
pub(crate) const UPDATE_POLICY: &str = "UPDATE iam_policies SET policy = $1, revision = revision + 1 \
    WHERE resource = $2 AND revision = $3 RETURNING revision";

pub(crate) const GET_PROJECT: &str =
    "SELECT project_id, project_number, create_nanos FROM projects WHERE project_id = $1";
pub(crate) const INSERT_PROJECT: &str =
    "INSERT INTO projects (project_id, project_number, create_nanos) VALUES ($1, $2, $3)";

pub(crate) const TOKEN_COLUMNS_INSERT: &str = "INSERT INTO tokens \
    (id, hash, principal, description, create_nanos, expire_nanos, revoke_nanos) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const TOKEN_BY_HASH: &str = "SELECT id, hash, principal, description, create_nanos, expire_nanos, revoke_nanos \
    FROM tokens WHERE hash = $1";
pub(crate) const LIST_TOKENS: &str = "SELECT id, hash, principal, description, create_nanos, expire_nanos, revoke_nanos \
    FROM tokens ORDER BY create_nanos DESC, id";
pub(crate) const REVOKE_TOKEN: &str = "UPDATE tokens SET revoke_nanos = $1 WHERE id = $2 AND revoke_nanos IS NULL";

pub(crate) const INSERT_SERVICE_IDENTITY: &str = "INSERT INTO service_identities \
    (project_id, service, email, unique_id, create_nanos) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const GET_SERVICE_IDENTITY: &str = "SELECT project_id, service, email, unique_id, create_nanos \
    FROM service_identities WHERE project_id = $1 AND service = $2";
pub(crate) const SERVICE_IDENTITY_BY_EMAIL: &str = "SELECT project_id, service, email, unique_id, create_nanos \
    FROM service_identities WHERE email = $1";

/// Takes the chain's row lock and reads the head in one statement (PostgreSQL: other appenders
/// wait here until commit, then see the head as they left it).
pub(crate) const LOCK_AUDIT_HEAD: &str = "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";
pub(crate) const GET_AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
pub(crate) const SET_AUDIT_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
/// Records how far a node's audit journal is in the log (in the transaction that appends it).
pub(crate) const SET_JOURNAL_MARK: &str = "INSERT INTO audit_journals (journal, ingested_through) VALUES ($1, $2) \
    ON CONFLICT (journal) DO UPDATE SET ingested_through = excluded.ingested_through";
pub(crate) const GET_JOURNAL_MARK: &str = "SELECT ingested_through FROM audit_journals WHERE journal = $1";
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_log \
    (seq, time_nanos, project, principal, method, resource, kind, entry, prev_hash, hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// How an audit read matches the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ResourceMatch {
    /// Any resource.
    Any,
    /// Exactly the prefix (an index range in order: of `audit_resources`, up to its mark, with
    /// the read indexes).
    Exact,
    /// Longer names starting with the prefix (an index range, sorted by time: its cost is the
    /// number of entries under the prefix).
    Below,
    /// The prefix and longer names, among the entries after the resource index's mark (the
    /// rest of an `Exact` and `Below` read, with the read indexes), of either kind when the
    /// kind is '': one walk of `audit_tail` from the mark, whose cost is the entries after it.
    Tail,
    /// Names starting with the prefix, tested on each entry the other filters' index yields: a
    /// project's read with a prefix outside `projects/PROJECT/` (which could otherwise walk other
    /// projects' entries in the resource index) stays within the project's own entries.
    Within,
}

/// The shape of one audit read: which filters it has. Each shape is one statement, built once
/// from fixed fragments (no caller text is ever spliced in). Parameters, in order: kind, start,
/// end, cursor time, cursor seq, then project, method, principal and resource when present,
/// the resource index's mark when the shape reads one side of it ([`AuditRead::split`]), and
/// the limit.
///
/// With the read indexes, a read by resource is the `Exact` and `Below` shapes over
/// `audit_resources`, for the entries up to its mark, and one `Tail` shape over the log for the
/// entries after it. (A project's reads name a prefix inside the project, which
/// `keyhold_kms::audit` narrows them to, so these ranges stay within the project's own
/// resources; every shape also tests the project on the log's row.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AuditRead {
    pub project: bool,
    pub method: bool,
    pub principal: bool,
    pub resource: ResourceMatch,
    pub descending: bool,
}

impl AuditRead {
    /// Every shape (80).
    fn all() -> impl Iterator<Item = AuditRead> {
        (0..16u8).flat_map(|bits| {
            [ResourceMatch::Any, ResourceMatch::Exact, ResourceMatch::Below, ResourceMatch::Within, ResourceMatch::Tail]
                .into_iter()
                .map(move |resource| AuditRead {
                    project: bits & 1 != 0,
                    method: bits & 2 != 0,
                    principal: bits & 4 != 0,
                    resource,
                    descending: bits & 8 != 0,
                })
        })
    }

    /// Whether, on a database with the read indexes (`indexed`), this shape reads one side of
    /// the resource index's mark (and takes the mark as a parameter).
    pub(crate) fn split(self, indexed: bool) -> bool {
        indexed && matches!(self.resource, ResourceMatch::Exact | ResourceMatch::Below | ResourceMatch::Tail)
    }

    /// What serves this shape with the read indexes: the resource index's table, or the index
    /// of `audit_log` for the most selective filter it has.
    fn index(self) -> &'static str {
        match self {
            AuditRead { resource: ResourceMatch::Exact | ResourceMatch::Below, .. } => "audit_resources",
            AuditRead { resource: ResourceMatch::Tail, .. } => "audit_tail",
            AuditRead { principal: true, project: true, .. } => "audit_by_project_principal",
            AuditRead { principal: true, .. } => "audit_by_principal",
            AuditRead { method: true, project: true, .. } => "audit_by_project_method",
            AuditRead { method: true, .. } => "audit_by_method_kind",
            AuditRead { project: true, .. } => "audit_by_project_kind",
            _ => "audit_by_kind",
        }
    }

    fn build(self, dialect: Dialect, indexed: bool) -> String {
        let (cmp, dir) = if self.descending { ("<", " DESC") } else { (">", "") };
        let split = self.split(indexed);
        // The side before the mark walks `audit_resources` (`r`) in order and looks each entry
        // up in the log (`l`) by its seq; its filters on kind, time and resource are on `r`,
        // the others on `l`. Elsewhere there is only the log.
        let indexed_side = split && self.resource != ResourceMatch::Tail;
        let (key, row) = if indexed_side { ("r.", "l.") } else { ("", "") };
        // SQLite plans without statistics and would rather walk the (kind, time) index in order
        // than sort a resource range, however few entries the range holds: it is told which
        // index serves the shape (and, with CROSS JOIN, which table is the outer loop).
        // PostgreSQL chooses from its statistics.
        let from = match (dialect, indexed) {
            _ if indexed_side => "audit_resources r CROSS JOIN audit_log l".to_string(),
            (Dialect::Sqlite, true) => format!("audit_log INDEXED BY {}", self.index()),
            _ => "audit_log".to_string(),
        };
        // The tail reads both kinds at once when the kind is ''.
        let kind = if self.resource == ResourceMatch::Tail {
            "(CAST($1 AS TEXT) = '' OR kind = CAST($1 AS TEXT))".to_string()
        } else {
            format!("{key}kind = CAST($1 AS TEXT)")
        };
        let mut sql = format!(
            "SELECT {row}seq, {row}entry, {row}prev_hash, {row}hash, {row}time_nanos FROM {from} \
             WHERE {kind} \
             AND {key}time_nanos >= CAST($2 AS BIGINT) AND {key}time_nanos < CAST($3 AS BIGINT) \
             AND ({key}time_nanos, {key}seq) {cmp} (CAST($4 AS BIGINT), CAST($5 AS BIGINT))"
        );
        if indexed_side {
            sql += " AND l.seq = r.seq";
        }
        let mut n = 5;
        let mut param = || {
            n += 1;
            n
        };
        if self.project {
            sql += &format!(" AND {row}project = CAST(${} AS TEXT)", param());
        }
        if self.method {
            sql += &format!(" AND {row}method = CAST(${} AS TEXT)", param());
        }
        if self.principal {
            sql += &format!(" AND {row}principal = CAST(${} AS TEXT)", param());
        }
        let bytes = dialect.bytes_collation();
        match self.resource {
            ResourceMatch::Any => {}
            ResourceMatch::Exact => sql += &format!(" AND {key}resource{bytes} = CAST(${} AS TEXT)", param()),
            ResourceMatch::Within => {
                let prefix = param();
                sql += &format!(" AND substr(resource, 1, length(CAST(${prefix} AS TEXT))) = CAST(${prefix} AS TEXT)");
            }
            ResourceMatch::Below | ResourceMatch::Tail => {
                // The range finds the candidates in the index; the prefix test decides (the
                // range's upper bound is the prefix followed by DEL, above every character of a
                // resource name). The tail includes the prefix itself.
                let (prefix, upper) = (param(), param());
                let lower = if self.resource == ResourceMatch::Tail { ">=" } else { ">" };
                sql += &format!(
                    " AND {key}resource{bytes} {lower} CAST(${prefix} AS TEXT) \
                     AND {key}resource{bytes} < CAST(${upper} AS TEXT) \
                     AND substr({key}resource, 1, length(CAST(${prefix} AS TEXT))) = CAST(${prefix} AS TEXT)"
                );
            }
        }
        if split {
            let side = if self.resource == ResourceMatch::Tail { ">" } else { "<=" };
            sql += &format!(" AND {key}seq {side} CAST(${} AS BIGINT)", param());
        }
        sql += &format!(" ORDER BY {key}time_nanos{dir}, {key}seq{dir} LIMIT CAST(${} AS BIGINT)", param());
        sql
    }

    /// This shape's statement in `dialect`, for a database with the read indexes (`indexed`)
    /// or without them (the in-memory one).
    pub(crate) fn statement(self, dialect: Dialect, indexed: bool) -> &'static str {
        type Statements = std::collections::HashMap<(Dialect, bool, AuditRead), &'static str>;
        static STATEMENTS: std::sync::LazyLock<Statements> = std::sync::LazyLock::new(|| {
            let mut all = Statements::new();
            for shape in AuditRead::all() {
                for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                    for indexed in [true, false] {
                        let sql = Box::leak(shape.build(dialect, indexed).into_boxed_str());
                        all.insert((dialect, indexed, shape), sql);
                    }
                }
            }
            all
        });
        STATEMENTS[&(dialect, indexed, self)]
    }
}

/// How far the resource index has been filled: entries `1..=indexed_through` are in
/// `audit_resources`.
pub(crate) const AUDIT_RESOURCES_MARK: &str = "SELECT indexed_through FROM audit_resources_mark WHERE id = 1";
/// Claims the window ending at `$1` for this node's fill, at time `$2`, unless it is filled or
/// another node claimed it (or a later one) after `$3` (a claim older than that was left by a
/// node that stopped). One row changed: the fill goes ahead.
pub(crate) const CLAIM_AUDIT_RESOURCES_WINDOW: &str = "UPDATE audit_resources_mark SET claimed_through = $1, \
     claim_nanos = $2 WHERE id = 1 AND indexed_through < $1 AND (claimed_through < $1 OR claim_nanos < $3)";
/// Moves the mark forward (never back: another node may have filled further).
pub(crate) const SET_AUDIT_RESOURCES_MARK: &str =
    "UPDATE audit_resources_mark SET indexed_through = $1 WHERE id = 1 AND indexed_through < $1";
/// One resource-index row (it may be there already: another node, or a fill a crash cut short).
pub(crate) const INSERT_AUDIT_RESOURCE: &str = "INSERT INTO audit_resources (kind, resource, time_nanos, seq) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// The resource-index columns of entries `$1 < seq <= $2`, found through `audit_tail`.
pub(crate) fn audit_resources_window(dialect: Dialect) -> &'static str {
    macro_rules! window {
        ($from:literal) => {
            concat!("SELECT kind, resource, time_nanos, seq FROM ", $from, " WHERE seq > $1 AND seq <= $2")
        };
    }
    match dialect {
        Dialect::Sqlite => window!("audit_log INDEXED BY audit_tail"),
        Dialect::Postgres => window!("audit_log"),
    }
}

/// Adds entries `$1 < seq <= $2` to the resource index in one statement, in the index's order.
pub(crate) fn catch_up_audit_resources(dialect: Dialect) -> &'static str {
    macro_rules! catch_up {
        ($resource:literal) => {
            concat!(
                "INSERT INTO audit_resources (kind, resource, time_nanos, seq) SELECT kind, resource, time_nanos, seq \
                 FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY kind, ",
                $resource,
                ", time_nanos, seq ON CONFLICT DO NOTHING"
            )
        };
    }
    match dialect {
        Dialect::Sqlite => catch_up!("resource"),
        Dialect::Postgres => catch_up!("resource COLLATE \"C\""),
    }
}

/// Deletes the entries at or before `$1` (the in-memory database's retention).
pub(crate) const PRUNE_AUDIT: &str = "DELETE FROM audit_log WHERE seq <= $1";
pub(crate) const AUDIT_CHAIN: &str =
    "SELECT seq, entry, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";

pub(crate) const GET_ORG_POLICY: &str =
    "SELECT name, project, policy, update_nanos, revision FROM org_policies WHERE name = $1";
pub(crate) const LIST_ORG_POLICIES: &str =
    "SELECT name, project, policy, update_nanos, revision FROM org_policies WHERE project = $1 ORDER BY name";
pub(crate) const UPSERT_ORG_POLICY: &str = "INSERT INTO org_policies (name, project, policy, update_nanos, revision) \
     VALUES ($1, $2, $3, $4, 1) ON CONFLICT (name) DO UPDATE SET policy = excluded.policy, \
     update_nanos = excluded.update_nanos, revision = org_policies.revision + 1 RETURNING revision";
pub(crate) const DELETE_ORG_POLICY: &str = "DELETE FROM org_policies WHERE name = $1";

pub(crate) const INSERT_INSTANCE: &str =
    "INSERT INTO store_instances (name, parent, kms_key, labels, create_nanos) VALUES ($1, $2, $3, $4, $5)";
/// An instance's columns, with the primary it replicates ('' if none).
macro_rules! instance_select {
    ($where:literal) => {
        concat!(
            "SELECT i.name, i.kms_key, i.labels, i.create_nanos, COALESCE(r.primary_instance, '') \
             FROM store_instances i LEFT JOIN store_replicas r ON r.replica = i.name WHERE ",
            $where
        )
    };
}
pub(crate) const GET_INSTANCE: &str = instance_select!("i.name = $1");
pub(crate) const LIST_INSTANCES: &str = instance_select!("i.parent = $1 ORDER BY i.name");
pub(crate) const INSTANCES_BY_KEY: &str = instance_select!("i.kms_key = $1 ORDER BY i.name");
pub(crate) const INSERT_REPLICA: &str = "INSERT INTO store_replicas (replica, primary_instance) VALUES ($1, $2)";
pub(crate) const REPLICAS_OF: &str = "SELECT replica FROM store_replicas WHERE primary_instance = $1 ORDER BY replica";
pub(crate) const ALL_REPLICAS: &str =
    "SELECT r.replica FROM store_replicas r JOIN store_instances i ON i.name = r.replica ORDER BY r.replica";
pub(crate) const DELETE_REPLICA: &str = "DELETE FROM store_replicas WHERE replica = $1";
pub(crate) const REPLICA_SOURCES: &str =
    "SELECT object, source_generation FROM store_replica_sources WHERE instance = $1";
pub(crate) const SET_REPLICA_SOURCE: &str = "INSERT INTO store_replica_sources (instance, object, source_generation) \
     VALUES ($1, $2, $3) ON CONFLICT (instance, object) DO UPDATE SET source_generation = excluded.source_generation";
pub(crate) const DELETE_REPLICA_SOURCE: &str = "DELETE FROM store_replica_sources WHERE instance = $1 AND object = $2";
pub(crate) const DELETE_INSTANCE_REPLICA_SOURCES: &str = "DELETE FROM store_replica_sources WHERE instance = $1";
pub(crate) const DELETE_INSTANCE_PINS: &str = "DELETE FROM store_pins WHERE pin = $1 OR instance = $1";
pub(crate) const NAME_CLAIMED: &str = "SELECT 1 FROM store_names WHERE resource = $1";
pub(crate) const DELETE_NAME: &str = "DELETE FROM store_names WHERE resource = $1";
pub(crate) const CLAIM_NAME: &str = "INSERT INTO store_names (resource, state, start_nanos) VALUES ($1, $2, $3)";
pub(crate) const NAME_BUILT: &str = "UPDATE store_names SET state = 'LIVE' WHERE resource = $1 AND state = 'BUILDING'";

/// Takes the lock that orders a snapshot (pin) against the commits that delete chunks of an
/// instance (PostgreSQL; SQLite runs one transaction at a time). Writers share it.
pub(crate) const PG_LOCK_OBJECTS_SHARED: &str = "SELECT pg_advisory_xact_lock_shared(hashtext($1))";
/// The snapshot's side of [`PG_LOCK_OBJECTS_SHARED`].
pub(crate) const PG_LOCK_OBJECTS_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";
/// Snapshots an instance's objects for the copy `pin` (`$2`): their chunks and KEKs stay until
/// the copy is done, whatever is written meanwhile.
pub(crate) const PIN_OBJECTS: &str = "INSERT INTO store_pins \
     (pin, instance, name, generation, size, chunk_count, kek_id, content_type, create_nanos, update_nanos) \
     SELECT $2, instance, name, generation, size, chunk_count, kek_id, content_type, create_nanos, update_nanos \
     FROM store_objects WHERE instance = $1";
pub(crate) const LIST_PINNED: &str = "SELECT name, generation, size, chunk_count, kek_id, content_type, create_nanos, \
     update_nanos FROM store_pins WHERE pin = $1 AND name > CAST($2 AS TEXT) ORDER BY name LIMIT $3";
/// The chunks only a finished copy's snapshot still kept.
pub(crate) const DELETE_UNPINNED_CHUNKS: &str = "DELETE FROM store_chunks WHERE instance = $1 \
     AND EXISTS (SELECT 1 FROM store_pins p WHERE p.pin = $2 AND p.instance = $1 \
         AND p.name = store_chunks.object AND p.generation = store_chunks.generation) \
     AND NOT EXISTS (SELECT 1 FROM store_objects o WHERE o.instance = $1 \
         AND o.name = store_chunks.object AND o.generation = store_chunks.generation) \
     AND NOT EXISTS (SELECT 1 FROM store_pins q WHERE q.pin <> $2 AND q.instance = $1 \
         AND q.name = store_chunks.object AND q.generation = store_chunks.generation)";
pub(crate) const DELETE_PINS: &str = "DELETE FROM store_pins WHERE pin = $1";
pub(crate) const PINNED_INSTANCES: &str = "SELECT DISTINCT instance FROM store_pins WHERE pin = $1";

pub(crate) const INSERT_BACKUP: &str = "INSERT INTO store_backups \
     (name, instance, kms_key, state, size_bytes, object_count, version_nanos, create_nanos) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
macro_rules! backup_select {
    ($where:literal) => {
        concat!(
            "SELECT name, instance, kms_key, state, size_bytes, object_count, version_nanos, create_nanos \
             FROM store_backups WHERE ",
            $where
        )
    };
}
pub(crate) const GET_BACKUP: &str = backup_select!("name = $1");
pub(crate) const LIST_BACKUPS: &str = backup_select!("instance = $1 ORDER BY name");
pub(crate) const BACKUPS_BY_KEY: &str = backup_select!("kms_key = $1 ORDER BY name");
pub(crate) const FINISH_BACKUP: &str =
    "UPDATE store_backups SET state = 'READY', size_bytes = $2, object_count = $3 WHERE name = $1";
pub(crate) const DELETE_BACKUP: &str = "DELETE FROM store_backups WHERE name = $1";

pub(crate) const INSERT_EXPORT: &str = "INSERT INTO store_exports \
     (name, instance, kms_key, key_version, destination, size_bytes, object_count, create_nanos) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
/// The exports under a key whose file is there (finding 10: one whose file is gone protects
/// nothing, and is left out until its file comes back).
pub(crate) const EXPORTS_BY_KEY: &str = "SELECT name, instance, kms_key, key_version, destination, size_bytes, \
     object_count, create_nanos FROM store_exports WHERE kms_key = $1 \
     AND name NOT IN (SELECT name FROM store_exports_missing) ORDER BY name";
/// Every export of instances whose name starts with `$1`, and whether its file was found gone.
pub(crate) const EXPORTS_UNDER: &str = "SELECT e.name, e.instance, e.kms_key, e.key_version, e.destination, \
     e.size_bytes, e.object_count, e.create_nanos, CASE WHEN m.name IS NULL THEN 0 ELSE 1 END \
     FROM store_exports e LEFT JOIN store_exports_missing m ON m.name = e.name \
     WHERE substr(e.instance, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT) ORDER BY e.name";
pub(crate) const MARK_EXPORT_MISSING: &str =
    "INSERT INTO store_exports_missing (name, since_nanos) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
pub(crate) const MARK_EXPORT_PRESENT: &str = "DELETE FROM store_exports_missing WHERE name = $1";
pub(crate) const DELETE_INSTANCE_CHUNKS: &str = "DELETE FROM store_chunks WHERE instance = $1";
pub(crate) const DELETE_INSTANCE_OBJECTS: &str = "DELETE FROM store_objects WHERE instance = $1";
pub(crate) const DELETE_INSTANCE_UPLOADS: &str = "DELETE FROM store_uploads WHERE instance = $1";
pub(crate) const DELETE_INSTANCE_KEKS: &str = "DELETE FROM store_keks WHERE instance = $1";
pub(crate) const DELETE_INSTANCE: &str = "DELETE FROM store_instances WHERE name = $1";
pub(crate) const LIST_KEKS: &str =
    "SELECT id, wrapped, key_version, create_nanos FROM store_keks WHERE instance = $1 ORDER BY id";
pub(crate) const INSERT_KEK: &str =
    "INSERT INTO store_keks (instance, id, wrapped, key_version, create_nanos) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const UPDATE_KEK: &str =
    "UPDATE store_keks SET wrapped = $3, key_version = $4 WHERE instance = $1 AND id = $2";
pub(crate) const KEK_EXISTS: &str = "SELECT 1 FROM store_keks WHERE instance = $1 AND id = $2";
pub(crate) const DELETE_KEK_IF_UNUSED: &str = "DELETE FROM store_keks WHERE instance = $1 AND id = $2 \
     AND NOT EXISTS (SELECT 1 FROM store_objects WHERE instance = $1 AND kek_id = $2) \
     AND NOT EXISTS (SELECT 1 FROM store_pins WHERE instance = $1 AND kek_id = $2)";
pub(crate) const BEGIN_UPLOAD: &str =
    "INSERT INTO store_uploads (instance, object, generation, start_nanos) VALUES ($1, $2, $3, $4)";
pub(crate) const INSERT_CHUNK: &str = "INSERT INTO store_chunks (instance, object, generation, idx, wrapped_dek, data) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const UPSERT_OBJECT: &str = "INSERT INTO store_objects \
     (instance, name, generation, size, chunk_count, kek_id, content_type, create_nanos, update_nanos) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (instance, name) DO UPDATE SET \
     generation = excluded.generation, size = excluded.size, chunk_count = excluded.chunk_count, \
     kek_id = excluded.kek_id, content_type = excluded.content_type, update_nanos = excluded.update_nanos";
pub(crate) const REPLACE_OBJECT_IF_GENERATION: &str = "UPDATE store_objects SET generation = $3, size = $4, \
     chunk_count = $5, kek_id = $6, content_type = $7, update_nanos = $9 \
     WHERE instance = $1 AND name = $2 AND generation = $10 AND create_nanos = $8";
pub(crate) const END_UPLOAD: &str = "DELETE FROM store_uploads WHERE instance = $1 AND object = $2 AND generation = $3";
/// Every chunk of the object except the live generation's, those of uploads in progress, and
/// those a copy in progress has pinned.
pub(crate) const DELETE_DEAD_CHUNKS: &str = "DELETE FROM store_chunks WHERE instance = $1 AND object = $2 \
     AND generation <> $3 \
     AND generation NOT IN (SELECT generation FROM store_uploads WHERE instance = $1 AND object = $2) \
     AND generation NOT IN (SELECT generation FROM store_pins WHERE instance = $1 AND name = $2)";
pub(crate) const DELETE_UPLOAD_CHUNKS: &str =
    "DELETE FROM store_chunks WHERE instance = $1 AND object = $2 AND generation = $3";
/// Records which node does a piece of work: an upload (`$2` object, `$3` generation) or a
/// build (object `''`, generation 0).
pub(crate) const OWN_WORK: &str =
    "INSERT INTO store_work_owners (resource, object, generation, node) VALUES ($1, $2, $3, $4)";
pub(crate) const END_WORK: &str =
    "DELETE FROM store_work_owners WHERE resource = $1 AND object = $2 AND generation = $3";
pub(crate) const DELETE_RESOURCE_WORK: &str = "DELETE FROM store_work_owners WHERE resource = $1";
pub(crate) const HEARTBEAT: &str = "INSERT INTO store_nodes (node, heartbeat_nanos) VALUES ($1, $2) \
     ON CONFLICT (node) DO UPDATE SET heartbeat_nanos = excluded.heartbeat_nanos";
pub(crate) const DELETE_DEAD_NODES: &str = "DELETE FROM store_nodes WHERE heartbeat_nanos < $1 AND node <> $2";
/// Uploads no live node is writing: another node's (`$1` is this one) whose heartbeat is older
/// than `$2` (or which never recorded one, begun before `$2`), and ownerless ones (written by
/// an older build) begun before `$3`.
pub(crate) const ORPHANED_UPLOADS: &str = "SELECT u.instance, u.object, u.generation FROM store_uploads u \
     LEFT JOIN store_work_owners w ON w.resource = u.instance AND w.object = u.object AND w.generation = u.generation \
     LEFT JOIN store_nodes n ON n.node = w.node \
     WHERE (w.node IS NULL AND u.start_nanos < $3) \
        OR (w.node <> $1 AND (n.heartbeat_nanos < $2 OR (n.node IS NULL AND u.start_nanos < $2))) \
     ORDER BY u.start_nanos";
/// The same for builds (restores, clones, imports, replicas, backups).
pub(crate) const ORPHANED_BUILDS: &str = "SELECT b.resource FROM store_names b \
     LEFT JOIN store_work_owners w ON w.resource = b.resource AND w.object = '' AND w.generation = 0 \
     LEFT JOIN store_nodes n ON n.node = w.node \
     WHERE b.state = 'BUILDING' AND ((w.node IS NULL AND b.start_nanos < $3) \
        OR (w.node <> $1 AND (n.heartbeat_nanos < $2 OR (n.node IS NULL AND b.start_nanos < $2)))) \
     ORDER BY b.start_nanos";
pub(crate) const GET_OBJECT: &str = "SELECT name, generation, size, chunk_count, kek_id, content_type, create_nanos, \
     update_nanos FROM store_objects WHERE instance = $1 AND name = $2";
pub(crate) const LIST_OBJECTS: &str = "SELECT name, generation, size, chunk_count, kek_id, content_type, create_nanos, \
     update_nanos FROM store_objects WHERE instance = $1 AND substr(name, 1, length(CAST($2 AS TEXT))) = CAST($2 AS TEXT) AND name > CAST($3 AS TEXT) \
     ORDER BY name LIMIT $4";
pub(crate) const DELETE_OBJECT_CHUNKS: &str = "DELETE FROM store_chunks WHERE instance = $1 AND object = $2 \
     AND generation = (SELECT generation FROM store_objects WHERE instance = $1 AND name = $2) \
     AND generation NOT IN (SELECT generation FROM store_pins WHERE instance = $1 AND name = $2)";
pub(crate) const DELETE_OBJECT: &str = "DELETE FROM store_objects WHERE instance = $1 AND name = $2";
pub(crate) const GET_CHUNK: &str = "SELECT wrapped_dek, data FROM store_chunks \
     WHERE instance = $1 AND object = $2 AND generation = $3 AND idx = $4";

pub(crate) const COUNT_PINNED: &str = "SELECT count(*) FROM store_pins WHERE pin = $1";
pub(crate) const COUNT_OBJECTS: &str = "SELECT count(*) FROM store_objects WHERE instance = $1";
/// The columns of an operation, in [`crate::store_repo`]'s order.
macro_rules! operation_columns {
    () => {
        "name, target, request, caller, node, done, cancel_requested, objects_done, objects_total, bytes_done, \
         result, create_nanos, end_nanos"
    };
}
pub(crate) const INSERT_OPERATION: &str = "INSERT INTO store_operations (name, parent, target, request, caller, node, \
     done, cancel_requested, objects_done, objects_total, bytes_done, result, create_nanos, end_nanos) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
pub(crate) const GET_OPERATION: &str =
    concat!("SELECT ", operation_columns!(), " FROM store_operations WHERE name = $1");
pub(crate) const LIST_OPERATIONS: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM store_operations WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3"
);
/// Saves progress of `$1` if it is still running on node `$2`.
pub(crate) const OPERATION_PROGRESS: &str = "UPDATE store_operations SET objects_done = $3, objects_total = $4, \
     bytes_done = $5 WHERE name = $1 AND node = $2 AND done = 0";
pub(crate) const OPERATION_CANCEL_REQUESTED: &str = "SELECT cancel_requested FROM store_operations WHERE name = $1";
pub(crate) const FINISH_OPERATION: &str = "UPDATE store_operations SET done = 1, result = $3, end_nanos = $4 \
     WHERE name = $1 AND node = $2 AND done = 0";
pub(crate) const CANCEL_OPERATION: &str =
    "UPDATE store_operations SET cancel_requested = 1 WHERE name = $1 AND done = 0";
/// Running operations of nodes other than `$1` with no heartbeat since `$2`: taken over by `$1`.
pub(crate) const CLAIM_OPERATIONS: &str = concat!(
    "UPDATE store_operations SET node = $1 WHERE done = 0 AND node <> $1 \
     AND node NOT IN (SELECT node FROM store_nodes WHERE heartbeat_nanos >= $2) RETURNING ",
    operation_columns!()
);
pub(crate) const PRUNE_OPERATIONS: &str = "DELETE FROM store_operations WHERE done = 1 AND end_nanos < $1";

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for every audit read shape: an index search, never a scan of the log, and
    /// no sort except for the prefix's longer names and the resource index's unindexed tail.
    /// (PostgreSQL plans from its statistics; `bench/audit_scale.py` measures SQLite's.)
    #[test]
    fn every_audit_read_is_an_index_range() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(&ddl(Dialect::Sqlite, true)).unwrap();
        for shape in AuditRead::all() {
            assert!(!shape.statement(Dialect::Sqlite, false).contains("INDEXED BY"));
            let sql = shape.statement(Dialect::Sqlite, true);
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params = stmt.parameter_count();
            let values: Vec<rusqlite::types::Value> = (0..params).map(|_| rusqlite::types::Value::Integer(1)).collect();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join(" | ");
            let sorts = plan.contains("TEMP B-TREE");
            if matches!(shape.resource, ResourceMatch::Exact | ResourceMatch::Below) {
                // The index's range in order, each entry looked up in the log by its seq.
                assert!(plan.starts_with("SEARCH r USING PRIMARY KEY (kind=? AND resource"), "{shape:?}: {plan}");
                assert!(
                    plan.contains("SEARCH l USING INDEX sqlite_autoindex_audit_log_1 (seq=?)"),
                    "{shape:?}: {plan}"
                );
                assert_eq!(sorts, shape.resource == ResourceMatch::Below, "{shape:?}: {plan}");
            } else {
                assert!(
                    plan.contains(&format!("SEARCH audit_log USING INDEX {} (", shape.index())),
                    "{shape:?}: {plan}"
                );
                let tail = shape.resource == ResourceMatch::Tail;
                assert_eq!(sorts, shape.resource == ResourceMatch::Below || tail, "{shape:?}: {plan}");
                if tail {
                    assert!(plan.contains("(seq>?)"), "{shape:?}: {plan}");
                }
            }
            assert!(!plan.contains("SCAN"), "{shape:?}: {plan}");
            if shape.resource == ResourceMatch::Within {
                assert!(!plan.contains("audit_tail") && !plan.contains("audit_resources"), "{shape:?}: {plan}");
            }
        }
    }
}
