"""`LearningTransport` over HTTP (httpx): `POST /cameras/{id}/samples`, `GET /cameras/{id}/model`."""
from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import httpx

from stemcell.client import StemcellError
from stemcell.edge.transport import Advice, ModelPayload

VERSION_HEADER = "X-Model-Version"
BASE_VERSION_HEADER = "X-Base-Version"  # "none" for a full update
KIND_HEADER = "X-Update-Kind"
BRANCHPOINT_HEADER = "X-Branchpoint"  # "none" when the server does not say


class HttpTransport:
    """One connection pool with the camera's bearer token. Errors raise `StemcellError`."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                message = str(response.json().get("detail", response.text))
            except ValueError:
                message = response.text
            raise StemcellError(response.status_code, message[:500])

    def upload(self, camera_id: str, timestamps: Sequence[float], jpegs: Sequence[bytes]) -> Advice:
        files = [("frames", (f"{i}.jpg", j, "image/jpeg")) for i, j in enumerate(jpegs)]
        data = {"ts": [repr(float(t)) for t in timestamps]}
        response = self._http.post(f"/cameras/{quote(camera_id, safe='')}/samples", files=files, data=data)
        self._check(response)
        body = response.json()
        return Advice(float(body["sampling_fps"]), float(body["t_update_s"]),
                      {k: int(v) for k, v in body["versions"].items()}, int(body["accepted"]))

    def fetch(self, camera_id: str, app: str, since: int | None) -> ModelPayload | None:
        params: dict[str, str | int] = {"app": app}
        if since is not None:
            params["since"] = since
        response = self._http.get(f"/cameras/{quote(camera_id, safe='')}/model", params=params)
        if response.status_code == 304:
            return None
        self._check(response)
        base = response.headers[BASE_VERSION_HEADER]
        cut = response.headers.get(BRANCHPOINT_HEADER, "none")
        return ModelPayload(response.content, int(response.headers[VERSION_HEADER]),
                            None if base == "none" else int(base), response.headers[KIND_HEADER],
                            None if cut == "none" else int(cut))

    def close(self) -> None:
        self._http.close()
