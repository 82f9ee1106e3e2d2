import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.embed.encoder import EMBEDDING_DIM, SpeakerEncoder
from tests.conftest import REPO

# Runs in a fresh interpreter so that the import of resemblyzer (and anything it pulls in)
# happens under the guard too. Every socket connect / name lookup is recorded and refused.
OFFLINE_SCRIPT = r"""
import json, socket, sys, urllib.request

attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network access during an offline test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
try:  # the guard itself must work, or the test proves nothing
    urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
except OSError:
    pass
guard_works = len(attempts) == 1
attempts.clear()

import torch
torch.set_num_threads(1)
from pipeline.config import AudioParams
from pipeline.embed.encoder import SpeakerEncoder, embed_media

encoder = SpeakerEncoder("resemblyzer")
first, second, other = (embed_media(p, encoder, AudioParams()).vector for p in sys.argv[1:4])
print(json.dumps({"guard_works": guard_works, "attempts": attempts,
                  "first": first.tolist(), "second": second.tolist(), "other": other.tolist()}))
"""


def test_encoder_loads_offline_and_tells_real_voices_apart(grid_dir):
    male, female = grid_dir / "bbaf2n.mpg", grid_dir / "brbk7n.mpg"  # labels.csv: a, b
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, male, male, female],
                          cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["guard_works"]
    assert result["attempts"] == []
    first, second, other = (np.array(result[k]) for k in ("first", "second", "other"))
    assert first.shape == (EMBEDDING_DIM,)
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(first, second)
    assert float(first @ other) < 0.9  # the same voice twice: 1.0


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown speaker encoder 'ecapa'"):
        SpeakerEncoder("ecapa")
