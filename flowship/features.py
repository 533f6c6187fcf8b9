"""The feature lists: a model's input columns by kind, the one shape `params.yaml`, the bundle's metadata and
the checks share.

pydantic only: the serving image carries this module (`SERVING_CODE` in `flowship.adapters.docker_engine`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FeatureLists(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    numeric: list[str] = []
    categorical: list[str] = []

    @property
    def all(self) -> list[str]:
        """Every feature, numeric ones first: the column order the model is fitted on."""
        return [*self.numeric, *self.categorical]
