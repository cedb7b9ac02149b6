"""What a user would build instead of Stemcell: plain Ray Serve, one deployment, N separate models.

Every app of the M-Package becomes its own whole network (the base with that app's fine-tuned
layers and head: `MPackage.app_model(app, branchpoint)`), as if each tenant had trained and shipped
its own model of the same base. One request carries one JPEG; the replica decodes it as well as
Stemcell does (at the JPEG's DCT scale, then the same resize: `stemcell.imaging.decode_for_model`,
so the comparison is about sharing, not about decoding), and `@serve.batch` gathers the frames of
concurrent requests so each model runs once per batch (normalised with `to_input`). Nothing is
shared between the models: that is the difference Stemcell's stem tree makes.
"""
from __future__ import annotations

import numpy as np
import torch
from ray import serve
from starlette.requests import Request

from stemcell.imaging import decode_for_model
from stemcell.models import to_input
from stemcell.package import load_package


@serve.deployment(max_ongoing_requests=64)
class PlainModels:
    """N app models side by side, each run on every frame."""

    def __init__(self, package_dir: str, apps: list[tuple[str, int]], threads: int) -> None:
        torch.set_num_threads(threads)  # as many as the Stemcell executor it is compared with
        package = load_package(package_dir)
        self.models = {app: package.app_model(app, branchpoint).eval() for app, branchpoint in apps}
        self.size = package.manifest.base.input_size
        self.norm = package.manifest.base.normalization.model_dump()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def score(self, frames: list[np.ndarray]) -> list[dict[str, float]]:
        x = to_input(np.stack(frames), self.size, **self.norm)
        with torch.inference_mode():
            scores = {app: torch.sigmoid(model(x))[:, 0].tolist() for app, model in self.models.items()}
        return [{app: s[i] for app, s in scores.items()} for i in range(len(frames))]

    async def __call__(self, request: Request) -> dict[str, dict[str, float]]:
        frame = decode_for_model(await request.body(), request.headers.get("content-type"), self.size)
        return {"scores": await self.score(frame)}
