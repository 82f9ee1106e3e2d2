from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models.voice_encoder import (
    MultiHeadAttention,
    VoiceEncoder,
    VoiceEncoderConfig,
    frame_waveform,
    load_voice_encoder,
    load_voice_encoder_file,
    save_voice_encoder,
)

CLIP_SAMPLES = 29_360  # 3.67 s at 8 kHz, the audio stage's output length

# 003 Table 1, transcribed row by row: (layer type, output shape without the batch axis).
TABLE_1 = [
    ("Conv2d", (2, 152, 200)),
    ("SELU", (2, 152, 200)),
    ("Conv2d", (4, 144, 200)),
    ("SELU", (4, 144, 200)),
    ("Conv2d", (8, 126, 200)),
    ("SELU", (8, 126, 200)),
    ("Conv2d", (16, 94, 200)),
    ("SELU", (16, 94, 200)),
    ("Conv2d", (32, 44, 200)),
    ("SELU", (32, 44, 200)),
    ("ZeroPad2d", (32, 51, 200)),
    ("Conv2d", (40, 1, 200)),
    ("SELU", (40, 1, 200)),
    ("Conv2d", (32, 100, 20)),
    ("BatchNorm2d", (32, 100, 20)),
    ("Conv2d", (32, 50, 10)),
    ("BatchNorm2d", (32, 50, 10)),
    ("Conv2d", (64, 25, 5)),
    ("BatchNorm2d", (64, 25, 5)),
    ("Conv2d", (64, 13, 3)),
    ("BatchNorm2d", (64, 13, 3)),
    ("Conv2d", (128, 7, 2)),
    ("BatchNorm2d", (128, 7, 2)),
    ("Conv2d", (128, 4, 1)),
    ("BatchNorm2d", (128, 4, 1)),
    ("GRU", (4, 200)),
    ("MultiHeadAttention", (1, 256)),
]
TABLE_TYPES = {kind for kind, _ in TABLE_1}


def record_layer_outputs(model: nn.Module) -> tuple[list[tuple[str, tuple[int, ...]]], list]:
    """Hook every module of a Table 1 type; return the (type, output shape) log and handles."""
    log: list[tuple[str, tuple[int, ...]]] = []

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor | tuple) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        log.append((type(module).__name__, tuple(tensor.shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if type(m).__name__ in TABLE_TYPES]
    return log, handles


@pytest.mark.parametrize("pooling", ["temporal", "style_tokens"])
@pytest.mark.parametrize("batch", [32, 1])
def test_every_layer_output_matches_003_table_1(batch, pooling, deterministic_rng):
    model = VoiceEncoder(VoiceEncoderConfig(pooling=pooling))
    frames = torch.randn(batch, 1, 160, 200)  # 003 Table 1 input
    log, handles = record_layer_outputs(model)
    with torch.no_grad():
        model.train(batch > 1)  # batch 1: BatchNorm needs running stats (eval)
        out = model(frames)
    for handle in handles:
        handle.remove()

    assert log == [(kind, (batch, *shape)) for kind, shape in TABLE_1]
    assert out.shape == (batch, 256)
    assert torch.isfinite(out).all()


def test_waveform_input_equals_framed_input(deterministic_rng):
    model = VoiceEncoder().eval()
    wave = torch.randn(3, CLIP_SAMPLES)
    with torch.no_grad():
        assert torch.equal(model(wave), model(frame_waveform(wave)))


def test_frame_t_is_column_t():
    wave = torch.arange(2 * 32_000, dtype=torch.float32).reshape(2, 32_000)
    frames = frame_waveform(wave)
    assert frames.shape == (2, 1, 160, 200)
    for b in (0, 1):
        for t in (0, 1, 117, 199):
            assert torch.equal(frames[b, 0, :, t], wave[b, 160 * t : 160 * (t + 1)])


def test_short_clip_is_repeated_from_its_start():
    wave = torch.randn(2, CLIP_SAMPLES)
    flat = frame_waveform(wave)[:, 0].transpose(1, 2).reshape(2, -1)  # back to sample order
    assert flat.shape == (2, 32_000)
    assert torch.equal(flat[:, :CLIP_SAMPLES], wave)
    assert torch.equal(flat[:, CLIP_SAMPLES:], wave[:, : 32_000 - CLIP_SAMPLES])


def test_very_short_clip_is_tiled_many_times():
    wave = torch.arange(7, dtype=torch.float32).unsqueeze(0)
    flat = frame_waveform(wave)[:, 0].transpose(1, 2).reshape(-1)
    assert torch.equal(flat, torch.arange(32_000, dtype=torch.float32) % 7)


def test_long_clip_is_cut_at_its_start():
    wave = torch.randn(1, 40_000)
    flat = frame_waveform(wave)[:, 0].transpose(1, 2).reshape(1, -1)
    assert torch.equal(flat, wave[:, :32_000])


@pytest.mark.parametrize("shape", [(0,), (32_000,), (2, 0), (1, 1, 32_000)])
def test_frame_waveform_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="expected waveforms"):
        frame_waveform(torch.zeros(shape))


def test_forward_rejects_frames_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected"):
        VoiceEncoder()(torch.zeros(2, 1, 150, 200))


def test_nothing_derived_is_hard_coded(deterministic_rng):
    config = VoiceEncoderConfig(
        frames=64, filterbank_channels=(2, 4, 8, 16, 32, 24), reference_channels=(8, 16, 16),
        gru_hidden=48, out_dim=96, heads=4,
    )
    model = VoiceEncoder(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 64 * 160))
    assert out.shape == (2, 96)
    assert config.reference_sizes[-1] == (8, 3)  # 64 -> 32 -> 16 -> 8; 24 -> 12 -> 6 -> 3
    assert model.gru.input_size == 16 * 3


def test_zero_padding_is_derived_from_the_filterbank():
    assert VoiceEncoderConfig().filterbank_padding == (3, 4)  # 44 + 7 = 51 rows (Table 1)
    # frame_len 150 leaves 34 rows after five convs: 17 rows to add for the 51-row last conv
    assert sum(VoiceEncoderConfig(frame_len=150).filterbank_padding) == 17


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_len": 200}, "too long"),
        ({"frame_len": 100}, "too short"),
        ({"out_dim": 250, "heads": 8}, "divisible"),
        ({"frames": 0}, "frames must be >= 1"),
        ({"filterbank_kernels": (5, 5)}, "equal lengths"),
        ({"reference_channels": ()}, "must not be empty"),
        ({"pooling": "mean"}, "pooling"),
    ],
)
def test_config_rejects_impossible_architectures(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VoiceEncoderConfig(**kwargs)


def test_selu_filterbank_keeps_unit_scale_at_init(deterministic_rng):
    # LeCun-normal init + standardised input keep SELU activations near mean 0, std 1 through
    # the six layers; PyTorch's default conv init would shrink the std by ~sqrt(3) per layer.
    model = VoiceEncoder()
    with torch.no_grad():
        h = model.filterbank(frame_waveform(0.05 * torch.randn(4, CLIP_SAMPLES)) / 0.05)
    assert abs(h.mean().item()) < 0.2
    assert 0.6 < h.std().item() < 1.5


def test_output_ignores_recording_gain_and_survives_silence(deterministic_rng):
    model = VoiceEncoder().eval()
    wave = 0.1 * torch.randn(2, CLIP_SAMPLES)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model(20.0 * wave), rtol=1e-4, atol=1e-4)
        assert torch.isfinite(model(torch.zeros(2, CLIP_SAMPLES))).all()


def test_multi_head_attention_is_a_convex_mix_per_head():
    attention = MultiHeadAttention(query_dim=6, key_dim=4, out_dim=8, heads=2)
    memory = torch.randn(1, 5, 4)
    out = attention(torch.randn(1, 1, 6), memory)
    values = attention.value(memory)[0]  # (5, 8)
    for head in (slice(0, 4), slice(4, 8)):
        # each head's output lies inside the box spanned by its value vectors
        assert (out[0, 0, head] <= values[:, head].max(0).values + 1e-6).all()
        assert (out[0, 0, head] >= values[:, head].min(0).values - 1e-6).all()


@pytest.mark.parametrize("pooling", ["temporal", "style_tokens"])
def test_save_load_round_trip(tmp_path, pooling, deterministic_rng):
    config = VoiceEncoderConfig(out_dim=128, heads=4, pooling=pooling)
    model = VoiceEncoder(config)
    model(torch.randn(4, CLIP_SAMPLES))  # train-mode pass: BatchNorm running stats move
    provenance = {"params": {"lr": 1e-4, "epochs": [1, 2]}, "step": 7, "git": "abc", "x": None}
    path = save_voice_encoder(tmp_path / "sub" / "voice.pt", model, provenance)

    loaded = load_voice_encoder(path)
    wave = torch.randn(2, CLIP_SAMPLES)
    assert loaded.config == config
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(wave), model.eval()(wave))
    assert load_voice_encoder_file(path)["provenance"] == provenance
    assert [p.name for p in path.parent.iterdir()] == ["voice.pt"]  # no temporary left


def test_save_rejects_provenance_that_is_not_plain_data(tmp_path):
    with pytest.raises(TypeError, match=r"provenance\.when"):
        save_voice_encoder(tmp_path / "v.pt", VoiceEncoder(), {"when": object()})
    assert not (tmp_path / "v.pt").exists()


def test_load_rejects_other_model_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"kind": "FaceVAE", "config": {}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a VoiceEncoder"):
        load_voice_encoder(path)


def test_loss_decreases_on_a_fixed_batch(deterministic_rng):
    model = VoiceEncoder()
    waves = torch.randn(4, CLIP_SAMPLES)
    targets = torch.randn(4, 256)  # distinct random targets: the model must tell inputs apart
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses: list[float] = []
    for _ in range(15):  # halves in ~9 steps at this seed
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(waves), targets)  # 003 section 4.3: MSE
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if losses[-1] < 0.5 * losses[0]:
            break
    assert losses[-1] < 0.5 * losses[0], losses


def plain_filterbank(filterbank: nn.Sequential) -> nn.Sequential:
    """Return the same layers as a plain NCHW ``nn.Sequential`` with SELU out of place."""
    return nn.Sequential(*(nn.SELU() if isinstance(m, nn.SELU) else m for m in filterbank))


def step_outputs(model: VoiceEncoder, wave: torch.Tensor) -> list[torch.Tensor]:
    """Return the output and every parameter's gradient of one MSE step on ``wave``."""
    model.zero_grad()
    out = model(wave)
    torch.nn.functional.mse_loss(out, torch.ones_like(out)).backward()
    return [out.detach(), *(p.grad.clone() for p in model.filterbank.parameters())]


def test_channels_last_filterbank_is_the_plain_stack_within_float_rounding(deterministic_rng):
    # The fast filterbank (channels-last, SELU in place) against the same weights run as a
    # plain NCHW stack: outputs and filterbank gradients. The yardstick is float64: the fast
    # path may be no further from it than the plain path's own float32 rounding allows.
    model = VoiceEncoder()
    wave = torch.randn(4, CLIP_SAMPLES)
    fast = step_outputs(model, wave)
    model.filterbank = plain_filterbank(model.filterbank)
    plain = step_outputs(model, wave)
    exact = step_outputs(model.double(), wave.double())
    assert fast[0].is_contiguous() and model.filterbank[0].weight.shape == (2, 1, 5, 1)
    for f, p, e in zip(fast, plain, exact, strict=True):
        scale = e.abs().max().item()
        plain_error = (p.double() - e).abs().max().item() / scale
        fast_error = (f.double() - e).abs().max().item() / scale
        assert fast_error < max(10 * plain_error, 1e-5), (fast_error, plain_error)


def test_filterbank_state_dict_keys_are_unchanged():
    # Model files written before the channels-last filterbank load as they are.
    keys = [k for k in VoiceEncoder().state_dict() if k.startswith("filterbank.")]
    assert keys == [f"filterbank.{i}.{p}" for i in (0, 2, 4, 6, 8, 11) for p in ("weight", "bias")]
