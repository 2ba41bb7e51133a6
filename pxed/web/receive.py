"""Reading a streamed upload in a handler: wait for its file to be on disk
and check what the client says its digest is."""

from __future__ import annotations

import base64
import binascii
import errno

from twisted.web.iweb import IRequest

from pxed.errors import BadRequest, InsufficientStorage, PayloadTooLarge, UnsupportedMediaType
from pxed.storage import Staged
from pxed.web.body import header
from pxed.web.upload import UploadBody


def expected_sha256(request: IRequest) -> str | None:
    """The digest a client says the body has: ``X-Checksum-Sha256: <hex>``
    or RFC 9530 ``Content-Digest: sha-256=:<base64>:``."""
    hexdigest = header(request, "X-Checksum-Sha256")
    if hexdigest is not None:
        hexdigest = hexdigest.strip().lower()
        if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
            raise BadRequest("X-Checksum-Sha256: expected 64 hex digits")
        return hexdigest
    digest = header(request, "Content-Digest")
    if digest is not None:
        for item in digest.split(","):
            algo, _, value = item.strip().partition("=")
            if algo.strip().lower() == "sha-256":
                try:
                    raw = base64.b64decode(value.strip().strip(":"), validate=True)
                except binascii.Error:
                    raw = b""
                if len(raw) != 32:
                    raise BadRequest("Content-Digest: sha-256 must be 32 bytes in base64")
                return raw.hex()
        raise BadRequest("Content-Digest: only sha-256 is supported")
    return None


async def receive(request: IRequest, part: str = "file") -> Staged:
    """Wait for the streamed upload *part* to be on disk; 4xx/507 if not."""
    body = request.content
    if not isinstance(body, UploadBody):
        raise UnsupportedMediaType(
            "send the image as application/octet-stream or as multipart/form-data "
            "with a 'file' part"
        )
    if body.error:
        raise (PayloadTooLarge if body.error_status == 413 else BadRequest)(body.error)
    upload = body.files.get(part)
    if upload is None:
        raise BadRequest(f"multipart body has no {part!r} part")
    try:
        return await upload.finish()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("not enough space on the server for this upload") from None
        raise


async def receive_checked(request: IRequest) -> Staged:
    """The upload's file, whose sha256 matches the one the client sent."""
    expected = expected_sha256(request)
    staged = await receive(request)
    if expected is not None and expected != staged.sha256:
        raise BadRequest(f"sha256 mismatch: expected {expected}, received {staged.sha256}")
    return staged
