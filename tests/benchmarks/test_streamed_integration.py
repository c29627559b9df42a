"""benchmarks/streamed_integration.py: the chunk size its fine-tuning reads."""

from __future__ import annotations


def test_train_chunk_size_reaches_train_and_is_undone(load_benchmark, monkeypatch):
    si = load_benchmark("streamed_integration")
    seen: dict = {}

    def fake_train(self, *args, **kwargs):
        seen.clear()
        seen.update(kwargs)

    monkeypatch.setattr(si.ScGPTIntegration, "train", fake_train)
    with si.train_chunk_size(128):
        si.ScGPTIntegration.train(None, max_epochs=1, balance_batches=True)
        assert seen == {"max_epochs": 1, "balance_batches": True, "chunk_size": 128}
        si.ScGPTIntegration.train(None, chunk_size=64)  # a chunk size given wins
        assert seen == {"chunk_size": 64}
    assert si.ScGPTIntegration.train is fake_train  # restored
    si.ScGPTIntegration.train(None)
    assert seen == {}
