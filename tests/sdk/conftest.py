"""keyledger and the fake providers as real processes, for the official SDKs to talk to.

Each backend (SQLite, PostgreSQL) gets its own keyledger process on a fresh database; the fake
providers run once. Keys are canaries made here; the fake accepts them over its admin API.
"""

import base64
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PROVIDERS = ["anthropic", "openai", "google", "mistral", "groq", "azure_openai",
             "aleph_alpha", "ollama", "lmstudio", "vllm"]


def http(method, url, token=None, body=None):
    """A plain HTTP call: (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fake:
    """The fake providers, steered over their admin API."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def url(self, provider):
        return f"{self.base}/{provider}"

    def accept(self, key):
        http("POST", f"{self.base}/__admin/accept", body={"key": key})

    def calls(self):
        return http("GET", f"{self.base}/__admin/calls")[1]

    def model_calls(self):
        return [c for c in self.calls() if c["method"] != "GET"]


@pytest.fixture(scope="session")
def fake():
    process = subprocess.Popen([str(TARGET / "fake-providers")], stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    yield Fake(port)
    process.kill()
    process.wait()


class Keyledger:
    """One keyledger process, its log, and what it takes to call it."""

    def __init__(self, backend, fake, workdir):
        self.backend = backend
        self.fake = fake
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "keyledger.log"
        if backend == "postgres":
            self.database = f"keyledger_sdk_{uuid.uuid4().hex[:12]}"
            subprocess.run(["psql", DATABASE_URL, "-qc", f"create database {self.database}"], check=True)
            database_url = DATABASE_URL.rsplit("/", 1)[0] + "/" + self.database
        else:
            self.database = None
            database_url = f"sqlite://{workdir / 'keyledger.db'}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KEYLEDGER_LISTEN": f"127.0.0.1:{self.port}",
            "KEYLEDGER_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "KEYLEDGER_JWT_SECRET": secrets.token_hex(32),
            "KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS": "true",
            "KEYLEDGER_STREAM_IDLE_TIMEOUT": "2s",
            "RUST_LOG": "debug",
        }
        for provider in PROVIDERS:
            self.env[f"KEYLEDGER_PROVIDER_{provider.upper()}_BASE_URL"] = fake.url(provider)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([str(TARGET / "keyledger"), "serve"], env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        for _ in range(300):
            try:
                if http("GET", f"{self.base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"keyledger did not start: {self.log_path.read_text()}")
        self.keys = {}

    def token(self, org, role, sub="sdk"):
        result = subprocess.run([str(TARGET / "keyledger"), "token", "--org", org, "--role", role,
                                 "--sub", sub], env=self.env, capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def org_with_keys(self, org, order):
        """`org` on pro with accepted keys for openai, anthropic and groq, in `order`."""
        admin = self.token("*", "platform_admin", "billing")
        owner = self.token(org, "owner", "alice")
        assert http("PUT", f"{self.base}/v1/orgs/{org}/plan", admin, {"plan": "pro"})[0] == 200
        canary = secrets.token_hex(16)
        keys = {
            "openai": f"sk-proj-CANARY{canary}openai0000",
            "anthropic": f"sk-ant-api03-CANARY{canary}anthropic00",
            "groq": f"gsk_CANARY{canary}groq000000000000",
        }
        for provider, key in keys.items():
            self.fake.accept(key)
            status, body = http("POST", f"{self.base}/v1/orgs/{org}/keys", owner,
                                {"provider": provider, "key": key})
            assert status == 201, body
        assert http("PUT", f"{self.base}/v1/orgs/{org}/provider-order", owner, {"providers": order})[0] == 200
        self.keys.update({f"{org}/{p}": k for p, k in keys.items()})
        return self.token(org, "service", "worker")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()
        if self.database:
            subprocess.run(["psql", DATABASE_URL, "-qc", f"drop database if exists {self.database} with (force)"],
                           check=False)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def keyledger(request, fake):
    with tempfile.TemporaryDirectory() as workdir:
        server = Keyledger(request.param, fake, Path(workdir))
        yield server
        server.stop()
        # No key it was given is in any line it logged.
        log = server.log_path.read_text()
        for key in server.keys.values():
            assert key not in log and key[-20:-6] not in log, "a key is in keyledger's log"
