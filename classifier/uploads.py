"""Uploads: one photo, many, or the photos of a zip, each checked, stored once by content and
queued for a prediction once the row has committed."""

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import enqueue
from .errors import Rejected
from .ml.images import DecodedImage, InvalidImage, decode_image, encode_jpeg, fit_within, is_image_name
from .models import Image, Upload, image_path
from .storage import store_once

CLASSIFY_TASK = "classifier.tasks.image_classify"


class UploadRejected(Rejected):
    """Some files were not usable images; errors maps each file name to the reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in errors.items()))

    def body(self) -> dict:
        return {"detail": "Nothing was stored: some files are not usable images.", "errors": self.errors}


@dataclass(frozen=True)
class UploadResult:
    image: Image
    created: bool  # False: this uploader had sent this content before; the upload was recorded on it


def image_validate(*, data: bytes) -> DecodedImage:
    if len(data) > settings.UPLOAD_MAX_BYTES:
        raise InvalidImage(f"The file is {len(data):,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,}.")
    return decode_image(data, max_pixels=settings.UPLOAD_MAX_PIXELS,
                        max_decoded_bytes=settings.UPLOAD_MAX_DECODED_BYTES)


def _read_limited(file) -> bytes:
    # Read one byte past the limit: enough to know it is too big without reading it all.
    return file.read(settings.UPLOAD_MAX_BYTES + 1)


def images_upload(*, user, files) -> list[UploadResult]:
    """Store every file, or none: a batch with one bad file is rejected whole, with reasons."""
    if not files:
        raise UploadRejected({"files": "No file was sent."})
    if len(files) > settings.UPLOAD_MAX_FILES:
        raise UploadRejected({"files": f"{len(files)} files sent; at most {settings.UPLOAD_MAX_FILES} per request."})
    checked, errors = [], {}
    for index, file in enumerate(files):
        name = getattr(file, "name", None) or f"file {index + 1}"
        data = _read_limited(file)
        try:
            checked.append((name, data, image_validate(data=data)))
        except InvalidImage as e:
            errors[name] = str(e)
    if errors:
        raise UploadRejected(errors)
    return [_image_store(user=user, filename=name, data=data, decoded=decoded) for name, data, decoded in checked]


def image_upload(*, user, filename: str, data: bytes, classify: bool = True) -> UploadResult:
    """One image; classify=False when the caller predicts it itself (a batch job)."""
    try:
        decoded = image_validate(data=data)
    except InvalidImage as e:
        raise UploadRejected({filename: str(e)}) from None
    return _image_store(user=user, filename=filename, data=data, decoded=decoded, classify=classify)


def _image_store(*, user, filename: str, data: bytes, decoded: DecodedImage, classify: bool = True) -> UploadResult:
    digest = Image.digest(data)
    for _ in range(2):  # a second pass when the same content arrived twice at once
        existing, private_to = _row_for(user, digest)
        if existing is not None:
            break
        # Files first, row second: a row never points at a missing file. A crash in between
        # leaves content-addressed files that the next upload of it reuses (so do private copies).
        suffix = "." + decoded.format.lower().replace("jpeg", "jpg").replace("mpo", "jpg")
        names = {
            "original": store_once(image_path(digest, suffix), data),
            "preview": store_once(
                image_path(digest, ".preview.jpg"), encode_jpeg(fit_within(decoded.image, settings.PREVIEW_SIZE))
            ),
            "thumbnail": store_once(
                image_path(digest, ".thumb.jpg"), encode_jpeg(fit_within(decoded.image, settings.THUMBNAIL_SIZE))
            ),
        }
        try:
            with transaction.atomic():
                image = Image.objects.create(
                    sha256=digest, private_to=private_to, format=decoded.format, original_mode=decoded.original_mode,
                    width=decoded.width, height=decoded.height, size_bytes=len(data), **names,
                )
                Upload.objects.create(image=image, user=user, filename=filename[:255])
                if classify:
                    enqueue.on_commit(CLASSIFY_TASK, image.id)
            return UploadResult(image=image, created=True)
        except IntegrityError:
            continue  # the other request stored it: the next pass finds its row
    if existing is None:
        raise IntegrityError(f"content {digest} could be neither stored nor found")
    seen_before = Upload.objects.filter(image=existing, user=user).exists()
    Upload.objects.create(image=existing, user=user, filename=filename[:255])
    if existing.status == Image.Status.FAILED and classify:
        image_requeue(image=existing)
    return UploadResult(image=existing, created=not seen_before)


def _row_for(user, digest: str) -> tuple[Image | None, object]:
    """The row an upload of this content lands on (None: a new one), and the new row's private_to.

    An upload never tells whether another user has the same photo: an uploader who cannot see
    the content's row (someone else sent it) gets a private copy of their own, with its own id,
    status and history, as a fresh upload would; their re-uploads land on that copy ("created"
    false). Whoever may see the row (sent it before, or sees every image: annotators, reviewers,
    staff, a label import) lands on it, so labels and imports of known content stay one image."""
    shared = Image.objects.filter(sha256=digest, private_to__isnull=True).first()
    if shared is None or user is None or shared.is_visible_to(user):
        return shared, None
    return Image.objects.filter(sha256=digest, private_to=user).first(), user


def image_requeue(*, image: Image) -> None:
    with transaction.atomic():
        now = timezone.now()
        Image.objects.filter(id=image.id).update(status=Image.Status.QUEUED, status_changed=now, queued_at=now,
                                                 error="")
        enqueue.on_commit(CLASSIFY_TASK, image.id)


# --- zips --------------------------------------------------------------------------------------

def is_zip(file) -> bool:
    head = file.read(4)
    file.seek(0)
    return head[:2] == b"PK"


def zip_members(archive: zipfile.ZipFile) -> list[str]:
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
    upload: UploadResult | None = None
    reason: str = ""  # why it was rejected, when upload is None


def zip_member_upload(archive: zipfile.ZipFile, path: str, *, user, classify: bool = True) -> MemberResult:
    """One member of a zip, checked like an upload; a bad member is reported, not fatal."""
    if not is_image_name(path):
        return MemberResult(path, reason="not an image file name (jpg, png, gif, webp, bmp, tiff)")
    size = archive.getinfo(path).file_size
    if size > settings.UPLOAD_MAX_BYTES:
        # Checked from the directory, before reading: a zip bomb never gets unpacked.
        return MemberResult(path, reason=f"{size:,} bytes; the limit is {settings.UPLOAD_MAX_BYTES:,}")
    try:
        result = image_upload(user=user, filename=path, data=archive.read(path), classify=classify)
    except UploadRejected as e:
        return MemberResult(path, reason=next(iter(e.errors.values())))
    return MemberResult(path, upload=result)
