"""The one batched inference loop."""

import pytest
import torch

from pipeline.models.inference import batched


def test_batches_cover_every_row_in_order_without_gradients():
    layer = torch.nn.Linear(3, 2)
    x, scale = torch.randn(10, 3), torch.arange(10.0)
    calls = []

    def fn(rows, weights):
        calls.append(len(rows))
        assert not torch.is_grad_enabled()
        return layer(rows) * weights[:, None]

    out = batched(fn, x, scale, batch_size=4)
    assert calls == [4, 4, 2]
    with torch.no_grad():
        assert torch.equal(out, layer(x) * scale[:, None])
    assert not out.requires_grad


def test_none_inputs_are_passed_through_and_empty_inputs_keep_the_shape():
    seen = []

    def fn(rows, labels):
        seen.append(labels)
        return rows.sum(dim=1, keepdim=True)

    assert batched(fn, torch.ones(5, 2), None, batch_size=2).tolist() == [[2.0]] * 5
    assert seen == [None, None, None]
    assert batched(fn, torch.ones(0, 2), None).shape == (0, 1)


def test_inputs_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match=r"row-aligned inputs, got lengths \[2, 3\]"):
        batched(lambda a, b: a, torch.ones(3), torch.ones(2))
