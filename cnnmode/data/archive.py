"""Archives of class folders (.tar, .tar.gz, .tgz, .zip), read with limits and verified to their end.

A damaged archive is an error naming it, unless the damage is confined to members that can be skipped and
counted like corrupt images (a zip member failing its CRC, a member over the size limit); only the class-folder
images that will be used are ever read or extracted, so unrelated huge members (a zip bomb) cost nothing.
"""
from __future__ import annotations

import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cnnmode.errors import RunError

READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Limits:
    """Caps on what a source may make us read: one file (bytes), and all the files together (bytes)."""
    max_file: int
    max_total: int

    @classmethod
    def from_mb_gb(cls, max_file_mb: float, max_total_gb: float) -> "Limits":
        return cls(int(max_file_mb * 2**20), int(max_total_gb * 2**30))

    def too_big(self, size: int) -> str:
        """Why a file of `size` bytes is skipped, or '' when it may be read."""
        return f"larger than data.max_file_mb ({size / 2**20:.0f} MB)" if size > self.max_file else ""


def check_member(name: str) -> str:
    """Refuse archive members that would land outside the extraction folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise RunError(f"archive member '{name}' has an absolute or parent path; refusing the archive")
    return str(p)


class Archive:
    """Read-only view of a .tar/.tar.gz/.zip: member listing (checked to the archive's end) and member bytes.

    `damaged` maps members that could not be read to the reason; they are skipped and counted like corrupt images.
    """

    def __init__(self, path: str, limits: Limits) -> None:
        self.path, self.limits = path, limits
        self.damaged: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self._members: dict[str, object] = {}  # checked name → zip info or tar member
        try:
            self._zip = zipfile.ZipFile(path) if path.lower().endswith(".zip") else None
            self._tar = None if self._zip else tarfile.open(path)
        except READ_ERRORS as e:
            raise RunError(f"cannot read archive {path}: {e}") from None

    def _damaged(self, error: Exception) -> RunError:
        return RunError(f"archive {self.path} is damaged ({type(error).__name__}: {error}); "
                        "download or pack it again")

    def listing(self) -> tuple[list[str], set[str]]:
        """(file names, directory names), every name checked for safety; a tar is read to its end first."""
        files, dirs = [], set()
        try:
            if self._zip:
                for info in self._zip.infolist():
                    name = check_member(info.filename).rstrip("/")
                    (dirs.add(name) if info.is_dir() else files.append(name))
                    self.sizes[name], self._members[name] = info.file_size, info
            else:
                for m in self._tar.getmembers():
                    name = check_member(m.name)
                    if m.isdir():
                        dirs.add(name)
                    elif m.isfile():
                        files.append(name)
                        self.sizes[name], self._members[name] = m.size, m
                self._check_tar_end()
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        return files, dirs

    def _check_tar_end(self) -> None:
        """tarfile takes a damaged header for the end of the archive, and checks a gzip stream's CRC only when it
        reads to its end: read on from where the listing stopped, which must be zero padding to the true end."""
        fileobj = self._tar.fileobj
        fileobj.seek(self._tar.offset)
        while chunk := fileobj.read(1 << 20):
            if chunk.strip(b"\0"):
                raise RunError(f"archive {self.path} is damaged: its member list breaks off after "
                               f"{len(self._tar.getmembers())} members; download or pack it again")

    def _check_total(self, names: set[str]) -> None:
        total = sum(self.sizes.get(n, 0) for n in names if not self.limits.too_big(self.sizes.get(n, 0)))
        if total > self.limits.max_total:
            raise RunError(f"archive {self.path} would unpack {total / 2**30:.1f} GB of images, more than "
                           f"data.max_total_gb ({self.limits.max_total / 2**30:g} GB); raise it if that is expected")

    def read_members(self, names: set[str], limit: int | None = None) -> dict[str, bytes]:
        """Bytes of the wanted members (the first `limit` of them in archive order, when given); members over the
        size limit or unreadable are left out and recorded in `damaged`."""
        wanted = {n for n in names if not self._skip_oversized(n)}
        self._check_total(wanted)
        out: dict[str, bytes] = {}
        if self._zip:
            for name in sorted(wanted)[:limit]:
                try:
                    out[name] = self._zip.read(self._members[name])
                except READ_ERRORS as e:  # a CRC failure is confined to its member: skip it, like a corrupt image
                    self.damaged[name] = f"damaged in the archive: {type(e).__name__}: {e}"
            return out
        try:
            with tarfile.open(self.path) as tar:
                for m in tar:
                    if m.isfile() and check_member(m.name) in wanted:
                        out[check_member(m.name)] = tar.extractfile(m).read()
                        if limit is not None and len(out) >= limit:
                            break
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        return out

    def _skip_oversized(self, name: str) -> bool:
        reason = self.limits.too_big(self.sizes.get(name, 0))
        if reason:
            self.damaged[name] = reason
        return bool(reason)

    def extract_to(self, folder: Path, names: set[str]) -> None:
        """Extract the wanted members under `folder` (names already checked; tar also filtered)."""
        wanted = {n for n in names if not self._skip_oversized(n)}
        self._check_total(wanted)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            if self._zip:
                for name in sorted(wanted):
                    try:
                        self._zip.extract(self._members[name], folder)
                    except READ_ERRORS as e:
                        self.damaged[name] = f"damaged in the archive: {type(e).__name__}: {e}"
            else:
                with tarfile.open(self.path) as tar:
                    tar.extractall(folder, members=[m for m in tar if check_member(m.name) in wanted], filter="data")
        except READ_ERRORS as e:
            raise self._damaged(e) from None
