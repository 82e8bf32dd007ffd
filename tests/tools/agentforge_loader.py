"""Load a data directory with AgentForge's own loaders and models; verify a password its way.

Run it with the Python of a virtualenv that has AgentForge's requirements installed (not ours):

    /tmp/af-venv/bin/python tests/tools/agentforge_loader.py AGENTFORGE_CHECKOUT DATA_DIR \
        [--email E --password P]...

It copies DATA_DIR to a scratch directory (AgentForge writes into its data directory while it
starts), imports the checkout's ``core.security`` (its ``SecurityState`` loads ``security/``) and
``api.main`` (its ``AppState`` loads the app files), then compares each file with what the loaders
kept. Every record a loader dropped is reported with the error its Pydantic model raises. Each
``--email/--password`` pair is checked with AgentForge's ``PasswordService.verify_password``.

Prints one JSON report on stdout; the exit status is 1 when a record was skipped or a password
did not verify, 0 otherwise.
"""

import argparse
import contextlib
import copy
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from agentforge_env import FILES, point_agentforge_at

# Files a loader keeps in a dict named after the file; audit logs (a list) are counted apart.
DICT_FILES = {
    path: model
    for path, model in FILES.items()
    if "#" not in path and path not in ("security/audit_logs.json", "settings.json")
}


def load_quietly(checkout, data_dir):
    """Import AgentForge against ``data_dir``; returns (security module, app module, captured output)."""
    point_agentforge_at(checkout, data_dir)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        import api.main as app
        import core.security as security

        app.app_state.load_from_disk()  # the app calls it in its startup hook, not on import
    return security, app, output.getvalue()


def rejection(model, record):
    """The error AgentForge's model raises for ``record``, or None when it loads."""
    try:
        model(**copy.deepcopy(record))
    except Exception as error:  # the loaders catch everything, so do we
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return f"{type(error).__name__}: " + "; ".join(lines[:3])
    return None


def compare(path, model, loaded):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    skipped = {}
    for key, record in records.items():
        if key not in loaded:
            skipped[key] = rejection(model, record) or "dropped by the loader"
    return {"in_file": len(records), "loaded": len([k for k in records if k in loaded]), "skipped": skipped}


def report(checkout, data_dir, logins):
    scratch = tempfile.mkdtemp(prefix="agentforge-loader-")
    copy_dir = os.path.join(scratch, "data")
    shutil.copytree(data_dir, copy_dir)
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        security, app, _ = load_quietly(os.path.abspath(checkout), copy_dir)
        state = security.security_state
        collections = {}
        for path, (module, model) in DICT_FILES.items():
            owner = state if module == "core.security" else app.app_state
            models = security if module == "core.security" else app
            result = compare(os.path.join(copy_dir, path), getattr(models, model), getattr(owner, Path(path).stem))
            if result is not None:
                collections[path] = result
        audit_path = os.path.join(copy_dir, "security", "audit_logs.json")
        if os.path.exists(audit_path):
            with open(audit_path, encoding="utf-8") as handle:
                in_file = len(json.load(handle))
            collections["security/audit_logs.json"] = {
                "in_file": in_file,
                "loaded": len(state.audit_logs),
                "skipped": {} if len(state.audit_logs) == in_file else {"count": in_file - len(state.audit_logs)},
            }
        passwords = {}
        for email, password in logins:
            user = next((u for u in state.users.values() if u.email.lower() == email.lower()), None)
            passwords[email] = bool(
                user and user.password_hash and security.PasswordService.verify_password(password, user.password_hash)
            )
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    return {"collections": collections, "passwords": passwords}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout")
    parser.add_argument("data_dir")
    parser.add_argument("--email", action="append", default=[])
    parser.add_argument("--password", action="append", default=[])
    args = parser.parse_args(argv)
    if len(args.email) != len(args.password):
        parser.error("give one --password per --email")
    result = report(args.checkout, os.path.abspath(args.data_dir), list(zip(args.email, args.password)))
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    failed = any(c["skipped"] for c in result["collections"].values()) or not all(result["passwords"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
