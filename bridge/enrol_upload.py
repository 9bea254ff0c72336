"""The page's enrolment: ``POST /api/enroll?name=NAME[&source=camera]`` with multipart JPEGs
(``source=camera``: the page's webcam capture, stored as such with the identity).

Why here and not in the enrolment code: an upload is untrusted bytes over HTTP, so the
bridge bounds it (count and body size), decodes each file itself, and answers one verdict
per uploaded file: its own decode check, then the enrolment's verdict for that image
(``identities.merge_verdicts``), even when the enrolment refused them all.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import cv2
import numpy as np
from aiohttp import web

from enhancer.errors import InputError, LikenessError, ModelError
from enhancer.identity_store import CAMERA_SOURCE

from .errors import HttpError
from .identities import EnrollUnavailable, enroll_function, merge_verdicts, report_to_json, valid_name
from .rooms import BRIDGE_KEY

ENROL_SOURCES = {"images": "images", "camera": CAMERA_SOURCE}  # ?source= -> the identity's stored source


def _decode(files: list[web.FileField]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """One entry per upload (decoded with its size, or refused) and the images that decoded."""
    decoded: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    for i, f in enumerate(files):
        data = np.frombuffer(f.file.read(), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None:
            decoded.append({"index": i, "file": f.filename, "accepted": False, "reason": "not a decodable image"})
        else:
            decoded.append(
                {"index": i, "file": f.filename, "decoded": True, "width": img.shape[1], "height": img.shape[0]}
            )
            images.append(img)
    return decoded, images


async def api_enroll(request: web.Request) -> web.Response:
    """Enrol ``name`` from the uploaded images; ``501`` when enrolment is not in this build."""
    bridge = request.app[BRIDGE_KEY]
    name = request.query.get("name", "")
    if not valid_name(name):
        raise HttpError(400, "query parameter name must be 1-64 letters, digits, '_', '-', '.'")
    source = ENROL_SOURCES.get(request.query.get("source", "images"))
    if source is None:
        raise HttpError(400, f"query parameter source must be one of {', '.join(ENROL_SOURCES)}")
    try:
        fn = enroll_function()
    except EnrollUnavailable as e:
        raise HttpError(501, str(e)) from None
    if not request.content_type.startswith("multipart/form-data"):
        raise HttpError(415, "send the images as multipart/form-data JPEG files")
    form = await request.post()  # bounded by client_max_size (413 beyond it)
    files = [v for _, v in form.items() if isinstance(v, web.FileField)]
    if not files:
        raise HttpError(400, "no image files in the upload")
    if len(files) > bridge.config.max_enroll_images:
        raise HttpError(400, f"too many images ({len(files)}, max {bridge.config.max_enroll_images})")
    decoded, images = _decode(files)
    if not images:
        return web.json_response({"name": name, "images": decoded, "error": "no decodable images"}, status=400)
    try:
        # enrolment detects faces too; streams pass frames through un-enhanced meanwhile
        report = report_to_json(await asyncio.to_thread(bridge.locked, functools.partial(fn, source=source),
                                                        name, images))
    except LikenessError as e:
        # EnrollmentError carries the per-image verdicts: show them even though nothing was stored
        partial = report_to_json(getattr(e, "report", None))
        status = 422 if isinstance(e, InputError) else 503 if isinstance(e, ModelError) else 400
        return web.json_response({"name": name, "images": merge_verdicts(decoded, partial), "report": partial,
                                  "error": str(e)}, status=status)
    return web.json_response({"name": name, "images": merge_verdicts(decoded, report), "report": report})
