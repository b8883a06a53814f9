"""Photos out of zip archives, each checked like an upload; a bad member is reported, not fatal."""

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings

from . import services

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


def is_zip(file) -> bool:
    head = file.read(4)
    file.seek(0)
    return head[:2] == b"PK"


def members(archive: zipfile.ZipFile) -> list[str]:
    """Every file in the archive, without folders, macOS resource forks and hidden files."""
    names = []
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in path.parts or any(p.startswith(".") for p in path.parts):
            continue
        names.append(info.filename)
    return names


@dataclass(frozen=True)
class MemberResult:
    path: str
    upload: services.UploadResult | None = None
    reason: str = ""  # why it was rejected, when upload is None


def member_upload(archive: zipfile.ZipFile, path: str, *, user, classify: bool = True) -> MemberResult:
    if PurePosixPath(path).suffix.lower() not in IMAGE_SUFFIXES:
        return MemberResult(path, reason="not an image file name (jpg, png, gif, webp, bmp, tiff)")
    size = archive.getinfo(path).file_size
    if size > settings.UPLOAD_MAX_BYTES:
        # Checked from the directory, before reading: a zip bomb never gets unpacked.
        return MemberResult(path, reason=f"{size:,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,}")
    try:
        result = services.image_upload(user=user, filename=path, data=archive.read(path), classify=classify)
    except services.UploadRejected as e:
        return MemberResult(path, reason=next(iter(e.errors.values())))
    return MemberResult(path, upload=result)
