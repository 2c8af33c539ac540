"""samunet_ensemble: averaged saved probabilities, label maps in the recorded geometry."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from samunet.dataset.image_io import Geometry
from samunet.inference.ensemble_cli import main as ensemble_main
from samunet.evaluation.probabilities_io import load_probabilities, save_probabilities

LABELS = {"background": 0, "one": 1, "two": 2}
SHAPE = (3, 5, 7)
# a rotated grid: output files must carry it exactly
GEOMETRY = Geometry((2.5, 0.8, 0.7), (1.0, 2.0, 3.0), (0, -1, 0, 1, 0, 0, 0, 0, 1), SHAPE)


def _random_probabilities(seed):
    p = np.random.default_rng(seed).random((3, *SHAPE)).astype(np.float32) + 0.01
    return p / p.sum(axis=0, keepdims=True)


def test_ensemble_averages_probabilities_and_keeps_geometry(tmp_path):
    a, b = _random_probabilities(0), _random_probabilities(1)
    save_probabilities(a, GEOMETRY, LABELS, tmp_path / "A" / "case1.npz")
    save_probabilities(b, GEOMETRY, LABELS, tmp_path / "B" / "case1.npz")
    save_probabilities(b, GEOMETRY, LABELS, tmp_path / "B" / "only_in_b.npz")
    ensemble_main(["-i", str(tmp_path / "A"), str(tmp_path / "B"), "-o", str(tmp_path / "out"), "--save-probabilities"])
    saved = load_probabilities(tmp_path / "out" / "case1.npz")
    # inputs are stored as float16: compare with the mean of what was stored
    stored_mean = (load_probabilities(tmp_path / "A" / "case1.npz").probabilities
                   + load_probabilities(tmp_path / "B" / "case1.npz").probabilities) / 2
    np.testing.assert_allclose(saved.probabilities, stored_mean, atol=1e-3)
    image = sitk.ReadImage(str(tmp_path / "out" / "case1.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.argmax(stored_mean, axis=0))
    assert image.GetSpacing() == pytest.approx(GEOMETRY.spacing[::-1])
    assert image.GetOrigin() == pytest.approx(GEOMETRY.origin)
    assert image.GetDirection() == pytest.approx(GEOMETRY.direction)
    assert not (tmp_path / "out" / "only_in_b.nii.gz").exists()


def test_ensemble_refuses_mismatched_geometry_and_missing_sidecar(tmp_path, capsys):
    a = _random_probabilities(0)
    save_probabilities(a, GEOMETRY, LABELS, tmp_path / "A" / "c.npz")
    other = Geometry((2.5, 0.8, 0.7), (9.0, 2.0, 3.0), GEOMETRY.direction, SHAPE)
    save_probabilities(a, other, LABELS, tmp_path / "B" / "c.npz")
    with pytest.raises(SystemExit) as e:
        ensemble_main(["-i", str(tmp_path / "A"), str(tmp_path / "B"), "-o", str(tmp_path / "out")])
    assert e.value.code == 1 and "geometry differs" in capsys.readouterr().err
    (tmp_path / "B" / "c.json").unlink()
    with pytest.raises(SystemExit):
        ensemble_main(["-i", str(tmp_path / "A"), str(tmp_path / "B"), "-o", str(tmp_path / "out")])
    assert "sidecar" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.nii.gz"))
