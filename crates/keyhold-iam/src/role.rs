//! Permissions and predefined roles, spelled as Google spells them.
//!
//! The tables follow Google's IAM roles reference for Cloud KMS, Resource Manager, Cloud
//! Logging and Service Usage, restricted to the permissions Keyhold checks. Keyhold adds one
//! role of its own, `roles/keyhold.tokenAdmin`, for the server-wide bearer-token admin API
//! (Google has no equivalent: its tokens come from Google accounts).

/// One permission, e.g. `cloudkms.cryptoKeyVersions.useToEncrypt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(&'static str);

impl Permission {
    /// The permission's name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// A known permission by name; `None` for anything Keyhold does not know.
    pub fn parse(name: &str) -> Option<Permission> {
        ALL_PERMISSIONS.iter().copied().find(|p| p.0 == name)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

macro_rules! permissions {
    ($($konst:ident = $name:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`")]
            pub const $konst: Permission = Permission($name);
        )*
        /// Every permission Keyhold knows.
        pub const ALL_PERMISSIONS: &[Permission] = &[$($konst),*];
    };
}

permissions! {
    LOCATIONS_GET = "cloudkms.locations.get";
    LOCATIONS_LIST = "cloudkms.locations.list";
    LOCATIONS_GENERATE_RANDOM_BYTES = "cloudkms.locations.generateRandomBytes";
    KEY_RINGS_CREATE = "cloudkms.keyRings.create";
    KEY_RINGS_GET = "cloudkms.keyRings.get";
    KEY_RINGS_LIST = "cloudkms.keyRings.list";
    KEY_RINGS_GET_IAM_POLICY = "cloudkms.keyRings.getIamPolicy";
    KEY_RINGS_SET_IAM_POLICY = "cloudkms.keyRings.setIamPolicy";
    CRYPTO_KEYS_CREATE = "cloudkms.cryptoKeys.create";
    CRYPTO_KEYS_GET = "cloudkms.cryptoKeys.get";
    CRYPTO_KEYS_LIST = "cloudkms.cryptoKeys.list";
    CRYPTO_KEYS_UPDATE = "cloudkms.cryptoKeys.update";
    CRYPTO_KEYS_GET_IAM_POLICY = "cloudkms.cryptoKeys.getIamPolicy";
    CRYPTO_KEYS_SET_IAM_POLICY = "cloudkms.cryptoKeys.setIamPolicy";
    VERSIONS_CREATE = "cloudkms.cryptoKeyVersions.create";
    VERSIONS_GET = "cloudkms.cryptoKeyVersions.get";
    VERSIONS_LIST = "cloudkms.cryptoKeyVersions.list";
    VERSIONS_UPDATE = "cloudkms.cryptoKeyVersions.update";
    VERSIONS_DESTROY = "cloudkms.cryptoKeyVersions.destroy";
    VERSIONS_RESTORE = "cloudkms.cryptoKeyVersions.restore";
    VERSIONS_USE_TO_ENCRYPT = "cloudkms.cryptoKeyVersions.useToEncrypt";
    VERSIONS_USE_TO_DECRYPT = "cloudkms.cryptoKeyVersions.useToDecrypt";
    VERSIONS_VIEW_PUBLIC_KEY = "cloudkms.cryptoKeyVersions.viewPublicKey";
    VERSIONS_USE_TO_SIGN = "cloudkms.cryptoKeyVersions.useToSign";
    VERSIONS_USE_TO_VERIFY = "cloudkms.cryptoKeyVersions.useToVerify";
    VERSIONS_USE_TO_DECAPSULATE = "cloudkms.cryptoKeyVersions.useToDecapsulate";
    VERSIONS_MANAGE_RAW_AES_CBC_KEYS = "cloudkms.cryptoKeyVersions.manageRawAesCbcKeys";
    VERSIONS_MANAGE_RAW_AES_CTR_KEYS = "cloudkms.cryptoKeyVersions.manageRawAesCtrKeys";
    VERSIONS_MANAGE_RAW_PKCS1_KEYS = "cloudkms.cryptoKeyVersions.manageRawPKCS1Keys";
    CRYPTO_KEYS_DELETE = "cloudkms.cryptoKeys.delete";
    VERSIONS_DELETE = "cloudkms.cryptoKeyVersions.delete";
    RETIRED_RESOURCES_GET = "cloudkms.retiredResources.get";
    RETIRED_RESOURCES_LIST = "cloudkms.retiredResources.list";
    KMS_OPERATIONS_GET = "cloudkms.operations.get";
    IMPORT_JOBS_CREATE = "cloudkms.importJobs.create";
    IMPORT_JOBS_GET = "cloudkms.importJobs.get";
    IMPORT_JOBS_LIST = "cloudkms.importJobs.list";
    IMPORT_JOBS_USE_TO_IMPORT = "cloudkms.importJobs.useToImport";
    IMPORT_JOBS_GET_IAM_POLICY = "cloudkms.importJobs.getIamPolicy";
    IMPORT_JOBS_SET_IAM_POLICY = "cloudkms.importJobs.setIamPolicy";
    PROJECTS_GET = "resourcemanager.projects.get";
    PROJECTS_GET_IAM_POLICY = "resourcemanager.projects.getIamPolicy";
    PROJECTS_SET_IAM_POLICY = "resourcemanager.projects.setIamPolicy";
    ORGANIZATIONS_GET_IAM_POLICY = "resourcemanager.organizations.getIamPolicy";
    ORGANIZATIONS_SET_IAM_POLICY = "resourcemanager.organizations.setIamPolicy";
    LOG_ENTRIES_LIST = "logging.logEntries.list";
    PRIVATE_LOG_ENTRIES_LIST = "logging.privateLogEntries.list";
    SERVICE_ACCOUNTS_GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken";
    TOKENS_CREATE = "keyhold.tokens.create";
    TOKENS_LIST = "keyhold.tokens.list";
    TOKENS_REVOKE = "keyhold.tokens.revoke";
    INSTANCES_CREATE = "keyhold.instances.create";
    INSTANCES_GET = "keyhold.instances.get";
    INSTANCES_LIST = "keyhold.instances.list";
    INSTANCES_UPDATE = "keyhold.instances.update";
    INSTANCES_DELETE = "keyhold.instances.delete";
    OBJECTS_CREATE = "keyhold.objects.create";
    OBJECTS_GET = "keyhold.objects.get";
    OBJECTS_LIST = "keyhold.objects.list";
    OBJECTS_DELETE = "keyhold.objects.delete";
    INSTANCES_CLONE = "keyhold.instances.clone";
    INSTANCES_EXPORT = "keyhold.instances.export";
    INSTANCES_IMPORT = "keyhold.instances.import";
    BACKUPS_CREATE = "keyhold.backups.create";
    BACKUPS_GET = "keyhold.backups.get";
    BACKUPS_LIST = "keyhold.backups.list";
    BACKUPS_DELETE = "keyhold.backups.delete";
    BACKUPS_RESTORE = "keyhold.backups.restore";
    OPERATIONS_GET = "keyhold.operations.get";
    OPERATIONS_LIST = "keyhold.operations.list";
    OPERATIONS_CANCEL = "keyhold.operations.cancel";
    ORG_POLICY_GET = "orgpolicy.policy.get";
    ORG_POLICIES_LIST = "orgpolicy.policies.list";
    ORG_POLICIES_CREATE = "orgpolicy.policies.create";
    ORG_POLICIES_UPDATE = "orgpolicy.policies.update";
    ORG_POLICIES_DELETE = "orgpolicy.policies.delete";
}

/// A predefined role.
#[derive(Debug)]
pub struct Role {
    /// `roles/...`.
    pub name: &'static str,
    /// What the role is for, as Google's reference titles it.
    pub title: &'static str,
    /// The permissions it grants.
    pub permissions: &'static [Permission],
}

impl Role {
    /// Whether the role grants `p`.
    pub fn grants(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// A predefined role by name.
pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

/// Everything on the store's instances and objects.
const STORE_ALL: &[Permission] = &[
    INSTANCES_CREATE,
    INSTANCES_GET,
    INSTANCES_LIST,
    INSTANCES_UPDATE,
    INSTANCES_DELETE,
    OBJECTS_CREATE,
    OBJECTS_GET,
    OBJECTS_LIST,
    OBJECTS_DELETE,
    INSTANCES_CLONE,
    INSTANCES_EXPORT,
    INSTANCES_IMPORT,
    BACKUPS_CREATE,
    BACKUPS_GET,
    BACKUPS_LIST,
    BACKUPS_DELETE,
    BACKUPS_RESTORE,
    OPERATIONS_GET,
    OPERATIONS_LIST,
    OPERATIONS_CANCEL,
    PROJECTS_GET,
];

const KMS_READ: &[Permission] = &[
    LOCATIONS_GET,
    LOCATIONS_LIST,
    KEY_RINGS_GET,
    KEY_RINGS_LIST,
    CRYPTO_KEYS_GET,
    CRYPTO_KEYS_LIST,
    VERSIONS_GET,
    VERSIONS_LIST,
    IMPORT_JOBS_GET,
    IMPORT_JOBS_LIST,
    RETIRED_RESOURCES_GET,
    RETIRED_RESOURCES_LIST,
    KMS_OPERATIONS_GET,
    PROJECTS_GET,
];

/// Every predefined role Keyhold knows.
pub static ROLES: &[Role] = &[
    Role {
        name: "roles/owner",
        title: "Owner",
        permissions: &[
            LOCATIONS_GET,
            LOCATIONS_GENERATE_RANDOM_BYTES,
            LOCATIONS_LIST,
            KEY_RINGS_CREATE,
            KEY_RINGS_GET,
            KEY_RINGS_LIST,
            KEY_RINGS_GET_IAM_POLICY,
            KEY_RINGS_SET_IAM_POLICY,
            CRYPTO_KEYS_CREATE,
            CRYPTO_KEYS_GET,
            CRYPTO_KEYS_LIST,
            CRYPTO_KEYS_UPDATE,
            CRYPTO_KEYS_GET_IAM_POLICY,
            CRYPTO_KEYS_SET_IAM_POLICY,
            VERSIONS_CREATE,
            VERSIONS_GET,
            VERSIONS_LIST,
            VERSIONS_UPDATE,
            VERSIONS_DESTROY,
            VERSIONS_RESTORE,
            VERSIONS_USE_TO_ENCRYPT,
            VERSIONS_USE_TO_DECRYPT,
            VERSIONS_VIEW_PUBLIC_KEY,
            VERSIONS_USE_TO_SIGN,
            VERSIONS_USE_TO_VERIFY,
            VERSIONS_MANAGE_RAW_AES_CBC_KEYS,
            VERSIONS_MANAGE_RAW_AES_CTR_KEYS,
            VERSIONS_MANAGE_RAW_PKCS1_KEYS,
            VERSIONS_USE_TO_DECAPSULATE,
            IMPORT_JOBS_CREATE,
            IMPORT_JOBS_GET,
            IMPORT_JOBS_LIST,
            IMPORT_JOBS_USE_TO_IMPORT,
            IMPORT_JOBS_GET_IAM_POLICY,
            IMPORT_JOBS_SET_IAM_POLICY,
            CRYPTO_KEYS_DELETE,
            VERSIONS_DELETE,
            RETIRED_RESOURCES_GET,
            RETIRED_RESOURCES_LIST,
            KMS_OPERATIONS_GET,
            PROJECTS_GET,
            PROJECTS_GET_IAM_POLICY,
            PROJECTS_SET_IAM_POLICY,
            ORGANIZATIONS_GET_IAM_POLICY,
            ORGANIZATIONS_SET_IAM_POLICY,
            LOG_ENTRIES_LIST,
            PRIVATE_LOG_ENTRIES_LIST,
            INSTANCES_CREATE,
            INSTANCES_GET,
            INSTANCES_LIST,
            INSTANCES_UPDATE,
            INSTANCES_DELETE,
            OBJECTS_CREATE,
            OBJECTS_GET,
            OBJECTS_LIST,
            OBJECTS_DELETE,
            INSTANCES_CLONE,
            INSTANCES_EXPORT,
            INSTANCES_IMPORT,
            BACKUPS_CREATE,
            BACKUPS_GET,
            BACKUPS_LIST,
            BACKUPS_DELETE,
            BACKUPS_RESTORE,
            OPERATIONS_GET,
            OPERATIONS_LIST,
            OPERATIONS_CANCEL,
            ORG_POLICY_GET,
            ORG_POLICIES_LIST,
        ],
    },
    Role {
        name: "roles/editor",
        title: "Editor",
        permissions: &[
            LOCATIONS_GET,
            LOCATIONS_GENERATE_RANDOM_BYTES,
            LOCATIONS_LIST,
            KEY_RINGS_CREATE,
            KEY_RINGS_GET,
            KEY_RINGS_LIST,
            KEY_RINGS_GET_IAM_POLICY,
            CRYPTO_KEYS_CREATE,
            CRYPTO_KEYS_GET,
            CRYPTO_KEYS_LIST,
            CRYPTO_KEYS_UPDATE,
            CRYPTO_KEYS_GET_IAM_POLICY,
            VERSIONS_CREATE,
            VERSIONS_GET,
            VERSIONS_LIST,
            VERSIONS_UPDATE,
            VERSIONS_VIEW_PUBLIC_KEY,
            IMPORT_JOBS_CREATE,
            IMPORT_JOBS_GET,
            IMPORT_JOBS_LIST,
            IMPORT_JOBS_USE_TO_IMPORT,
            IMPORT_JOBS_GET_IAM_POLICY,
            CRYPTO_KEYS_DELETE,
            VERSIONS_DELETE,
            RETIRED_RESOURCES_GET,
            RETIRED_RESOURCES_LIST,
            KMS_OPERATIONS_GET,
            PROJECTS_GET,
            PROJECTS_GET_IAM_POLICY,
            LOG_ENTRIES_LIST,
            INSTANCES_CREATE,
            INSTANCES_GET,
            INSTANCES_LIST,
            INSTANCES_UPDATE,
            INSTANCES_DELETE,
            OBJECTS_CREATE,
            OBJECTS_GET,
            OBJECTS_LIST,
            OBJECTS_DELETE,
            INSTANCES_CLONE,
            INSTANCES_EXPORT,
            INSTANCES_IMPORT,
            BACKUPS_CREATE,
            BACKUPS_GET,
            BACKUPS_LIST,
            BACKUPS_DELETE,
            BACKUPS_RESTORE,
            OPERATIONS_GET,
            OPERATIONS_LIST,
            OPERATIONS_CANCEL,
            ORG_POLICY_GET,
            ORG_POLICIES_LIST,
        ],
    },
    Role {
        name: "roles/viewer",
        title: "Viewer",
        permissions: &[
            LOCATIONS_GET,
            LOCATIONS_LIST,
            KEY_RINGS_GET,
            KEY_RINGS_LIST,
            KEY_RINGS_GET_IAM_POLICY,
            CRYPTO_KEYS_GET,
            CRYPTO_KEYS_LIST,
            CRYPTO_KEYS_GET_IAM_POLICY,
            VERSIONS_GET,
            VERSIONS_LIST,
            VERSIONS_VIEW_PUBLIC_KEY,
            IMPORT_JOBS_GET,
            IMPORT_JOBS_LIST,
            IMPORT_JOBS_GET_IAM_POLICY,
            RETIRED_RESOURCES_GET,
            RETIRED_RESOURCES_LIST,
            KMS_OPERATIONS_GET,
            PROJECTS_GET,
            PROJECTS_GET_IAM_POLICY,
            LOG_ENTRIES_LIST,
            INSTANCES_GET,
            INSTANCES_LIST,
            OBJECTS_GET,
            OBJECTS_LIST,
            BACKUPS_GET,
            BACKUPS_LIST,
            OPERATIONS_GET,
            OPERATIONS_LIST,
            ORG_POLICY_GET,
            ORG_POLICIES_LIST,
        ],
    },
    Role {
        name: "roles/cloudkms.admin",
        title: "Cloud KMS Admin",
        permissions: &[
            LOCATIONS_GET,
            LOCATIONS_GENERATE_RANDOM_BYTES,
            LOCATIONS_LIST,
            KEY_RINGS_CREATE,
            KEY_RINGS_GET,
            KEY_RINGS_LIST,
            KEY_RINGS_GET_IAM_POLICY,
            KEY_RINGS_SET_IAM_POLICY,
            CRYPTO_KEYS_CREATE,
            CRYPTO_KEYS_GET,
            CRYPTO_KEYS_LIST,
            CRYPTO_KEYS_UPDATE,
            CRYPTO_KEYS_GET_IAM_POLICY,
            CRYPTO_KEYS_SET_IAM_POLICY,
            VERSIONS_CREATE,
            VERSIONS_GET,
            VERSIONS_LIST,
            VERSIONS_UPDATE,
            VERSIONS_DESTROY,
            VERSIONS_RESTORE,
            IMPORT_JOBS_CREATE,
            IMPORT_JOBS_GET,
            IMPORT_JOBS_LIST,
            IMPORT_JOBS_USE_TO_IMPORT,
            IMPORT_JOBS_GET_IAM_POLICY,
            IMPORT_JOBS_SET_IAM_POLICY,
            CRYPTO_KEYS_DELETE,
            VERSIONS_DELETE,
            RETIRED_RESOURCES_GET,
            RETIRED_RESOURCES_LIST,
            KMS_OPERATIONS_GET,
            PROJECTS_GET,
        ],
    },
    Role { name: "roles/cloudkms.viewer", title: "Cloud KMS Viewer", permissions: KMS_READ },
    Role {
        name: "roles/cloudkms.importer",
        title: "Cloud KMS Importer",
        permissions: &[
            IMPORT_JOBS_CREATE,
            IMPORT_JOBS_GET,
            IMPORT_JOBS_LIST,
            IMPORT_JOBS_USE_TO_IMPORT,
            LOCATIONS_GET,
            LOCATIONS_LIST,
            PROJECTS_GET,
        ],
    },
    Role {
        name: "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        title: "Cloud KMS CryptoKey Encrypter/Decrypter",
        permissions: &[VERSIONS_USE_TO_ENCRYPT, VERSIONS_USE_TO_DECRYPT, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.cryptoKeyEncrypter",
        title: "Cloud KMS CryptoKey Encrypter",
        permissions: &[VERSIONS_USE_TO_ENCRYPT, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.cryptoKeyDecrypter",
        title: "Cloud KMS CryptoKey Decrypter",
        permissions: &[VERSIONS_USE_TO_DECRYPT, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.cryptoOperator",
        title: "Cloud KMS Crypto Operator",
        permissions: &[
            VERSIONS_USE_TO_ENCRYPT,
            VERSIONS_USE_TO_DECRYPT,
            VERSIONS_USE_TO_SIGN,
            VERSIONS_USE_TO_VERIFY,
            VERSIONS_USE_TO_DECAPSULATE,
            VERSIONS_VIEW_PUBLIC_KEY,
            LOCATIONS_GET,
            LOCATIONS_GENERATE_RANDOM_BYTES,
            LOCATIONS_LIST,
            PROJECTS_GET,
        ],
    },
    Role {
        name: "roles/cloudkms.signer",
        title: "Cloud KMS CryptoKey Signer",
        permissions: &[VERSIONS_USE_TO_SIGN, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.signerVerifier",
        title: "Cloud KMS CryptoKey Signer/Verifier",
        permissions: &[
            VERSIONS_USE_TO_SIGN,
            VERSIONS_USE_TO_VERIFY,
            VERSIONS_VIEW_PUBLIC_KEY,
            LOCATIONS_GET,
            LOCATIONS_LIST,
            PROJECTS_GET,
        ],
    },
    Role {
        name: "roles/cloudkms.verifier",
        title: "Cloud KMS CryptoKey Verifier",
        permissions: &[VERSIONS_USE_TO_VERIFY, VERSIONS_VIEW_PUBLIC_KEY, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.decapsulator",
        title: "Cloud KMS CryptoKey Decapsulator",
        permissions: &[
            VERSIONS_USE_TO_DECAPSULATE,
            VERSIONS_VIEW_PUBLIC_KEY,
            LOCATIONS_GET,
            LOCATIONS_LIST,
            PROJECTS_GET,
        ],
    },
    Role {
        name: "roles/cloudkms.expertRawAesCbc",
        title: "Cloud KMS Expert Raw AES-CBC Key Manager",
        permissions: &[VERSIONS_MANAGE_RAW_AES_CBC_KEYS, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.expertRawAesCtr",
        title: "Cloud KMS Expert Raw AES-CTR Key Manager",
        permissions: &[VERSIONS_MANAGE_RAW_AES_CTR_KEYS, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.expertRawPKCS1",
        title: "Cloud KMS Expert Raw PKCS#1 Key Manager",
        permissions: &[VERSIONS_MANAGE_RAW_PKCS1_KEYS, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/cloudkms.publicKeyViewer",
        title: "Cloud KMS CryptoKey Public Key Viewer",
        permissions: &[VERSIONS_VIEW_PUBLIC_KEY, LOCATIONS_GET, LOCATIONS_LIST, PROJECTS_GET],
    },
    Role { name: "roles/logging.viewer", title: "Logs Viewer", permissions: &[LOG_ENTRIES_LIST] },
    Role {
        name: "roles/logging.privateLogViewer",
        title: "Private Logs Viewer",
        permissions: &[LOG_ENTRIES_LIST, PRIVATE_LOG_ENTRIES_LIST],
    },
    Role { name: "roles/serviceusage.serviceUsageAdmin", title: "Service Usage Admin", permissions: &[PROJECTS_GET] },
    Role {
        name: "roles/keyhold.tokenAdmin",
        title: "Keyhold Token Admin (server-wide; only meaningful on organizations/keyhold)",
        permissions: &[TOKENS_CREATE, TOKENS_LIST, TOKENS_REVOKE],
    },
    Role { name: "roles/keyhold.storeAdmin", title: "Keyhold Store Admin", permissions: STORE_ALL },
    Role {
        name: "roles/keyhold.objectAdmin",
        title: "Keyhold Store Object Admin",
        permissions: &[
            OBJECTS_CREATE,
            OBJECTS_GET,
            OBJECTS_LIST,
            OBJECTS_DELETE,
            INSTANCES_GET,
            INSTANCES_LIST,
            PROJECTS_GET,
        ],
    },
    Role {
        name: "roles/keyhold.objectViewer",
        title: "Keyhold Store Object Viewer",
        permissions: &[OBJECTS_GET, OBJECTS_LIST, INSTANCES_GET, INSTANCES_LIST, PROJECTS_GET],
    },
    Role {
        name: "roles/orgpolicy.policyAdmin",
        title: "Organization Policy Administrator",
        permissions: &[
            ORG_POLICY_GET,
            ORG_POLICIES_LIST,
            ORG_POLICIES_CREATE,
            ORG_POLICIES_UPDATE,
            ORG_POLICIES_DELETE,
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_permission_is_known_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for r in ROLES {
            assert!(names.insert(r.name), "duplicate role {}", r.name);
            assert!(r.name.starts_with("roles/"));
            for p in r.permissions {
                assert_eq!(Permission::parse(p.as_str()), Some(*p));
            }
        }
    }

    #[test]
    fn separation_of_duties() {
        // Cloud KMS Admin manages keys but cannot use them (Google's separation of duties).
        let admin = role("roles/cloudkms.admin").unwrap();
        assert!(admin.grants(CRYPTO_KEYS_SET_IAM_POLICY));
        assert!(!admin.grants(VERSIONS_USE_TO_ENCRYPT));
        let ed = role("roles/cloudkms.cryptoKeyEncrypterDecrypter").unwrap();
        assert!(ed.grants(VERSIONS_USE_TO_DECRYPT) && !ed.grants(CRYPTO_KEYS_GET));
        assert!(!role("roles/cloudkms.cryptoKeyEncrypter").unwrap().grants(VERSIONS_USE_TO_DECRYPT));
        // Basic roles as Google defines them: owner may use keys, editor may not.
        assert!(role("roles/owner").unwrap().grants(VERSIONS_USE_TO_ENCRYPT));
        assert!(!role("roles/editor").unwrap().grants(VERSIONS_USE_TO_ENCRYPT));
        assert!(!role("roles/editor").unwrap().grants(VERSIONS_DESTROY));
        assert!(!role("roles/cloudkms.viewer").unwrap().grants(CRYPTO_KEYS_GET_IAM_POLICY));
        assert!(role("roles/viewer").unwrap().grants(CRYPTO_KEYS_GET_IAM_POLICY));
        assert!(role("roles/nope").is_none());
        // Token administration is never part of a project role.
        for r in ROLES.iter().filter(|r| r.name != "roles/keyhold.tokenAdmin") {
            assert!(!r.grants(TOKENS_CREATE), "{}", r.name);
        }
    }
}
