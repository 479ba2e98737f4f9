"""A served ``uplift`` bundle: an ONNX graph ``features[n, width] -> uplift[n, T]`` (expected
incremental conversions of each treatment against no contact), the feature schema it was
trained on, its treatments and the campaign's value per conversion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.batching import BatchInfo
from engine.errors import BundleError
from engine.models.base import OnnxModel
from engine.repository import BundleRef
from engine.settings import Settings
from kernels.bundle_manifest import UpliftBundle
from kernels.tabular import TabularSchema


class UpliftModel(OnnxModel):
    def __init__(
        self,
        ref: BundleRef,
        settings: Settings,
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        super().__init__(ref, settings, on_batch)
        where = f"{ref.name}/{ref.version}"
        manifest = ref.bundle(UpliftBundle)
        try:
            self.schema = TabularSchema.from_dict(manifest.customer_schema)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: bad customer schema: {exc}") from exc
        self.treatments: list[str] = list(manifest.treatments)
        self.value_per_conversion = manifest.value_per_conversion or 1.0
        # Warm-up and a shape check: one row of zeros must give one uplift per treatment.
        out = self.score(np.zeros((1, self.schema.width), dtype=np.float32))
        if out.shape != (1, len(self.treatments)):
            raise BundleError(
                f"{where}: the graph gives {out.shape[1]} uplifts for {len(self.treatments)} "
                "treatments"
            )

    def score(self, features: np.ndarray) -> np.ndarray:
        """[n, T] float64 uplift estimates (straight to the session: a plan is one big batch)."""
        (uplift,) = self.session.run(None, {"features": features})
        return uplift.astype(np.float64)
