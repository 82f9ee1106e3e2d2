"""Frame selection from per-frame scores: modes, blinks, coarse peaks and refine windows."""

import numpy as np
import pytest

from pipeline.config import FacesParams
from pipeline.faces import selection
from pipeline.faces.selection import REFINE_MARGIN, coarse_peak, refine_windows, select_frame
from pipeline.runtime import QuarantineError


def scores_of(frontality, expression, yaw, openness=None) -> dict:
    n = len(frontality)
    return {"frontality": np.array(frontality, float), "expression": np.array(expression, float),
            "yaw": np.array(yaw, float),
            "eye_openness": np.array(openness if openness is not None else [0.3] * n, float)}


def test_peak_emotion_takes_the_most_expressive_frontal_enough_frame():
    params = FacesParams(max_yaw_deg=20)
    s = scores_of(frontality=[0.99, 0.95, 0.70, 0.97],
                  expression=[0.05, 0.20, 0.90, 0.10], yaw=[2, 10, 45, -5])
    assert select_frame(s, "peak_emotion", False, params) == 1  # frame 2 is turned 45 degrees
    assert select_frame(s, "frontal", False, params) == 0
    # Neutral clips: the frontal, least expressive frame.
    assert select_frame(s, "peak_emotion", True, params) == 0


def test_combined_mode_weighs_expression_against_frontality():
    s = scores_of(frontality=[1.0, 0.9, 0.8], expression=[0.0, 0.5, 1.0], yaw=[0, 10, 15])
    assert select_frame(s, "combined", False, FacesParams(expression_weight=0.0)) == 0
    assert select_frame(s, "combined", False, FacesParams(expression_weight=1.0)) == 2
    assert select_frame(s, "combined", True, FacesParams(expression_weight=0.9)) == 0


def test_coarse_peak_is_the_vertex_of_the_parabola_through_three_coarse_frames():
    ranking = np.full(30, -np.inf)
    ranking[::5] = 0.0
    ranking[[10, 15, 20]] = [-36.0, -1.0, -16.0]  # -(x - 16)^2 at x = 10, 15, 20
    assert coarse_peak(ranking, 15, 5) == pytest.approx(16.0)
    ranking[[10, 20]] = [-16.0, -36.0]  # mirrored: -(x - 14)^2
    assert coarse_peak(ranking, 15, 5) == pytest.approx(14.0)
    ranking[[10, 20]] = -6.0  # symmetric
    assert coarse_peak(ranking, 15, 5) == pytest.approx(15.0)


@pytest.mark.parametrize(("index", "values", "why"), [
    (0, None, "no neighbour before the clip's first frame"),
    (25, None, "no neighbour after the clip's last coarse frame"),
    (15, (-np.inf, 1.0, 0.5), "a neighbour that is not a candidate (blink, turned head)"),
    (15, (np.nan, 1.0, 0.5), "a neighbour without a score"),
    (15, (1.0, 1.0, 1.0), "a flat top (not strictly concave)"),
    (15, (1.2, 1.0, 0.5), "not a local maximum"),
])
def test_coarse_peak_is_none_where_a_parabola_says_nothing(index, values, why):
    ranking = np.linspace(0.0, 1.0, 28)  # rising to the last frame, 27
    if values is not None:
        ranking[[index - 5, index, index + 5]] = values
    assert coarse_peak(ranking, index, 5) is None, why


def test_refine_windows_reach_towards_the_estimated_peak():
    n, k = 60, 5
    frontality = np.full(n, np.nan)
    frontality[::k] = 0.5
    frontality[[20, 25, 30]] = [0.80, 0.95, 0.90]  # vertex 26.25: after the candidate 25
    s = scores_of(frontality, np.zeros(n), np.zeros(n))
    params = FacesParams(landmark_every=k)
    expected = np.zeros(n, bool)
    expected[25 - REFINE_MARGIN:25 + k + 1] = True
    assert np.array_equal(refine_windows(s, "frontal", False, params), expected)
    s["frontality"][[20, 30]] = [0.90, 0.80]  # mirrored: before the candidate
    expected[:] = False
    expected[25 - k:25 + REFINE_MARGIN + 1] = True
    assert np.array_equal(refine_windows(s, "frontal", False, params), expected)
    s["frontality"][30] = np.nan  # no estimate: +-k
    expected[:] = False
    expected[25 - k:25 + k + 1] = True
    assert np.array_equal(refine_windows(s, "frontal", False, params), expected)
    # With landmark_every 1 the window stays +-1 where the peak is estimated after 25.
    dense = scores_of(1 - ((np.arange(n) - 25.3) / 10) ** 2, np.zeros(n), np.zeros(n))
    wanted = refine_windows(dense, "frontal", False, FacesParams(landmark_every=1))
    assert np.flatnonzero(wanted).tolist() == [24, 25, 26]


def test_refine_windows_cover_the_best_coarse_candidates(monkeypatch):
    n = 40
    frontality = np.full(n, np.nan)
    frontality[::3] = 0.9
    frontality[30], frontality[9], frontality[12] = 0.99, 0.98, 0.97  # 12: inside 9's window
    s = scores_of(frontality, np.zeros(n), np.zeros(n))
    params = FacesParams(landmark_every=3)
    monkeypatch.setattr(selection, "REFINE_CANDIDATES", 1)
    expected = np.zeros(n, bool)
    expected[27:34] = True  # +-landmark_every around the best: its neighbours score alike
    assert np.array_equal(refine_windows(s, "frontal", False, params), expected)
    monkeypatch.setattr(selection, "REFINE_CANDIDATES", 2)
    wanted = refine_windows(s, "frontal", False, params)
    expected[7:13] = True  # the second best, towards 12 (third, inside its window)
    assert np.array_equal(wanted, expected)
    # The final choice stays in the windows even where a coarse frame outside scores higher.
    s["frontality"][0] = 1.0
    assert select_frame(s, "frontal", False, FacesParams(), among=wanted) == 30
    assert select_frame(s, "frontal", False, FacesParams()) == 0


def test_blinks_and_missing_frames_are_never_chosen():
    s = scores_of(frontality=[0.9, 1.0, np.nan], expression=[0.1, 0.3, np.nan],
                  yaw=[0, 0, np.nan], openness=[0.30, 0.05, np.nan])
    assert select_frame(s, "frontal", False, FacesParams()) == 0  # 1 is a blink
    nothing = scores_of([np.nan], [np.nan], [np.nan], [np.nan])
    with pytest.raises(QuarantineError, match="no frame"):
        select_frame(nothing, "frontal", False, FacesParams())
