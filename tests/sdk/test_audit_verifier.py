"""The auditor's verifier of docs/audit.md, run as it is printed there, against keyledger on
both databases: it accepts history that grew after a saved checkpoint, and exits 1 once an
insider has rewritten an old event and had keyledger recompute the trail from it."""

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, TARGET, Keyledger, http

VERIFIER = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "audit.md").read_text(), re.S).group(1)


def run_verifier(server, token, saved, workdir):
    script = workdir / "verify.py"
    script.write_text(VERIFIER)
    return subprocess.run([sys.executable, str(script), server.base, token, "acme", str(saved)],
                          capture_output=True, text=True, timeout=60)


def restart(server):
    """The same keyledger (database, keys, port) started again."""
    server.process = subprocess.Popen([str(TARGET / "keyledger"), "serve"], env=server.env,
                                      stdout=server.log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            if http("GET", f"{server.base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("keyledger did not start again")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_documented_verifier_accepts_growth_and_catches_a_rewrite(backend, fake):
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        server = Keyledger(backend, fake, workdir)
        try:
            admin = server.token("*", "platform_admin", "billing")
            auditor = server.token("acme", "auditor", "carol")
            for plan in ["pro", "business", "pro"]:
                assert http("PUT", f"{server.base}/v1/orgs/acme/plan", admin, {"plan": plan})[0] == 200
            status, checkpoint = http("GET", f"{server.base}/v1/orgs/acme/audit/checkpoint", auditor)
            assert status == 200, checkpoint
            saved = workdir / "saved.json"
            saved.write_text(json.dumps(checkpoint))
            for plan in ["business", "pro"]:
                http("PUT", f"{server.base}/v1/orgs/acme/plan", admin, {"plan": plan})

            grown = run_verifier(server, auditor, saved, workdir)
            assert grown.returncode == 0, grown.stdout + grown.stderr
            assert "entries 1..3 unchanged in the tree of 5" in grown.stdout

            # The insider: the second plan change rewritten in the log, the trail recomputed.
            server.process.terminate()
            server.process.wait(timeout=20)
            database_url = server.env["DATABASE_URL"]
            if backend == "sqlite":
                with sqlite3.connect(database_url.removeprefix("sqlite://")) as db:
                    db.execute("update events set payload = replace(payload, '\"business\"', '\"enterprise\"') "
                               "where aggregate_id = 'acme' and sequence = 2")
            else:
                subprocess.run(["psql", database_url, "-qc",
                                "update events set payload = replace(payload::text, '\"business\"', "
                                "'\"enterprise\"')::json where aggregate_id = 'acme' and sequence = 2"],
                               check=True)
            subprocess.run([str(TARGET / "keyledger"), "projections", "rebuild", "audit"], env=server.env,
                           check=True, capture_output=True)
            restart(server)
            status, entries = http("GET", f"{server.base}/v1/orgs/acme/audit", auditor)
            assert "enterprise" in entries["entries"][1]["summary"], entries

            caught = run_verifier(server, auditor, saved, workdir)
            assert caught.returncode == 1, caught.stdout + caught.stderr
            assert "NOT consistent" in caught.stdout
        finally:
            server.stop()
