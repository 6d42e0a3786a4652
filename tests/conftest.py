"""Shared fixtures: the slice network, exported once per test session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def slice_onnx(tmp_path_factory):
    """Path of the QONNX export of the slice network (calibrated on real images)."""
    from models.data import sample_images
    from models.export import export_qonnx
    from models.slice import build_slice_model

    path = tmp_path_factory.mktemp("slice") / "slice.onnx"
    model = build_slice_model(seed=0, calibrate_images=sample_images(8, 64, split="train"))
    export_qonnx(model, path, input_shape=(1, 3, 64, 64))
    return path


@pytest.fixture(scope="session")
def val_images():
    """Two real images (VOC val, or scikit-image photos without VOC), uint8 [2, 64, 64, 3]."""
    from models.data import sample_images

    return sample_images(2, 64, split="val")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
