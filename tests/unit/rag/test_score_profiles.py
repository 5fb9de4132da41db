"""Each embedder's score profile: its cosine scale, dense weights and threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.ingest import ingest_files
from rag.retrieval import GENERIC, PROFILES, RetrievalConfig, ScoreProfile


def test_an_unfitted_embedder_reads_cosines_as_they_are():
    config = RetrievalConfig.for_embedder("someone/else")
    assert (config.dense_floor, config.dense_ceiling, config.score_threshold) == (0.0, 1.0, 0.0)
    assert (config.dense_weight_latin, config.dense_weight_cjk) == (
        GENERIC.dense_weight_latin, GENERIC.dense_weight_cjk)
    assert config.dense_score(0.42) == pytest.approx(0.42)


def test_the_scale_maps_floor_to_0_and_ceiling_to_1():
    config = RetrievalConfig(dense_floor=0.8, dense_ceiling=0.9)
    assert config.dense_score(0.75) == 0.0 and config.dense_score(0.95) == 1.0
    assert config.dense_score(0.85) == pytest.approx(0.5)
    cjk = RetrievalConfig(dense_floor=0.4, dense_ceiling=0.8, dense_scale_cjk=(0.8, 0.9))
    assert cjk.dense_score(0.85, share=1.0) == pytest.approx(0.5)
    assert cjk.dense_score(0.6, share=0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dense floor"):
        RetrievalConfig(dense_floor=0.9, dense_ceiling=0.8)


def test_every_fitted_profile_is_on_the_same_scale():
    for name, profile in PROFILES.items():
        assert isinstance(profile, ScoreProfile)
        assert -1 <= profile.floor < profile.ceiling <= 1, name
        assert 0 <= profile.threshold_latin < 1 and 0 <= profile.threshold_cjk < 1, name


def test_none_keeps_the_bases_threshold_and_a_number_overrides_it(store, embedder,
                                                                   tmp_path: Path,
                                                                   monkeypatch):
    monkeypatch.setitem(PROFILES, embedder.name, ScoreProfile(0.0, 1.0, 0.5, 0.0, 0.99, 0.99))
    kb = store.create("strict", embedder)
    assert kb.retrieval.score_threshold == 0.99
    (tmp_path / "a.txt").write_text("The forklift keys are kept in locker 38.")
    ingest_files(kb, [tmp_path / "a.txt"])
    assert kb.search("canteen opening hours", score_threshold=None) == []
    assert kb.search("canteen opening hours", score_threshold=0.0)  # anything at all


def test_the_threshold_follows_the_querys_script():
    config = RetrievalConfig(score_threshold=0.1, threshold_cjk=0.3)
    assert config.threshold("where are the keys") == pytest.approx(0.1)
    assert config.threshold("钥匙在哪里") == pytest.approx(0.3)
    assert RetrievalConfig(score_threshold=0.2).threshold("钥匙在哪里") == 0.2
