"""The data directory ``noti dev`` keeps between runs, owned by one stack at a time, readable by its owner only."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class DevError(RuntimeError):
    """Something the user must fix before ``noti dev`` can start; the message says what."""


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What other commands need to reach a running dev stack."""

    pid: int
    database_url: str
    redis_url: str
    gateway_url: str
    app: str
    environment: str
    credential: str  # name of the dev APNsCredential campaigns refer to
    simulator_url: str = ""
    simulator_control_url: str = ""  # GET /counters: what the APNs simulator received
    # The dev credential, for `noti send --dev` straight to the simulator.
    team_id: str = ""
    key_id: str = ""
    key_file: str = ""  # the .p8 signing key
    ca_file: str = ""  # the simulator's certificate, to trust


@dataclass(frozen=True, slots=True)
class DataDir:
    """Where ``noti dev`` keeps what survives a restart."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "noti.db"

    @property
    def apns_key(self) -> Path:
        return self.root / "dev-apns-key.p8"

    @property
    def api_key(self) -> Path:
        return self.root / "dev-api-key"

    @property
    def runtime(self) -> Path:
        """Written while ``noti dev`` runs: where its database, Redis and gateway are."""
        return self.root / "running.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one dev stack that owns this directory, for as long as it runs."""
        return self.root / "lock"

    def claim(self) -> int:
        """Take the directory for this process, or say which stack has it; returns the lock's descriptor.

        The kernel drops the lock when the process ends, however it ends, so a killed stack leaves no stale lock.
        """
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise DevError(
                f"the data directory {self.root} is in use by the dev stack {self._describe(owner)}: "
                "stop that one first, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def _describe(self, pid: str) -> str:
        try:
            info = RuntimeInfo(**json.loads(self.runtime.read_text()))
        except (OSError, ValueError, TypeError):
            return f"with pid {pid}" if pid else "starting there"
        return f"at {info.gateway_url} (pid {info.pid})"

    def in_use(self) -> bool:
        """Whether a dev stack holds this directory now."""
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def write_runtime(self, info: RuntimeInfo) -> None:
        write_private(self.runtime, json.dumps(asdict(info), indent=2).encode())

    def read_runtime(self) -> RuntimeInfo:
        """Where the running dev stack is; a file left by a stack that was killed does not count."""
        missing = DevError(
            f"no dev stack is running with data directory {self.root}: start `noti dev` first "
            "(or set NOTI_DATABASE_URL and NOTI_REDIS_URL)"
        )
        if not self.in_use():
            raise missing
        try:
            return RuntimeInfo(**json.loads(self.runtime.read_text()))
        except FileNotFoundError:
            raise missing from None

    @classmethod
    def at(cls, path: str | Path) -> DataDir:
        """The data directory at ``path``, for reading: nothing is created."""
        return cls(Path(path).expanduser().resolve())

    @classmethod
    def prepare(cls, path: str | Path) -> DataDir:
        """Create the directory if needed (readable by its owner only) and make sure we can write in it."""
        root = Path(path).expanduser().resolve()
        try:
            if not root.exists():
                root.mkdir(parents=True, mode=0o700)
            probe = root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise DevError(
                f"cannot write to the data directory {root} ({exc.strerror or exc}): "
                "choose another with --data-dir or NOTI_DATA_DIR"
            ) from None
        return cls(root)


def write_private(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner may read (it may hold secrets)."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    os.replace(partial, path)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read it (SQLite gives its -wal/-shm files the same mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def dev_signing_key(data: DataDir) -> bytes:
    """The dev credential's ES256 key (PKCS#8 PEM, like Apple's .p8), made on first start."""
    if data.apns_key.exists():
        return data.apns_key.read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(data.apns_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem
