#!/usr/bin/env python3
"""Checks the crate layering of docs/architecture.md against Cargo's view of the workspace.

Each rule names what a crate may depend on among the workspace's crates (normal and build
dependencies; dev-dependencies are free, tests may wire anything). Run by scripts/test.sh's
lint section; exits non-zero and names every edge that breaks a rule.
"""
import json
import subprocess
import sys

# crate -> the workspace crates it may depend on (None: anything; it is at the top).
ALLOWED = {
    "keyhold-crypto": set(),
    "keyhold-api": {"keyhold-crypto"},
    "keyhold-hsm": {"keyhold-crypto"},
    "keyhold-tls": set(),
    "keyhold-iam": {"keyhold-api"},
    "keyhold-audit": {"keyhold-api", "keyhold-crypto"},
    "keyhold-cmek": {"keyhold-api", "keyhold-crypto", "keyhold-tls"},
    "keyhold-kms": {"keyhold-api", "keyhold-crypto", "keyhold-iam", "keyhold-audit"},
    "keyhold-store": {"keyhold-api", "keyhold-crypto", "keyhold-iam", "keyhold-audit", "keyhold-cmek", "keyhold-tls"},
    "keyhold-ekm": {"keyhold-api", "keyhold-crypto", "keyhold-kms", "keyhold-tls"},
    "keyhold-sql": {"keyhold-api", "keyhold-crypto", "keyhold-audit", "keyhold-cmek", "keyhold-kms", "keyhold-store", "keyhold-tls"},
    "keyhold-proto": {"keyhold-api", "keyhold-crypto"},
    "keyhold-grpc": {"keyhold-api", "keyhold-kms", "keyhold-proto", "keyhold-server"},
    "keyhold-server": {"keyhold-api", "keyhold-crypto", "keyhold-audit", "keyhold-cmek", "keyhold-kms", "keyhold-proto", "keyhold-store", "keyhold-tls"},
    "keyhold": None,
    "keyhold-fuzz": None,
}


def main() -> int:
    meta = json.loads(
        subprocess.check_output(["cargo", "metadata", "--no-deps", "--format-version", "1"], text=True)
    )
    members = {p["name"] for p in meta["packages"]}
    broken = []
    for p in meta["packages"]:
        name = p["name"]
        if name not in ALLOWED:
            broken.append(f"{name}: not in scripts/check-layers.py; give it a place in the layers")
            continue
        allowed = ALLOWED[name]
        for d in p["dependencies"]:
            if d["name"] not in members or d["name"] == name or d["kind"] == "dev":
                continue
            if allowed is not None and d["name"] not in allowed:
                broken.append(f"{name} -> {d['name']}: not allowed (docs/architecture.md)")
    for line in broken:
        print(line)
    if not broken:
        print(f"crate layers ok ({len(members)} crates)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
