"""Settings shared by the curation services (safety, dedup, blur, embed)."""

from __future__ import annotations

from pydantic import Field

from winnow.shared.config import ServiceSettings


class CurationSettings(ServiceSettings):
    triton_url: str = Field("", description="host:port of Triton's gRPC endpoint; empty = models in-process")
    model_preset: str = Field("offline", description="offline (weights shipped in packages) or production")
    batch_size: int = 64
