"""The artifact store: `<store>/<kind>/<id>/` folders of files with `manifest.json` written last.

The store is a local folder or any fsspec URL (`s3://bucket/prefix`). Stages write their files into
a local staging folder; `publish` hashes them, writes the manifest and moves everything into place.

Atomicity: on a local store the staging folder sits inside the store and is renamed into place in
one step, so an artifact folder either does not exist or is complete. On object storage there is no
rename: files are uploaded first and the manifest last, and readers treat a folder without a
manifest as absent. Two runs publishing the same id at once write byte-identical files (stages are
deterministic), so whichever manifest lands last describes the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
from pydantic import ValidationError

from bertflow.pipeline.core.manifest import (
    FORMAT_VERSIONS,
    MANIFEST_NAME,
    FileEntry,
    InputFingerprint,
    Manifest,
    Producer,
    bertflow_version,
    git_commit,
    kind_of,
    sha256_file,
    sha256_stream,
    utc_now,
)
from bertflow.pipeline.core.scratch import TEMP_PREFIX, Leftover, scratch_folder, sweep, temp_dir

STORE_ENV = "BERTFLOW_STORE"
DEFAULT_STORE = "~/.bertflow/store"
STAGING_DIR = ".staging"
LOCKS_DIR = ".locks"


class StoreError(Exception):
    """A problem with the store or an artifact in it; the message names which."""


class ArtifactNotFound(StoreError):
    pass


class ArtifactChanged(StoreError):
    """An artifact's files are not what its manifest recorded (edited, replaced or truncated)."""


def default_store_url() -> str:
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


@dataclass(frozen=True)
class Published:
    manifest: Manifest
    cached: bool  # True when an identical artifact already existed


class ArtifactStore:
    def __init__(self, url: str | None = None, storage_options: dict[str, Any] | None = None):
        url = url or default_store_url()
        if "://" not in url:
            url = str(Path(url).expanduser().resolve())
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.is_local = is_local_fs(self.fs)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- addresses ------------------------------------------------------------------------------

    def _dir(self, artifact_id: str) -> str:
        return f"{self.root}/{kind_of(artifact_id)}/{artifact_id}"

    def uri(self, artifact_id: str, relpath: str | None = None) -> str:
        """A URL for the artifact folder (or a file in it) that fsspec and people can open."""
        path = self._dir(artifact_id) + (f"/{relpath}" if relpath else "")
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def asset_key(self, artifact_id: str) -> str:
        """A URI naming the artifact as a data asset (`file:///…` or `s3://…`)."""
        return Path(self._dir(artifact_id)).as_uri() if self.is_local else self.uri(artifact_id)

    def local_path(self, artifact_id: str) -> Path | None:
        return Path(self._dir(artifact_id)) if self.is_local else None

    # -- reading --------------------------------------------------------------------------------

    def get(self, artifact_id: str) -> Manifest | None:
        """The manifest of a complete artifact, or None when there is none with that id."""
        path = f"{self._dir(artifact_id)}/{MANIFEST_NAME}"
        self.fs.invalidate_cache()  # other processes publish too; never answer from old listings
        try:
            with self.fs.open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        return _parse_manifest(raw, self.fs.unstrip_protocol(path), artifact_id)

    def require(self, artifact_id: str, kind: str | None = None) -> Manifest:
        """The manifest of `artifact_id`, or a StoreError saying why it cannot be used."""
        try:
            actual_kind = kind_of(artifact_id)
        except ValueError as e:
            raise StoreError(str(e)) from None
        if kind is not None and actual_kind != kind:
            raise StoreError(
                f"{artifact_id} is {_a(actual_kind)} {actual_kind} artifact, not {_a(kind)} {kind}"
                " artifact"
            )
        manifest = self.get(artifact_id)
        if manifest is None:
            raise ArtifactNotFound(f"no artifact {artifact_id} in store {self.url}")
        return manifest

    def list(self, kind: str | None = None) -> list[Manifest]:
        """Every complete artifact (of `kind`), oldest first; broken entries are left out."""
        return self.scan(kind)[0]

    def scan(self, kind: str | None = None) -> tuple[list[Manifest], list[str]]:
        """(every complete artifact, oldest first; one line per entry that cannot be read: a
        manifest that is not valid, or one whose id is not its folder's name)."""
        kinds = [kind] if kind else sorted(FORMAT_VERSIONS)
        self.fs.invalidate_cache()
        manifests, problems = [], []
        for k in kinds:
            for path in sorted(self.fs.glob(f"{self.root}/{k}/*/{MANIFEST_NAME}")):
                folder = path.rsplit("/", 2)[-2]
                try:
                    with self.fs.open(path, "rb") as f:
                        raw = f.read()
                    manifests.append(_parse_manifest(raw, self.fs.unstrip_protocol(path), folder))
                except (StoreError, OSError) as e:
                    problems.append(str(e))
        return sorted(manifests, key=lambda m: (m.created, m.id)), problems

    def open(self, artifact_id: str, relpath: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(f"{self._dir(artifact_id)}/{relpath}", mode)

    def verify(self, artifact_id: str, paths: Iterable[str] | None = None) -> list[str]:
        """Re-hash every file the manifest lists (or those of them in `paths`); return one line
        per file that differs."""
        return self._differences(self.require(artifact_id), paths)

    def check_intact(self, manifest: Manifest, paths: Iterable[str] | None = None) -> None:
        """Every file of the artifact (or those in `paths`) checked against the manifest's size
        and sha256: a stage calls this for each upstream artifact before it reads one, so what it
        builds and publishes never comes from a file changed after publishing."""
        problems = self._differences(manifest, paths)
        if problems:
            more = len(problems) - 3
            listed = "; ".join(problems[:3]) + (f"; and {more} more" if more > 0 else "")
            raise ArtifactChanged(
                f"{manifest.kind} {manifest.id} in {self.url} is not as it was published: "
                f"{listed}. Nothing was built from it. Restore the file, or remove "
                f"{self.uri(manifest.id)} and rerun the stage that made it"
            )

    def _differences(self, manifest: Manifest, paths: Iterable[str] | None) -> list[str]:
        wanted = None if paths is None else set(paths)
        self.fs.invalidate_cache()
        problems = []
        for entry in manifest.files:
            if wanted is not None and entry.path not in wanted:
                continue
            path = f"{self._dir(manifest.id)}/{entry.path}"
            try:
                size = self.fs.size(path)
            except FileNotFoundError:
                problems.append(f"{entry.path}: missing")
                continue
            if size != entry.size:
                problems.append(f"{entry.path}: size {size} bytes, manifest says {entry.size}")
                continue
            with self.fs.open(path, "rb") as f:
                digest = sha256_stream(f)
            if digest != entry.sha256:
                problems.append(f"{entry.path}: content changed (sha256 differs)")
        return problems

    # -- writing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, artifact_id: str) -> Iterator[Path]:
        """A fresh local folder to write an artifact's files into; removed afterwards.

        For a local store it lies inside the store, so publishing is a rename on one filesystem;
        it is made with the permissions of the process's umask (not mkdtemp's 0700), so a store
        shared by a team's users stays readable by them. What dead runs of the same artifact left
        (staging and spill folders no live process holds) is removed first.
        """
        sweep(temp_dir(), f"{TEMP_PREFIX}*{artifact_id}-*")
        if self.is_local:
            base = Path(self.root) / STAGING_DIR
            base.mkdir(parents=True, exist_ok=True)
            sweep(base, f"{artifact_id}-*")
            with scratch_folder(f"{artifact_id}-", base) as path:
                path.chmod(0o777 & ~current_umask())
                yield path
        else:
            with scratch_folder(f"{TEMP_PREFIX}{artifact_id}-") as path:
                yield path

    def leftovers(self, *, dry_run: bool = False) -> list[Leftover]:
        """Remove what dead runs left: staging folders in a local store, bertflow's spill and
        staging folders in $TMPDIR, none that a live run holds; return them (or, with
        `dry_run`, only list them)."""
        found = []
        if self.is_local:
            found += sweep(Path(self.root) / STAGING_DIR, "*", dry_run=dry_run)
        return found + sweep(temp_dir(), f"{TEMP_PREFIX}*", dry_run=dry_run)

    def publish(
        self,
        staging: Path,
        artifact_id: str,
        *,
        config: dict[str, Any],
        upstream: dict[str, str] | None = None,
        inputs: list[InputFingerprint] | None = None,
        stats: dict[str, Any] | None = None,
        layout: dict[str, Any] | None = None,
        summary: str = "",
        flow_run_id: str | None = None,
    ) -> Published:
        """Hash the staged files, write the manifest last, and make the artifact visible."""
        kind = kind_of(artifact_id)
        existing = self.get(artifact_id)
        if existing is not None:
            return Published(existing, cached=True)
        manifest = Manifest(
            id=artifact_id,
            kind=kind,
            format_version=FORMAT_VERSIONS[kind],
            created=utc_now(),
            config=config,
            upstream=upstream or {},
            inputs=inputs or [],
            files=_file_entries(staging),
            layout=layout or {},
            stats=stats or {},
            summary=summary,
            producer=Producer(
                bertflow_version=bertflow_version(),
                git_commit=git_commit(),
                prefect_flow_run_id=flow_run_id,
            ),
        )
        if self.is_local:
            return self._publish_local(staging, manifest)
        return self._publish_remote(staging, manifest)

    def _publish_local(self, staging: Path, manifest: Manifest) -> Published:
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        final = Path(self._dir(manifest.id))
        final.parent.mkdir(parents=True, exist_ok=True)
        # Publishers of one id take turns, so a folder left without a manifest by a crash is
        # cleared by exactly one of them and nobody moves another's complete artifact.
        with _exclusive(Path(self.root) / LOCKS_DIR / f"{manifest.id}.lock"):
            existing = self.get(manifest.id)
            if existing is not None:
                return Published(existing, cached=True)
            if final.exists():
                trash = Path(self.root) / STAGING_DIR / f"incomplete-{uuid.uuid4().hex}"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(staging, final)
        return Published(manifest, cached=False)

    def _publish_remote(self, staging: Path, manifest: Manifest) -> Published:
        final = self._dir(manifest.id)
        for entry in manifest.files:
            self.fs.put_file(str(staging / entry.path), f"{final}/{entry.path}")
        self.fs.pipe_file(f"{final}/{MANIFEST_NAME}", manifest.to_json().encode())
        return Published(manifest, cached=False)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic, but only here)
    os.umask(mask)
    return mask


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols


def fingerprint_file(
    fs: fsspec.AbstractFileSystem,
    path: str,
    uri: str,
    size: int | None = None,
    hash_limit: int | None = None,
) -> InputFingerprint:
    """What an input file is, for the id of an artifact made from it: the sha256 of a local
    file (its size and mtime when over `hash_limit` bytes), else the object's ETag (or the
    filesystem's checksum)."""
    if is_local_fs(fs):
        stat = os.stat(path)
        size = stat.st_size if size is None else size
        if hash_limit is not None and size > hash_limit:
            value = f"stat:{stat.st_size}:{stat.st_mtime_ns}"
        else:
            value = "sha256:" + sha256_file(Path(path))
        return InputFingerprint(uri=uri, size=size, fingerprint=value)
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag")
    value = f"etag:{str(etag).strip(chr(34))}" if etag else f"checksum:{fs.checksum(path)}"
    size = int(info.get("size") or 0) if size is None else size
    return InputFingerprint(uri=uri, size=size, fingerprint=value)


def _file_entries(folder: Path) -> list[FileEntry]:
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST_NAME:
            continue
        entries.append(FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path)))
    return entries


def _parse_manifest(raw: bytes, where: str, folder: str) -> Manifest:
    """The manifest in `raw`, read from `where` in the folder named `folder` (its id)."""
    try:
        manifest = Manifest.model_validate(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as e:
        reason = str(e).splitlines()[0]
        raise StoreError(f"{where}: not a valid bertflow manifest ({reason})") from None
    if manifest.id != folder:
        raise StoreError(
            f"{where}: the manifest is of {manifest.id}, not of {folder}, the folder it is in "
            f"(copied or renamed?); move it back to {manifest.kind}/{manifest.id}"
        )
    return manifest
